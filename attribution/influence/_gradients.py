"""The functional core of TracIn (Pruthi et al., 2020): checkpoints, per-example gradients and the sums over them.

TracIn scores a training example ``z`` on a test example ``z'`` as ``sum_c lr_c * <g_c(z), g_c(z')>``, where
``g_c`` is the gradient of the loss with respect to the parameters at checkpoint ``c``. Every method here
describes an example at one checkpoint by *factors* ``(f_1, ..., f_m)``, one row per example, whose
pairwise score is ``prod_i <f_i(z), f_i(z')>``: the flattened gradient alone for ``TracInCP``, and for
``TracInCPFast`` the last layer's gradient as the pair (loss gradient wrt the output, the layer's input),
whose outer product it is, so the dot product factorizes and the outer product is never formed.

Checkpoints are loaded into the model itself (the load function's contract, as in Captum); every loop
here puts the model's own parameters and buffers back afterwards, from a temporary file: a call holds
one set of weights in memory, as Captum's does, and leaves the caller's model as it found it.
"""

from __future__ import annotations

import difflib
import glob
import numbers
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution._internal.progress import progress_bar
from attribution.influence.base import split_batch

LoadFunc = Callable[[nn.Module, str], float]
LossFn = Callable[..., Tensor]
Features = Callable[[Any], tuple[Tensor, ...]]
"""One batch (Captum's convention) -> its factors at the loaded checkpoint, each of shape (batch, -1)."""


# --- checkpoints -------------------------------------------------------------------------------------------


def load_flexible_state_dict(model: nn.Module, path: str) -> float:
    """Load a state dict saved by ``torch.save`` into ``model``; return its ``"learning_rate"`` entry, else 1.0.

    Captum's default ``checkpoints_load_func``: a ``"module."`` prefix (a state dict saved from
    ``nn.DataParallel``) is matched to the model whether or not the model is wrapped.
    """
    state = dict(torch.load(path, map_location="cpu", weights_only=True))
    learning_rate = state.pop("learning_rate", 1.0)
    target = model.module if isinstance(model, nn.DataParallel) else model
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    target.load_state_dict(state)
    return float(learning_rate)


def natural_key(path: str) -> list[Any]:
    # "ckpt-10" after "ckpt-9": numbers compare as numbers, as Captum sorts checkpoint files.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def resolve_checkpoints(checkpoints: Any) -> list[str]:
    """The checkpoint paths, naturally sorted: a directory's files, a glob pattern's matches, or a list.

    Raises:
        TypeError: neither a string nor an iterable.
        ValueError: no checkpoint found.
    """
    if isinstance(checkpoints, (str, os.PathLike)):
        where = os.fspath(checkpoints)
        pattern = os.path.join(where, "*") if os.path.isdir(where) else where
        found = sorted((p for p in glob.glob(pattern) if os.path.isfile(p)), key=natural_key)
    elif isinstance(checkpoints, Iterable):
        items = list(checkpoints)
        all_paths = all(isinstance(item, (str, os.PathLike)) for item in items)
        # Paths are sorted as Captum does; other objects (an iterator of handles) keep their order.
        found = sorted(map(os.fspath, items), key=natural_key) if all_paths else items
    else:
        raise ArgumentTypeError(
            f"checkpoints: expected a directory, a glob pattern or a list of paths, got {describe(checkpoints)}"
        )
    if not found:
        raise ArgumentError(  # Captum's wording first: code that matches its message keeps working
            f"checkpoints: Invalid checkpoints provided for TracIn class: no checkpoint found in {checkpoints!r}; "
            f"expected a directory of saved state dicts, a glob pattern or a list of paths"
        )
    return found


@contextmanager
def loaded_checkpoints(
    model: nn.Module, checkpoints: Sequence[Any], load: LoadFunc
) -> Iterator[Callable[[], Iterator[float]]]:
    """Yield ``rates()``: a fresh pass that loads each checkpoint into ``model`` and gives its learning rate.
    The model's parameters and buffers, and the global CPU RNG, are restored on exit.

    The model's own values wait in a temporary file, not in memory: a checkpoint is copied into the model's
    tensors as Captum's loader does, so a call holds one set of weights, as Captum's does, and the caller gets
    its model back unchanged (Captum leaves the last checkpoint in it).
    """
    with tempfile.TemporaryDirectory() as folder:
        kept = os.path.join(folder, "model.pt")
        torch.save(model.state_dict(), kept)

        def each() -> Iterator[float]:
            for checkpoint in checkpoints:
                learning_rate = load(model, checkpoint)
                if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
                    raise ArgumentTypeError(
                        f"checkpoints_load_func: expected it to return the learning rate (a number), got "
                        f"{describe(learning_rate)} for checkpoint {checkpoint!r}"
                    )
                yield float(learning_rate)

        # fork_rng: iterating a DataLoader draws a seed from the global CPU RNG, even without shuffling.
        try:
            with torch.random.fork_rng(devices=[]):
                yield each
        finally:
            model.load_state_dict(torch.load(kept, map_location="cpu", weights_only=False))


