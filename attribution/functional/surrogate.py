"""Surrogate methods' core: Lime, KernelShap and LimeBase fit an interpretable model to the target over
perturbed copies.

One loop serves them all (:func:`surrogate`): perturbed copies of the batch are built chunk by chunk,
evaluated many per forward, weighted, and the interpretable model is fitted for every example at once.
Lime and KernelShap draw coalitions up front, one bool tensor ``(S, n, F)`` (sample, example, feature;
True keeps the input value, False takes the baseline); LimeBase draws what its perturbation function
gives and maps it to or from the interpretable space with the user's transforms.

Below the loop: the user's functions in their two forms (batched, or Captum's per-sample ones;
:func:`function_form` tells which, and adapters turn either into the batched callables the loop runs, on
copies ``(P, *x.shape)`` and samples ``(P, rows, F)``), then what is fitted: batched weighted linear
solvers (float64 on the inputs' device), ``fit(X (n, S, F), y (n, S), weights (n, S)) -> (coef (n, F),
intercept (n,))`` for every example at once (the classes around them are in
:mod:`attribution.methods.surrogate`), and Captum-style models, ``fit(DataLoader)`` then
``representation()``, fitted once per example (:func:`model_fit`).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import numbers
import operator
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from attribution._internal.canonical import Objective, TensorOrTuple, describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice
from attribution._internal.features import FeatureMasks
from attribution.functional.perturbation import evaluate_copies

Similarity = Callable[..., Tensor]
"""Batched: ``similarity(inputs (n, ...), perturbed (P, n, ...), coalitions (P, n, F), **kwargs) -> (P, n)``."""

Sample = Callable[[int, int], tuple[tuple[Tensor, ...], Tensor, Tensor]]
"""``sample(lo, hi) -> (copies (each (P, *x.shape)), design (P, rows, F), weights (P, rows))`` for copies
``lo .. hi - 1``: the perturbed batches, their interpretable representations and their sample weights."""

KERNEL_SHAP_INF_WEIGHT = 1e6
"""Weight of the all-present and all-absent coalitions (theoretically infinite), as in the reference."""


# --------------------------------------------------------------------------- sampling


def lime_coalitions(n_samples: int, n: int, count: int, device: torch.device) -> Tensor:
    """Coalitions ``(S, n, F)``: every feature present with probability 1/2, independently.

    Drawn as the reference draws them, Bernoulli(1/2) from torch's global CPU generator example by example
    and sample by sample (one batched draw takes the same numbers from it as its per-sample draws), then
    moved to ``device``: from the same seed, the same coalitions.
    """
    return torch.bernoulli(torch.full((n, n_samples, count), 0.5)).transpose(0, 1).to(device, torch.bool)


def kernel_shap_coalitions(n_samples: int, n: int, count: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """KernelShap's coalitions ``(S, n, F)`` and weights ``(S, n)``.

    First all features present, then none (weight :data:`KERNEL_SHAP_INF_WEIGHT`), then per sample and
    example a size ``k`` with ``p(k) ∝ (F - 1) / (k (F - k))`` and a uniformly random subset of that size
    (weight 1): together the Shapley kernel.  With one feature, ``k`` is 0 or 1 with equal probability.
    """
    fixed = torch.stack([torch.ones(count, dtype=torch.bool), torch.zeros(count, dtype=torch.bool)])
    fixed = fixed[:n_samples, None].to(device).expand(-1, n, -1)
    rest = n_samples - fixed.shape[0]
    if rest > 0 and count > 1:
        k = torch.arange(1, count, device=device, dtype=torch.float64)
        sizes = torch.multinomial((count - 1) / (k * (count - k)), rest * n, replacement=True).view(n, rest).t() + 1
    else:
        sizes = torch.randint(0, 2, (n, rest), device=device).t()
    # A random order of the features per copy (drawn example-major, like the sizes).
    ranks = torch.rand(n, rest, count, device=device).transpose(0, 1).argsort(-1).argsort(-1)
    coalitions = torch.cat([fixed, ranks < sizes[..., None]])
    weights = torch.ones(n_samples, n, device=device)
    weights[: fixed.shape[0]] = KERNEL_SHAP_INF_WEIGHT
    return coalitions, weights


def draw_coalitions(perturb: Callable[..., object] | None, examples: Examples, n_samples: int, count: int) -> Tensor:
    """Lime's coalitions bool ``(S, rows, count)`` from ``perturb``: None draws :func:`lime_coalitions`;
    a batched one is called as ``perturb(inputs, n_samples, count)``, a per-sample one (see
    :func:`function_form`) once per copy of each example; either gives 0/1 or bool values."""
    device = examples.inputs[0].device
    if perturb is None:
        return lime_coalitions(n_samples, examples.rows, count, device)
    if function_form(perturb, BATCHED) == PER_SAMPLE:
        coalitions = draw_design(perturb, PER_SAMPLE, examples, n_samples, count)
    else:
        drawn = perturb(examples.given, n_samples, count)
        if not isinstance(drawn, Tensor) or drawn.shape != (n_samples, examples.rows, count):
            raise ArgumentError(
                f"perturb_func: expected a tensor of shape ({n_samples}, {examples.rows}, {count}) "
                f"(n_samples, examples, features), got {describe(drawn)}"
            )
        coalitions = drawn
    if coalitions.dtype != torch.bool:
        if not bool(((coalitions == 0) | (coalitions == 1)).all()):
            raise ArgumentError("perturb_func: expected coalitions of 0/1 or bool values")
        coalitions = coalitions == 1
    return coalitions.to(device)


def _total(terms: Iterable[Tensor]) -> Tensor:
    """The sum of tensors (``sum`` would type it ``Tensor | 0``)."""
    return functools.reduce(operator.add, terms)


def get_exp_kernel_similarity_function(distance_mode: str = "cosine", kernel_width: float = 1.0) -> Similarity:
    """Lime's default weights: ``exp(-d^2 / (2 kernel_width^2))`` of the distance ``d`` between each
    example and its perturbed copy, both flattened over all inputs (as the reference's function of this name).

    Args:
        distance_mode: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"``.
        kernel_width: the kernel's width, > 0.

    Returns:
        A batched similarity (marked with :func:`batched`): ``(inputs (n, ...), perturbed (P, n, ...),
        coalitions, **kwargs) -> (P, n)``; inputs and perturbed are tensors or tuples of tensors, and keyword
        arguments (LimeBase passes its ``attribute``'s) are ignored.
    """
    check_choice(distance_mode, "distance_mode", ["cosine", "euclidean"])
    if isinstance(kernel_width, bool) or not isinstance(kernel_width, (int, float)) or not kernel_width > 0:
        raise ArgumentError(f"kernel_width: expected a number > 0, got {kernel_width!r}")

    def similarity(inputs: TensorOrTuple, perturbed: TensorOrTuple, coalitions: Tensor, **kwargs: object) -> Tensor:
        pairs = [(x.flatten(1), p.flatten(2)) for x, p in zip(_as_tuple(inputs), _as_tuple(perturbed))]
        dtype = torch.promote_types(pairs[0][0].dtype, torch.float32)
        pairs = [(x.to(dtype), p.to(dtype)) for x, p in pairs]
        if distance_mode == "cosine":
            dot = _total((p * x).sum(-1) for x, p in pairs)
            norms = (
                _total(x.square().sum(-1) for x, _ in pairs).sqrt()
                * _total(p.square().sum(-1) for _, p in pairs).sqrt()
            )
            distance = 1 - dot / norms.clamp_min(1e-8)
        else:
            distance = _total((p - x).square().sum(-1) for x, p in pairs).sqrt()
        return torch.exp(-distance.square() / (2 * kernel_width**2))

    return batched(similarity)


def _as_tuple(value: TensorOrTuple) -> tuple[Tensor, ...]:
    return (value,) if isinstance(value, Tensor) else tuple(value)


# --------------------------------------------------------------------------- the surrogate


def surrogate(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    total: int,
    sample: Sample,
    fit: Fit,
    *,
    first: Tensor | None = None,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Fit the interpretable model to the target over ``total`` perturbed copies of the batch.

    ``sample`` gives designs and weights per example (``n``, or 1 when ``objective`` is aggregate); the
    objective has ``rows`` values per copy, ``K`` per example (several outputs, see
    :meth:`~attribution.functional.Objective.resolve`), and each gets a surrogate of its own, fitted on
    its example's design.

    Args:
        objective: resolved (see :meth:`~attribution.functional.Objective.resolve`).
        sample: builds copies with their designs and weights, chunk by chunk (see :data:`Sample`).
        fit: the interpretable model, see :data:`Fit`.
        first: the target values ``(rows,)`` of copy 0 when they are already known.

    Returns:
        What ``fit`` returns for the designs ``(rows, total, F)``, values and weights.
    """
    inputs = tuple(x.detach() for x in inputs)
    designs, weights = [], []

    def build(lo: int, hi: int) -> tuple[Tensor, ...]:
        copies, design, weight = sample(lo, hi)
        designs.append(design)
        weights.append(weight)
        return tuple(c.flatten(0, 1) for c in copies)

    start = 0 if first is None else 1
    with torch.inference_mode():
        if first is not None:
            build(0, 1)  # copy 0's design and weight; its value is known
        values = evaluate_copies(
            objective,
            inputs,
            total - start,
            lambda lo, hi: build(lo + start, hi + start),
            perturbations_per_eval=perturbations_per_eval,
            progress=progress,
        )
        if first is not None:
            values = torch.cat([first[:, None], values], dim=1)
    # Outside inference mode (clones are normal tensors), so that a custom model may use autograd.
    values, design, weight = values.clone(), torch.cat(designs).clone(), torch.cat(weights).clone()
    dtype = values.dtype if values.is_floating_point() else torch.float32
    design, weight = design.transpose(0, 1).to(dtype), weight.t().to(device=design.device, dtype=dtype)
    outputs = values.shape[0] // design.shape[0]  # K values of one example share its copies (example-major)
    if outputs > 1:
        design, weight = design.repeat_interleave(outputs, dim=0), weight.repeat_interleave(outputs, dim=0)
    return fit(design, values.to(dtype), weight)


def coalition_sample(
    features: FeatureMasks,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    coalitions: Tensor,
    *,
    weigh: Weigh | None = None,
    weights: Tensor | None = None,
) -> Sample:
    """Copies with the features of each coalition ``(S, rows, F)`` kept and the others at the baseline,
    weighted by ``weigh`` or by fixed ``weights (S, rows)``."""

    def sample(lo: int, hi: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        chunk = coalitions[lo:hi]
        flat = features.perturbed(chunk, inputs, baselines)
        copies = tuple(c.reshape(hi - lo, *x.shape) for c, x in zip(flat, inputs))
        if weigh is not None:
            return copies, chunk, weigh(copies, chunk)
        if weights is None:
            raise ArgumentError("coalition_sample: pass weigh or weights")
        return copies, chunk, weights[lo:hi]

    return sample


def _resolved(objective: Objective, inputs: tuple[Tensor, ...]) -> tuple[Objective, Tensor]:
    """One forward of the unperturbed batch settles the output mode (and how many surrogates there are)."""
    with torch.inference_mode():
        return objective.resolve(tuple(x.detach() for x in inputs))


def spread_coefficients(coefs: Tensor, features: FeatureMasks, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Coefficients ``(*rows, F)`` (see :func:`lime`) spread onto the inputs, ``(*rows, *x.shape[1:])`` each:
    every element gets its feature's (floating even for integer inputs)."""
    spread = features.spread(coefs.reshape(-1, coefs.shape[-1]), inputs)
    return tuple(a.reshape(*coefs.shape[:-1], *a.shape[1:]) for a in spread)


def _coefficients(result: tuple[Tensor, Tensor], rows: int, count: int) -> Tensor:
    """The ``(rows, F)`` coefficients of a linear interpretable model's fit."""
    coef = result[0] if isinstance(result, tuple) and result else result
    if isinstance(coef, Tensor) and coef.dim() > 0 and coef.numel() == rows * count:
        return coef.reshape(rows, count)
    raise ArgumentError(
        f"interpretable_model: the fit must give one coefficient per feature, ({rows}, {count}) "
        f"(examples, features), got {describe(coef)}"
    )


# --------------------------------------------------------------------------- the methods


def lime(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    n_samples: int = 50,
    fit: Fit | None = None,
    prepare: Callable[[Objective], tuple[Tensor, Weigh]] | None = None,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Lime's coefficients ``(n, F)``: a linear model (default: lasso, ``alpha=0.01``) fitted to the target
    over ``n_samples`` random coalitions (default: Bernoulli(1/2)), weighted by similarity to the input
    (default: exponential kernel of the cosine distance, width 1).

    A forward that returns one value for the whole batch gets ``(1, F)`` (the batch explained as one
    example, as in the reference).  With several values per example (``target=None``) or per batch, every
    value gets a surrogate of its own on its example's coalitions, laid out like the forward's output:
    ``(n, K, F)`` for ``(n, K)`` outputs, ``(K, F)`` for ``(K,)`` per batch (see
    :meth:`~attribution.functional.Objective.unflatten`).

    Args:
        prepare: given the resolved objective, the coalitions bool ``(S, rows, F)`` and how to weigh the
            copies; ``rows`` is ``n``, or 1 for a forward that returns values for the whole batch.
    """
    objective, _ = _resolved(objective, inputs)
    features.check_shared(objective.aggregate)
    if prepare is None:
        kernel = get_exp_kernel_similarity_function()
        coalitions = lime_coalitions(n_samples, objective.target.n, features.count, inputs[0].device)
        weigh = similarity_weights(kernel, BATCHED, Examples(inputs, False, objective.aggregate))
    else:
        with torch.no_grad():
            coalitions, weigh = prepare(objective)
    if coalitions.shape[0] == 0:
        raise ArgumentError("perturb_func: gave no samples")
    sample = coalition_sample(features, inputs, baselines, coalitions, weigh=weigh)
    result = surrogate(
        objective,
        inputs,
        coalitions.shape[0],
        sample,
        fit or (lambda X, y, w: lasso(X, y, w, 0.01)),
        perturbations_per_eval=perturbations_per_eval,
        progress=progress,
    )
    return objective.unflatten(_coefficients(result, objective.rows, features.count))


def kernel_shap(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    n_samples: int = 25,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """KernelShap's coefficients ``(n, F)``: weighted least squares over coalitions drawn from the Shapley
    kernel (all features, none, then random subsets with sizes ``k`` drawn with probability proportional
    to ``(F - 1) / (k (F - k))``); they estimate the features' Shapley values.  A forward
    that returns values for the whole batch, or several per example, gets them laid out as in :func:`lime`.
    """
    # The first coalition keeps every feature: the unperturbed batch, which also settles the output mode.
    objective, full = _resolved(objective, inputs)
    features.check_shared(objective.aggregate)
    if progress is not None:
        progress(1)
    coalitions, weights = kernel_shap_coalitions(n_samples, objective.target.n, features.count, inputs[0].device)
    sample = coalition_sample(features, inputs, baselines, coalitions, weights=weights)
    result = surrogate(
        objective,
        inputs,
        n_samples,
        sample,
        least_squares,
        first=full,
        perturbations_per_eval=perturbations_per_eval,
        progress=progress,
    )
    return objective.unflatten(_coefficients(result, objective.rows, features.count))


def lime_base(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    prepare: Callable[[Objective], tuple[int, Sample]],
    fit: Fit,
    *,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Objective, tuple[Tensor, Tensor]]:
    """LimeBase's general surrogate: the resolved objective and what ``fit`` returns.

    Args:
        prepare: given the resolved objective, the number of copies and how to build them (see
            :func:`interpretable_sample` and :func:`input_space_sample`); called under ``no_grad``.
    """
    objective, _ = _resolved(objective, inputs)
    with torch.no_grad():
        total, sample = prepare(objective)
    if total == 0:
        raise ArgumentError("perturb_func: gave no samples")
    return objective, surrogate(
        objective, inputs, total, sample, fit, perturbations_per_eval=perturbations_per_eval, progress=progress
    )


def interpretable_sample(design: Tensor, to_inputs: Callable[[Tensor], tuple[Tensor, ...]], weigh: Weigh) -> Sample:
    """Copies from interpretable samples ``design (S, rows, F)`` drawn up front, mapped to inputs chunk by chunk."""

    def sample(lo: int, hi: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        chunk = design[lo:hi]
        copies = to_inputs(chunk)
        return copies, chunk, weigh(copies, chunk)

    return sample


def input_space_sample(
    copies: tuple[Tensor, ...], to_design: Callable[[tuple[Tensor, ...]], Tensor], weigh: Weigh
) -> Sample:
    """Copies ``(S, *x.shape)`` drawn up front, mapped to the interpretable space chunk by chunk."""

    def sample(lo: int, hi: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        chunk = tuple(c[lo:hi] for c in copies)
        design = to_design(chunk)
        return chunk, design, weigh(chunk, design)

    return sample


# ----------------------------------------------------------------- the user's functions: batched or per-sample

Weigh = Callable[[tuple[Tensor, ...], Tensor], Tensor]
"""``weigh(copies (each (P, *x.shape)), design (P, rows, F)) -> weights (P, rows)``."""

BATCHED = "batched"
PER_SAMPLE = "per_sample"
_FORM = "__surrogate_form__"


def _marked(func: Callable[..., Any], form: str) -> Callable[..., Any]:
    if not callable(func):
        raise ArgumentTypeError(f"func: expected a callable to mark as {form}, got {describe(func)}")

    @functools.wraps(func)
    def marked(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    setattr(marked, _FORM, form)  # on a wrapper: the caller's function stays as it was
    return marked


def batched(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` marked as taking the batched form: every copy of every example in one call."""
    return _marked(func, BATCHED)


def per_sample(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` marked as taking Captum's per-sample form: one copy of one example per call."""
    return _marked(func, PER_SAMPLE)


def function_form(func: Callable[..., Any], default: str) -> str:
    """Which form ``func`` takes: the one it was marked with (:func:`batched`, :func:`per_sample`); else
    per-sample for a generator function or one that accepts ``**kwargs`` (Captum passes keyword arguments
    to such functions, so a Captum-style one accepts them); else ``default``."""
    marked = getattr(func, _FORM, None)
    if isinstance(marked, str):
        return marked
    if inspect.isgeneratorfunction(inspect.unwrap(func)):
        return PER_SAMPLE
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return default
    return PER_SAMPLE if any(p.kind is p.VAR_KEYWORD for p in parameters) else default


@dataclass(frozen=True)
class Examples:
    """The examples of one ``attribute`` call as the user's functions see them.

    ``rows`` examples get a surrogate each: every example of the batch, or the whole batch as one for a
    forward that returns one value per batch (``aggregate``).  Batched functions see the inputs as given
    and ``batched_kwargs``; per-sample ones see example ``r`` (``x[r:r+1]``, the whole batch when aggregate)
    and ``sample_kwargs`` with tensors of ``n`` rows cut to row ``r``, as Captum's Lime cuts its arguments.
    """

    inputs: tuple[Tensor, ...]
    as_tensor: bool
    aggregate: bool
    batched_kwargs: dict[str, Any] = field(default_factory=dict)
    sample_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return 1 if self.aggregate else self.inputs[0].shape[0]

    @property
    def given(self) -> TensorOrTuple:  # the inputs as the user gave them
        return self.restore(self.inputs)

    def restore(self, values: Sequence[Tensor]) -> TensorOrTuple:
        return values[0] if self.as_tensor else tuple(values)

    def view(self, batch: tuple[Tensor, ...], dim: int) -> TensorOrTuple:
        """As batched functions see it: a batch explained as one example gets a dim of 1 at ``dim``."""
        return self.restore([b.unsqueeze(dim) if self.aggregate else b for b in batch])

    def example(self, r: int, batch: tuple[Tensor, ...] | None = None) -> TensorOrTuple:
        """Example ``r`` of ``batch`` (default: of the inputs)."""
        return self.restore([b if self.aggregate else b[r : r + 1] for b in batch or self.inputs])

    def kwargs(self, r: int) -> dict[str, Any]:
        """``sample_kwargs`` for example ``r``."""
        n = self.inputs[0].shape[0]

        def cut(value: Any) -> Any:
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
                return value[r : r + 1]
            return type(value)(cut(v) for v in value) if isinstance(value, (tuple, list)) else value

        return self.sample_kwargs if self.rows == 1 else {key: cut(v) for key, v in self.sample_kwargs.items()}

    def each(self, count: int, call: Callable[[int, int], Any]) -> list[list[Any]]:
        """``call(p, r)`` for copy ``p`` of every example ``r``, as ``[r][p]``."""
        return [[call(p, r) for p in range(count)] for r in range(self.rows)]

    def copy(self, value: Any, r: int, name: str) -> tuple[Tensor, ...]:
        """A per-sample function's copy of example ``r``, checked against the example's shapes."""
        parts = (value,) if isinstance(value, Tensor) else value
        wanted = [tuple(x.shape) if self.aggregate else (1, *x.shape[1:]) for x in self.inputs]
        if not isinstance(parts, (tuple, list)) or [tuple(getattr(p, "shape", ())) for p in parts] != wanted:
            raise ArgumentError(f"{name}: expected a copy of the example, shaped {wanted}, got {describe(value)}")
        return tuple(p.to(x.device) for p, x in zip(parts, self.inputs))

    def stacked(self, value: Any, count: int, name: str) -> tuple[Tensor, ...]:
        """A batched function's ``count`` copies of the batch as ``(count, *x.shape)`` tensors."""
        parts = (value,) if isinstance(value, Tensor) else value
        if (
            not isinstance(parts, (tuple, list))
            or len(parts) != len(self.inputs)
            or any(not isinstance(p, Tensor) or p.numel() != count * x.numel() for p, x in zip(parts, self.inputs))
        ):
            wanted = [(count, *x.shape) for x in self.inputs]
            raise ArgumentError(f"{name}: expected {count} copies of the inputs, {wanted}, got {describe(value)}")
        return tuple(p.reshape(count, *x.shape).to(x.device) for p, x in zip(parts, self.inputs))

    def assemble(self, per_row: list[list[tuple[Tensor, ...]]]) -> tuple[Tensor, ...]:
        """Copies of single examples (``[r][p]``) as copies of the batch, ``(P, *x.shape)``."""
        count = len(per_row[0])
        return tuple(
            torch.stack([torch.cat([row[p][i] for row in per_row]) for p in range(count)])
            if count
            else x.new_empty(0, *x.shape)
            for i, x in enumerate(self.inputs)
        )

    def design(self, per_row: list[list[Any]], count: int | None, name: str) -> Tensor:
        """Per-sample interpretable samples (``[r][p]``, each ``(1, F)``) as ``(P, rows, F)``; ``count`` is
        ``F`` when known."""
        for value in itertools.chain.from_iterable(per_row):
            count = _checked_design(value, (count,) if count is not None else None, name).numel()
        rows = [torch.stack([v.reshape(-1) for v in row]) if row else torch.zeros(0, count or 0) for row in per_row]
        return torch.stack(rows, dim=1).to(self.inputs[0].device)


def _checked_design(value: Any, shape: tuple[int, ...] | None, name: str) -> Tensor:
    """Interpretable samples: batched ``(P, rows, F)`` with ``shape`` its leading sizes; per-sample
    (``shape`` of one entry or None) one sample of ``F`` values."""
    if isinstance(value, Tensor):
        if shape is None or (len(shape) == 1 and value.numel() == shape[0]):
            return value
        if len(shape) > 1 and value.dim() == 3 and tuple(value.shape[: len(shape)]) == shape:
            return value
    if shape is None or len(shape) == 1:
        wanted = f"(1, {'num_interp_features' if shape is None else shape[0]})"
    else:
        wanted = f"({', '.join(map(str, shape))}, ...)"
    raise ArgumentError(f"{name}: expected interpretable samples of shape {wanted}, got {describe(value)}")


def _draws(func: Callable[..., Any], examples: Examples, n_samples: int) -> list[list[Any]]:
    """``n_samples`` per-sample draws for every example (``[r][p]``); a generator is drawn from (as in
    Captum), and when one ends early every example keeps as many draws as the shortest."""
    draws = []
    for r in range(examples.rows):
        example, kwargs = examples.example(r), examples.kwargs(r)
        first = func(example, **kwargs)
        if isinstance(first, Iterator):
            draws.append(list(itertools.islice(first, n_samples)))
        else:
            draws.append([first] + [func(example, **kwargs) for _ in range(n_samples - 1)])
    shortest = min(len(d) for d in draws)
    if shortest < n_samples:
        warnings.warn(f"perturb_func: the generator ended after {shortest} of n_samples={n_samples}", stacklevel=3)
    return [d[:shortest] for d in draws]


def draw_design(
    func: Callable[..., Any], form: str, examples: Examples, n_samples: int, count: int | None = None
) -> Tensor:
    """Interpretable samples ``(S, rows, F)`` from a perturbation function in the interpretable space:
    batched ``func(inputs, n_samples, **kwargs) -> (n_samples, rows, F)``, or per-sample ``func(example,
    **kwargs) -> (1, F)`` (or a generator of those).  ``count`` is ``F`` when known."""
    if form == BATCHED:
        value = func(examples.given, n_samples, **examples.batched_kwargs)
        shape = (n_samples, examples.rows) + (() if count is None else (count,))
        return _checked_design(value, shape, "perturb_func").to(examples.inputs[0].device)
    return examples.design(_draws(func, examples, n_samples), count, "perturb_func")


def draw_copies(func: Callable[..., Any], form: str, examples: Examples, n_samples: int) -> tuple[Tensor, ...]:
    """Copies of the batch, each ``(S, *x.shape)``, from a perturbation function in the input space: batched
    ``func(inputs, n_samples, **kwargs)``, or per-sample ``func(example, **kwargs)`` (or a generator)."""
    if form == BATCHED:
        return examples.stacked(func(examples.given, n_samples, **examples.batched_kwargs), n_samples, "perturb_func")
    draws = _draws(func, examples, n_samples)
    return examples.assemble([[examples.copy(d, r, "perturb_func") for d in row] for r, row in enumerate(draws)])


def from_interpretable(
    func: Callable[..., Any], form: str, examples: Examples
) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """``design (P, rows, F) -> copies`` by ``from_interp_rep_transform``: batched ``func(design, inputs,
    **kwargs)``, or per-sample ``func(sample (1, F), example, **kwargs)`` giving one copy of the example."""
    name = "from_interp_rep_transform"

    def transform(design: Tensor) -> tuple[Tensor, ...]:
        if form == BATCHED:
            return examples.stacked(func(design, examples.given, **examples.batched_kwargs), design.shape[0], name)
        return examples.assemble(
            examples.each(
                design.shape[0],
                lambda p, r: examples.copy(
                    func(design[p, r][None], examples.example(r), **examples.kwargs(r)), r, name
                ),
            )
        )

    return transform


def to_interpretable(func: Callable[..., Any], form: str, examples: Examples) -> Callable[[tuple[Tensor, ...]], Tensor]:
    """``copies -> design (P, rows, F)`` by ``to_interp_rep_transform``: batched ``func(copies, inputs,
    **kwargs)``, or per-sample ``func(copy of example r, example r, **kwargs) -> (1, F)``."""
    name = "to_interp_rep_transform"
    width: list[int] = []  # F, once the first chunk has told it

    def transform(copies: tuple[Tensor, ...]) -> Tensor:
        count = copies[0].shape[0]
        if form == BATCHED:
            value = func(examples.restore(copies), examples.given, **examples.batched_kwargs)
            design = _checked_design(value, (count, examples.rows, *width), name).to(examples.inputs[0].device)
        else:
            per_row = examples.each(
                count,
                lambda p, r: func(
                    examples.example(r, tuple(c[p] for c in copies)), examples.example(r), **examples.kwargs(r)
                ),
            )
            design = examples.design(per_row, width[0] if width else None, name)
        width[:] = [design.shape[-1]]
        return design

    return transform


def similarity_weights(func: Callable[..., Any], form: str, examples: Examples) -> Weigh:
    """Sample weights ``(P, rows)`` by ``similarity_func``: batched ``func(inputs, perturbed (P, ...),
    design (P, rows, F), **kwargs) -> (P, rows)``, or per-sample ``func(example, copy of the example,
    sample (1, F), **kwargs) -> a number``."""
    name = "similarity_func"

    def weigh(copies: tuple[Tensor, ...], design: Tensor) -> Tensor:
        count = design.shape[0]
        if form == BATCHED:
            weights = func(
                examples.view(examples.inputs, 0), examples.view(copies, 1), design, **examples.batched_kwargs
            )
            if not isinstance(weights, Tensor) or weights.shape != (count, examples.rows):
                raise ArgumentError(
                    f"{name}: expected weights of shape ({count}, {examples.rows}) (copies, examples), "
                    f"got {describe(weights)}"
                )
            return weights
        per_row = examples.each(
            count,
            lambda p, r: func(
                examples.example(r),
                examples.example(r, tuple(c[p] for c in copies)),
                design[p, r][None],
                **examples.kwargs(r),
            ),
        )
        for value in itertools.chain.from_iterable(per_row):
            if not isinstance(value, (numbers.Real, Tensor)) or (isinstance(value, Tensor) and value.numel() != 1):
                raise ArgumentError(f"{name}: expected a number (one weight per sample), got {describe(value)}")
        return torch.tensor([[float(v) for v in row] for row in per_row], device=examples.inputs[0].device).t()

    return weigh


Fit = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``fit(X (n, S, F), y (n, S), weights (n, S)) -> (coef (n, F), intercept (n,))``."""

# --------------------------------------------------------------------------- batched weighted linear solvers


def _fit_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _centered(X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Weighted-centered data scaled by sqrt(weight): ``(A, b, x_mean, y_mean, total_weight)``."""
    dtype = _fit_dtype(X.device)
    X, y, weights = X.to(dtype), y.to(dtype), weights.to(dtype)
    total = weights.sum(1)
    x_mean = (weights[..., None] * X).sum(1) / total[:, None]
    y_mean = (weights * y).sum(1) / total
    root = weights.sqrt()
    return (X - x_mean[:, None]) * root[..., None], (y - y_mean[:, None]) * root, x_mean, y_mean, total


def _result(coef: Tensor, x_mean: Tensor, y_mean: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    dtype = y.dtype if y.is_floating_point() else torch.float32
    return coef.to(dtype), (y_mean - (x_mean * coef).sum(-1)).to(dtype)


def least_squares(X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted least squares with an intercept, per example; the minimum-norm solution when rank-deficient.

    Args:
        X: ``(n, S, F)`` designs; y: ``(n, S)`` targets; weights: ``(n, S)`` sample weights > 0.

    Returns:
        ``(coef (n, F), intercept (n,))``.
    """
    A, b, x_mean, y_mean, _ = _centered(X, y, weights)
    coef = (torch.linalg.pinv(A) @ b[..., None])[..., 0]
    return _result(coef, x_mean, y_mean, y)


def ridge(X: Tensor, y: Tensor, weights: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Weighted ridge regression with an intercept: ``sum_i w_i (y_i - X_i beta - c)^2 + alpha |beta|^2``."""
    A, b, x_mean, y_mean, _ = _centered(X, y, weights)
    samples, count = A.shape[-2:]
    if count <= samples:
        eye = torch.eye(count, dtype=A.dtype, device=A.device)
        coef = torch.linalg.solve(A.mT @ A + alpha * eye, A.mT @ b[..., None])[..., 0]
    else:  # the dual form needs only an S x S system
        eye = torch.eye(samples, dtype=A.dtype, device=A.device)
        coef = (A.mT @ torch.linalg.solve(A @ A.mT + alpha * eye, b[..., None]))[..., 0]
    return _result(coef, x_mean, y_mean, y)


def lasso(
    X: Tensor, y: Tensor, weights: Tensor, alpha: float, *, tol: float = 1e-7, max_iter: int = 10_000
) -> tuple[Tensor, Tensor]:
    """Weighted lasso with an intercept (scikit-learn's objective with ``sample_weight``):
    ``1 / (2 sum(w)) * sum_i w_i (y_i - X_i beta - c)^2 + alpha |beta|_1``.

    Solved by FISTA with adaptive restart on the weighted-centered data, all examples at once.  Every
    10 iterations the duality gap is checked (one device sync); iteration stops when it is below
    ``tol * |y_centered|^2`` for every example (scikit-learn's criterion, there with ``tol=1e-4``).
    """
    A, b, x_mean, y_mean, total = _centered(X, y, weights)
    samples, count = A.shape[-2:]
    lam = (alpha * total)[:, None]  # the same problem scaled by sum(w): 0.5 |b - A beta|^2 + lam |beta|_1
    corr = (A.mT @ b[..., None])[..., 0]
    step = 1 / torch.linalg.matrix_norm(A, ord=2).square().clamp_min(torch.finfo(A.dtype).tiny)[:, None]
    gram = A.mT @ A if count <= samples else None  # no F x F Gram matrix for many features

    def at_residual(beta: Tensor) -> Tensor:
        if gram is not None:
            return corr - (gram @ beta[..., None])[..., 0]
        return (A.mT @ (b - (A @ beta[..., None])[..., 0])[..., None])[..., 0]

    bb = b.square().sum(-1)

    def gap(beta: Tensor) -> Tensor:
        a_r = at_residual(beta)  # A^T r, with r = b - A beta
        r_b = bb - (beta * corr).sum(-1)
        r_r = r_b - (beta * a_r).sum(-1)
        s = torch.clamp(lam[:, 0] / a_r.abs().amax(-1).clamp_min(torch.finfo(A.dtype).tiny), max=1.0)
        return 0.5 * r_r + lam[:, 0] * beta.abs().sum(-1) - (s * r_b - 0.5 * s.square() * r_r)

    beta = torch.zeros_like(corr)
    z, t = beta, torch.ones_like(lam)
    for iteration in range(1, max_iter + 1):
        v = z + step * at_residual(z)
        new = v.sign() * (v.abs() - lam * step).clamp_min(0)
        restart = ((z - new) * (new - beta)).sum(-1, keepdim=True) > 0  # momentum points uphill
        t = torch.where(restart, 1.0, t)
        t_next = (1 + torch.sqrt(1 + 4 * t.square())) / 2
        z = new + torch.where(restart, 0.0, (t - 1) / t_next) * (new - beta)
        beta, t = new, t_next
        if iteration % 10 == 0 and bool((gap(beta) <= tol * bb).all()):
            break
    else:
        warnings.warn(
            f"lasso: no convergence to tol={tol} in max_iter={max_iter} iterations; "
            "raise max_iter or alpha, or use more samples",
            stacklevel=2,
        )
    return _result(beta, x_mean, y_mean, y)


# --------------------------------------------------------------------------- Captum-style models


@dataclass(frozen=True)
class CaptumModelFit:
    """A Captum-style ``interpretable_model`` as a batched fit: one ``fit(DataLoader)`` per example (the
    model holds one fitted state at a time), each followed by ``representation()``.

    Returns ``(representations (n, *representation.shape), intercepts (n,))``; as in Captum the data are
    float32, in one batch of ``(X, y, weights)``.
    """

    model: Any

    def __call__(self, X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        representations, intercepts = [], []
        for r in range(X.shape[0]):
            data = TensorDataset(*(t[r].float().contiguous() for t in (X, y, weights)))
            # Iterating a DataLoader draws a seed from its generator: a private one leaves the global RNG alone.
            self.model.fit(DataLoader(data, batch_size=X.shape[1], generator=torch.Generator()))
            representation = self.model.representation()
            if not isinstance(representation, Tensor):
                raise ArgumentTypeError(
                    f"interpretable_model: representation() must return a tensor, got {describe(representation)}"
                )
            bias = self.model.bias() if callable(getattr(self.model, "bias", None)) else None
            representations.append(representation.detach().to(X.device))
            intercepts.append(bias.detach().reshape(-1)[0].cpu() if isinstance(bias, Tensor) else torch.zeros(()))
        return torch.stack(representations), torch.stack(intercepts).to(X.device)


def model_fit(model: Any) -> Fit:
    """The batched fit of ``interpretable_model``: a Captum-style model (it has ``representation()``) is
    wrapped in :class:`CaptumModelFit`; any other must have a batched ``fit(X, y, weights)``.

    Raises:
        ArgumentTypeError: a model of neither kind.
    """
    if callable(getattr(model, "representation", None)) and callable(getattr(model, "fit", None)):
        return CaptumModelFit(model)
    fit: object = getattr(model, "fit", None)
    expected = (
        f"interpretable_model: expected an object with fit(X (n, S, F), y (n, S), weights (n, S)) "
        f"-> (coef (n, F), intercept (n,)) (batched), such as Lasso(), Ridge() or LinearRegression() from "
        f"attribution.methods.surrogate, or a Captum-style model with fit(DataLoader) and representation() "
        f"(such as Captum's SkLearnLasso), got {describe(model)}"
    )
    if not callable(fit):
        raise ArgumentTypeError(expected)
    try:
        inspect.signature(fit).bind(None, None, None)
    except (TypeError, ValueError):
        raise ArgumentTypeError(expected) from None
    return fit


__all__ = [
    "BATCHED",
    "PER_SAMPLE",
    "CaptumModelFit",
    "Examples",
    "Sample",
    "Weigh",
    "batched",
    "draw_coalitions",
    "draw_copies",
    "draw_design",
    "from_interpretable",
    "function_form",
    "get_exp_kernel_similarity_function",
    "kernel_shap",
    "lasso",
    "least_squares",
    "lime",
    "lime_base",
    "model_fit",
    "per_sample",
    "ridge",
    "similarity_weights",
    "spread_coefficients",
    "to_interpretable",
]