# --- per-example quantities ----------------------------------------------------------------------------------


def check_reduction(loss_fn: Any, name: str, allowed: Sequence[str], hint: str = "") -> str:
    """The reduction of ``loss_fn`` (its ``reduction`` attribute; "sum" when it has none, as Captum assumes).

    Raises:
        TypeError: ``loss_fn`` is not callable.
        ValueError: a reduction outside ``allowed``.
    """
    if loss_fn is None:
        return "sum"
    if not callable(loss_fn):
        raise ArgumentTypeError(f"{name}: expected a loss module or callable, got {describe(loss_fn)}")
    reduction = getattr(loss_fn, "reduction", None)
    if reduction is None:
        return "none" if "none" in allowed and "sum" not in allowed else "sum"
    if reduction not in allowed:
        raise ArgumentError(f"{name}: reduction must be one of {list(allowed)}{hint}, got {reduction!r}")
    return str(reduction)


def per_example_gradients(
    model: nn.Module, names: Sequence[str], batch: Any, loss_fn: LossFn | None, name: str = "batch"
) -> Tensor:
    """The gradients of each example's loss wrt the parameters ``names``, flattened: shape (batch, P).

    One ``vmap(grad)`` over the batch, the model called on one example at a time: the per-example loss
    does not depend on the reduction of ``loss_fn`` ("none", "sum" or "mean" of a batch of one).
    Without labels or ``loss_fn`` the loss is the sum of the model's output, as in Captum.
    """
    inputs, labels = split_batch(batch, name)
    parameters = dict(model.named_parameters())
    active = {n: parameters[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in parameters.items() if n not in active}
    buffers = dict(model.named_buffers())
    batched = [isinstance(x, Tensor) for x in inputs]

    def example_loss(params: dict[str, Tensor], label: Any, *example: Any) -> Tensor:
        one = tuple(x.unsqueeze(0) if b else x for x, b in zip(example, batched))
        out: Tensor = functional_call(model, (params, frozen, buffers), one)
        if loss_fn is None or label is None:
            return out.sum()
        return loss_fn(out, label.unsqueeze(0)).sum()

    label_dim = 0 if isinstance(labels, Tensor) else None
    in_dims = (None, label_dim, *(0 if b else None for b in batched))
    # randomness="different": dropout in train mode samples per example instead of failing under vmap.
    grads = vmap(grad(example_loss), in_dims=in_dims, randomness="different")(active, labels, *inputs)
    return torch.cat([grads[n].flatten(start_dim=1) for n in names], dim=1)


@contextmanager
def _captured_input(layer: nn.Module) -> Iterator[list[Tensor]]:
    seen: list[Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(args[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


def last_layer_factors(
    model: nn.Module, layer: nn.Module, batch: Any, loss_fn: LossFn | None, reduction: str, name: str = "batch"
) -> tuple[Tensor, Tensor]:
    """``(dloss/doutput, the layer's input)`` per example: the last layer's weight gradient is their outer product.

    ``layer`` must produce the model's output (Captum's ``final_fc_layer``). A "mean" loss is rescaled by
    the batch size so that each row is the gradient of that example's own loss, as in Captum.
    """
    inputs, labels = split_batch(batch, name)
    with _captured_input(layer) as seen, torch.no_grad():
        out = model(*inputs)
    if not seen:
        raise ArgumentError("final_fc_layer: the layer was not called in the model's forward pass")
    layer_input = seen[-1]
    out = out.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = out if loss_fn is None or labels is None else loss_fn(out, labels)
        (output_grad,) = torch.autograd.grad(loss.sum(), out)
    if reduction == "mean":
        output_grad = output_grad * out.shape[0]
    if output_grad.dim() != 2 or layer_input.dim() != 2:
        raise ArgumentError(
            "final_fc_layer: expected a fully connected layer producing the model's output, with 2D input and "
            f"output; got input {tuple(layer_input.shape)} and output {tuple(output_grad.shape)}"
        )
    return output_grad, layer_input


# --- sums over checkpoints and batches -------------------------------------------------------------------------


def pair_scores(test: tuple[Tensor, ...], train: tuple[Tensor, ...]) -> Tensor:
    """``prod_i test_i @ train_i.T``: the (n_test, n_train) gradient dot products."""
    score = test[0] @ train[0].T
    for t, s in zip(test[1:], train[1:]):
        score = score * (t @ s.T)
    return score


def self_scores(factors: tuple[Tensor, ...]) -> Tensor:
    """``prod_i |f_i|^2`` per example: each example's gradient dot itself."""
    score = factors[0].pow(2).sum(dim=1)
    for f in factors[1:]:
        score = score * f.pow(2).sum(dim=1)
    return score


def batch_features(batches: Iterable[Any], features: Features) -> tuple[Tensor, ...]:
    """The factors of every example in ``batches``, concatenated."""
    per_batch = [features(batch) for batch in batches]
    return tuple(torch.cat(parts, dim=0) for parts in zip(*per_batch))


@dataclass(frozen=True)
class TracInQuery:
    """What a TracIn influence query reads: the model and its checkpoints, the test and training batches,
    how each becomes per-example factors, and how to report progress. ``aggregate`` sums the test
    gradients first (single-factor features only)."""

    model: nn.Module
    checkpoints: Sequence[Any]
    load: LoadFunc
    test_batches: Iterable[Any]
    train_batches: Iterable[Any]
    test_features: Features
    train_features: Features
    aggregate: bool = False
    show_progress: bool = False
    description: str = "TracIn"

    def test_factors(self) -> tuple[Tensor, ...]:
        """The test factors at the checkpoint loaded now, summed over the test set when ``aggregate``."""
        test = batch_features(self.test_batches, self.test_features)
        return tuple(t.sum(dim=0, keepdim=True) for t in test) if self.aggregate else test

    def progress(self) -> AbstractContextManager[Callable[[int], None] | None]:
        """One bar over every (checkpoint, training batch)."""
        steps = len(self.checkpoints) * _length(self.train_batches)
        return progress_bar(self.show_progress, steps, self.description)


def tracin_influence(query: TracInQuery) -> Tensor:
    """``sum_c lr_c * scores_c(test, train)``, shape (n_test, n_train) (``aggregate``: (1, n_train)).

    Checkpoints are the outer loop, so each is loaded once and the test factors are computed once per
    checkpoint.
    """
    total: Tensor | None = None
    with loaded_checkpoints(query.model, query.checkpoints, query.load) as rates, query.progress() as update:
        for learning_rate in rates():
            test = query.test_factors()
            parts: list[Tensor] = []  # the first checkpoint sizes the total; later ones add into it in place
            column = 0
            for batch in query.train_batches:
                scores = pair_scores(test, query.train_features(batch))
                if total is None:
                    parts.append(learning_rate * scores)
                else:
                    total[:, column : column + scores.shape[1]].add_(scores, alpha=learning_rate)
                column += scores.shape[1]
                if update is not None:
                    update(1)
            if total is None:
                total = torch.cat(parts, dim=1)
    assert total is not None  # resolve_checkpoints guarantees a checkpoint
    return total


def tracin_top_k(query: TracInQuery, k: int, proponents: bool) -> tuple[Tensor, Tensor]:
    """The indices and scores of the ``k`` most influential training examples per test example, as
    :func:`top_k` of :func:`tracin_influence` but without its (n_test, n_train) matrix.

    The test factors of every checkpoint are computed once; then training batches are the outer loop:
    each batch is scored at every checkpoint (one load per checkpoint and batch, as in Captum) and merged
    into a running top ``k``. Memory is one batch's scores instead of the whole matrix.
    """
    with loaded_checkpoints(query.model, query.checkpoints, query.load) as rates:
        tests = [query.test_factors() for _ in rates()]
    best: tuple[Tensor, Tensor] | None = None  # (scores, indices) so far, each (n_test, <= k)
    column = 0
    with loaded_checkpoints(query.model, query.checkpoints, query.load) as rates, query.progress() as update:
        for batch in query.train_batches:
            total: Tensor | None = None  # summed in the order tracin_influence sums: the same numbers
            for test, learning_rate in zip(tests, rates()):
                scores = pair_scores(test, query.train_features(batch))
                total = learning_rate * scores if total is None else total.add_(scores, alpha=learning_rate)
                del scores  # not held while the next checkpoint loads: that is the peak of small models
                if update is not None:
                    update(1)
            assert total is not None  # resolve_checkpoints guarantees a checkpoint
            indices = torch.arange(column, column + total.shape[1], device=total.device).expand_as(total)
            column += total.shape[1]
            if best is not None:
                total, indices = torch.cat([best[0], total], dim=1), torch.cat([best[1], indices], dim=1)
            values, order = torch.topk(total, min(k, total.shape[1]), dim=1, largest=proponents)
            best = values, indices.gather(1, order)
    if best is None:  # no training example
        return top_k(torch.empty(len(tests[0][0]), 0), k, proponents)
    return best[1], best[0]


def influence_description(name: str, k: int | None, proponents: bool) -> str:
    """The progress bar's text for ``influence``, Captum's wording."""
    if k is None:
        return f"Using {name} to compute influence for training batches"
    wanted = "proponents" if proponents else "opponents"
    return f"Using {name} to perform computation for getting {wanted}. Processing training batches"


def tracin_self_influence(
    model: nn.Module,
    checkpoints: Sequence[Any],
    load: LoadFunc,
    batches: Iterable[Any],
    features: Features,
    outer_loop_by_checkpoints: bool = False,
    show_progress: bool = False,
    description: str = "TracIn",
) -> Tensor:
    """``sum_c lr_c * |g_c(z)|^2`` for every example of ``batches``.

    ``outer_loop_by_checkpoints`` only chooses the progress bars (Captum's texts): the work is the same.
    """
    # Checkpoints are always the outer loop: each is loaded once and the running scores are one number per
    # example, so Captum's batch-outer order (a load per checkpoint and batch) would only cost time.  The
    # flag chooses Captum's bar texts: an outer bar over checkpoints with an inner one over batches per
    # checkpoint, or one bar over every batch of every checkpoint.
    prefix = f"Using {description} to compute self influence. Processing"
    per_checkpoint = _length(batches)
    by_checkpoints = show_progress and outer_loop_by_checkpoints
    outer = progress_bar(by_checkpoints, len(checkpoints), f"{prefix} checkpoint")
    overall = progress_bar(show_progress and not by_checkpoints, len(checkpoints) * per_checkpoint, f"{prefix} batch")
    total: Tensor | None = None
    with loaded_checkpoints(model, checkpoints, load) as rates, outer as update, overall as step:
        for learning_rate in rates():
            parts = []
            with progress_bar(by_checkpoints, per_checkpoint, f"{prefix} batch") as inner:
                for batch in batches:
                    parts.append(self_scores(features(batch)))
                    for tick in (inner, step):
                        if tick is not None:
                            tick(1)
            scores = torch.cat(parts)
            total = learning_rate * scores if total is None else total.add_(scores, alpha=learning_rate)
            if update is not None:
                update(1)
    assert total is not None  # resolve_checkpoints guarantees a checkpoint
    return total


def _length(batches: Iterable[Any]) -> int:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:  # an iterable DataLoader has no length; the bar then counts without a total
        return 0


def top_k(scores: Tensor, k: int, proponents: bool) -> tuple[Tensor, Tensor]:
    """Per row, the indices and scores of the ``k`` largest (``proponents``) or smallest scores."""
    k = min(k, scores.shape[1])
    values, indices = torch.topk(scores, k, dim=1, largest=proponents)
    return indices, values


def as_batches(inputs: Any, name: str = "inputs") -> DataLoader[Any] | list[Any]:
    """``inputs`` as batches: a DataLoader as it is, one batch (a tuple, list or tensor) as a list of one.

    Raises:
        ValueError: no inputs (self influence has its own method).
        TypeError: anything else.
    """
    if inputs is None:
        raise ArgumentError(
            f"{name}: required; to score the training examples on themselves, call self_influence instead"
        )
    if isinstance(inputs, DataLoader):
        return inputs
    if isinstance(inputs, (Tensor, tuple, list)):
        split_batch(inputs, name)
        return [inputs]
    raise ArgumentTypeError(
        f"{name}: expected a batch tuple (inputs..., labels) or a DataLoader of such batches, got {describe(inputs)}"
    )


def submodule(model: nn.Module, name: Any, argument: str) -> nn.Module:
    """The submodule of ``model`` called ``name``; the error lists close names.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: no such submodule.
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"{argument}: expected a module name (str), got {describe(name)}")
    modules: Mapping[str, nn.Module] = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ArgumentError(f"{argument}: the model has no module {name!r}{hint}; modules: {[n for n in modules if n]}")
    return modules[name]
