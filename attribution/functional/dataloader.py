"""Feature ablation of a metric computed over a whole data loader.

The metric is whatever the caller's ``reduce`` accumulates from the model's
outputs over every batch (by default: the outputs concatenated), optionally
turned into a tensor by ``to_metric``.  Each feature (an id of a mask shared
by every batch) is set to its baseline in every example of the loader, and
its attribution is the metric's drop.

Work per traversal of the loader: every batch is perturbed for several
features at once, and the perturbed copies are stacked into one forward
(repeat-major, as everywhere in the core) whenever the forward returns one
row per example; a forward that pools over its batch gets one forward per
copy instead.  The unperturbed metric is computed in the first traversal, so
``F`` features with ``P`` perturbations per pass take ``ceil(F / P)``
traversals.  Each traversal sees the same random state, so a shuffling
loader yields the same order every time, and the caller's random state is
restored at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from attribution._internal.canonical import describe, repeat_rows
from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution._internal.chunking import ThreadGovernor
from attribution._internal.features import FeatureMasks
from attribution.functional.perturbation import auto_perturbations_per_eval

NEED_ATTR, NEED_FORWARD, NO_FORWARD = 0, 1, 2
"""Roles of a batch's elements: attributed and passed to the forward; passed only; neither (a label)."""

Reduce = Callable[[Any, Any, tuple[Any, ...]], Any]
"""``reduce(accumulated, output, batch_elements) -> accumulated``; ``accumulated`` starts as None."""

_END = object()


def batch_elements(batch: Any, name: str = "dataloader") -> tuple[tuple[Any, ...], bool]:
    """A batch as ``(elements, given_as_tensor)``: a tensor is one element, a tuple or list its items.

    Raises:
        ArgumentTypeError: any other batch (a dict, say): roles are given by position.
    """
    if isinstance(batch, Tensor):
        return (batch,), True
    if isinstance(batch, (tuple, list)) and len(batch) > 0:
        return tuple(batch), False
    raise ArgumentTypeError(
        f"{name}: expected batches that are a tensor or a non-empty tuple or list (roles are given by "
        f"position), got {describe(batch)}"
    )


def attributed(elements: Sequence[Any], roles: Sequence[int]) -> tuple[Tensor, ...]:
    """The elements of a batch whose role is :data:`NEED_ATTR`."""
    return tuple(e for e, r in zip(elements, roles) if r == NEED_ATTR)


def check_batch(
    elements: tuple[Any, ...], roles: Sequence[int], shapes: Sequence[tuple[int, ...]] | None, index: int
) -> int:
    """Raise unless a batch fits the roles and the per-example ``shapes`` of the first batch (None: any
    shapes); returns its size."""
    if len(elements) != len(roles):
        raise ArgumentError(
            f"dataloader: batch {index} has {len(elements)} elements, input_roles has {len(roles)} roles; "
            f"every batch needs one element per role"
        )
    position = [i for i, r in enumerate(roles) if r == NEED_ATTR]
    for i, x in zip(position, attributed(elements, roles)):
        if not isinstance(x, Tensor) or x.dim() == 0:
            raise ArgumentTypeError(
                f"dataloader: element {i} of batch {index} is attributed (role {NEED_ATTR}) and must be a tensor "
                f"with the batch first, got {describe(x)}"
            )
    attr = attributed(elements, roles)
    n = attr[0].shape[0]
    for i, x, shape in zip(position, attr, shapes or [x.shape[1:] for x in attr]):
        if x.shape[0] != n or tuple(x.shape[1:]) != tuple(shape):
            raise ArgumentError(
                f"dataloader: element {i} of batch {index} has shape {tuple(x.shape)}; expected ({n}, "
                f"{', '.join(map(str, shape))}): attributed elements share the batch size, and the per-example "
                f"shape of the first batch (feature_mask and baselines are shared by every batch)"
            )
    return n


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a DataLoader draws from when it starts a traversal (its own, its sampler's)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    owners = (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None))
    found: list[torch.Generator] = []
    for owner in owners:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


class DataPasses:
    """Traversals of a loader that each start from the random state the caller had.

    Starting a traversal draws from torch's global generator (a DataLoader's
    base seed, a shuffling sampler's seed) or from the loader's own
    generators.  Each traversal starts from the saved states, so every
    traversal yields the same batches in the same order, and the states are
    restored on exit: the caller's random streams are left as they were.
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self._generators = _loader_generators(loader)
        self._states: tuple[Tensor, list[Tensor]] | None = None
        self._pending: tuple[Any, Iterator[Any]] | None = None

    def __enter__(self) -> DataPasses:
        self._states = (torch.get_rng_state(), [g.get_state() for g in self._generators])
        return self

    def __exit__(self, *exc: object) -> None:
        self._pending = None
        self._restore()

    def _restore(self) -> None:
        if self._states is None:
            raise RuntimeError("DataPasses: enter it (with DataPasses(loader) as passes: ...) before a traversal")
        cpu, own = self._states
        torch.set_rng_state(cpu)
        for generator, state in zip(self._generators, own):
            generator.set_state(state)

    def first_batch(self) -> Any:
        """Begin the first traversal and return its first batch (the traversal then continues from it).

        Raises:
            ArgumentError: the loader yields no batch.
        """
        self._restore()
        iterator = iter(self.loader)
        first = next(iterator, _END)
        if first is _END:
            raise ArgumentError("dataloader: yielded no batches; there is no data to attribute over")
        self._pending = (first, iterator)
        return first

    def __iter__(self) -> Iterator[Any]:
        if self._pending is not None:
            first, iterator = self._pending
            self._pending = None
            yield first
            yield from iterator
            return
        self._restore()
        yield from iter(self.loader)


class _CopiesPerForward:
    """How many perturbed copies of a batch to stack into one forward.

    Stacking saves the per-forward overhead, which dominates for small models
    and batches (an MLP on 128 rows: 4x faster with 32 copies stacked), but on
    CPU large batches get slower per row once activations leave the cache
    (a small CNN on 64 16x16 images: 10 us per image alone, 17-32 us with 17
    copies stacked).  So on CPU the first stacked forwards try 1, 2, 4, ...
    copies, each size twice (the first forward of a new shape pays set-up
    costs), and keep the size with the best time per copy: a doubling that
    gains less than ``GAIN`` ends the search.  On other devices (timings would
    need a synchronization; GPUs want big batches) the memory budget decides.
    """

    GAIN = 0.9
    SAMPLES = 2

    def __init__(self, device: torch.device) -> None:
        self.adaptive = self.searching = device.type == "cpu"
        self.size = 1
        self._best = (math.inf, 1)
        self._rates: list[float] = []

    def choose(self, cap: int) -> int:
        """Copies for the next forward, at most ``cap`` (the memory budget)."""
        return min(self.size, cap) if self.adaptive else cap

    def record(self, copies: int, seconds: float) -> None:
        """Time of a forward of ``copies`` stacked copies."""
        if not self.searching or copies != self.size:
            return
        self._rates.append(seconds / copies)
        if len(self._rates) < self.SAMPLES:
            return
        rate, self._rates = min(self._rates), []
        if rate < self._best[0] * self.GAIN:
            self._best = (rate, self.size)
            self.size *= 2
        else:
            self.size, self.searching = self._best[1], False


class _Copies:
    """The forward outputs of perturbed copies of one batch, many copies per forward where possible.

    Copies are stacked into one forward when every forwarded element is a
    tensor with the batch first and the forward returns one row per example;
    the first forward of several copies settles the latter.  A forward that
    pools over its batch (a loss, a count) gets each copy on its own.
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        roles: Sequence[int],
        baselines: tuple[Tensor, ...],
        features: FeatureMasks,
        governor: ThreadGovernor,
    ) -> None:
        self.forward_func, self.roles = forward_func, tuple(roles)
        self.baselines, self.features = baselines, features
        self.governor = governor
        self.per_forward = _CopiesPerForward(features.masks[0].device)
        self.stacked: bool | None = None

    def _forward(self, elements: Sequence[Any]) -> Any:
        with self.governor.chunk():
            return self.forward_func(*(e for e, r in zip(elements, self.roles) if r != NO_FORWARD))

    def _replace(self, elements: tuple[Any, ...], attr: Sequence[Tensor]) -> tuple[Any, ...]:
        """``elements`` with the attributed ones replaced by ``attr`` in order."""
        replacements = iter(attr)
        return tuple(next(replacements) if r == NEED_ATTR else e for e, r in zip(elements, self.roles))

    def run(
        self, elements: tuple[Any, ...], present: Tensor, base_first: bool
    ) -> tuple[list[Any], list[tuple[Any, ...]]]:
        """Outputs of the copies ``present`` (``(k, F)``: which features each keeps) of one batch, and the
        batch elements each copy saw.  With ``base_first`` row 0 keeps every feature: it sees ``elements``."""
        attr = attributed(elements, self.roles)
        n = attr[0].shape[0]
        forwarded = [e for e, r in zip(elements, self.roles) if r != NO_FORWARD]
        stackable = all(isinstance(e, Tensor) and e.dim() > 0 and e.shape[0] == n for e in forwarded)
        total = present.shape[0]
        cap = auto_perturbations_per_eval(tuple(forwarded) if stackable else attr, total)
        outputs: list[Any] = []
        seen: list[tuple[Any, ...]] = []
        lo = 0
        while lo < total:
            stacking = stackable and self.stacked is not False
            k = min(self.per_forward.choose(cap) if stacking else cap, total - lo)
            copies = [
                torch.unflatten(p, 0, (k, n))
                for p in self.features.perturbed(present[lo : lo + k], attr, self.baselines)
            ]
            inputs = [self._replace(elements, [c[j] for c in copies]) for j in range(k)]
            if base_first and lo == 0:
                inputs[0] = elements
            chunk = None
            if stacking:
                start = time.perf_counter()
                chunk = self._stacked(elements, copies, k, n)
                if chunk is not None:
                    self.per_forward.record(k, time.perf_counter() - start)
            outputs += [self._forward(x) for x in inputs] if chunk is None else chunk
            seen += inputs
            lo += k
        return outputs, seen

    def _stacked(self, elements: tuple[Any, ...], copies: list[Tensor], k: int, n: int) -> list[Any] | None:
        """Outputs of ``k`` copies from one forward, or None when the forward pools over its batch."""
        stacked = iter(c.flatten(0, 1) for c in copies)
        batch = [next(stacked) if r == NEED_ATTR else repeat_rows(e, k) for e, r in zip(elements, self.roles)]
        output = self._forward(batch)
        if isinstance(output, Tensor) and output.dim() > 0 and output.shape[0] == k * n:
            if k > 1:
                self.stacked = True
            return list(torch.unflatten(output, 0, (k, n)).unbind(0))
        if k == 1:  # a single copy is the batch itself: whatever the forward returns is its output
            return [output]
        if self.stacked:
            raise ArgumentError(
                f"forward_func: returned {describe(output)} for {k} copies of a batch of {n} stacked "
                f"({k * n} rows), but one row per example for earlier batches; it must do either always"
            )
        self.stacked = False
        return None


def _concatenated(outputs: list[Any], index: int) -> Tensor:
    """The default reduce's step: a batch's per-copy outputs as one ``(copies, rows, ...)`` tensor."""
    for output in outputs:
        if not isinstance(output, Tensor) or output.dim() == 0:
            raise ArgumentError(
                f"reduce: the default (None) concatenates the forward's outputs along dim 0, but batch {index} "
                f"gave {describe(output)}; pass reduce=<function (accumulated, output, batch) -> accumulated>"
            )
    return torch.stack(outputs)


def _traverse(
    batches: Iterable[Any],
    copies: _Copies,
    present: Tensor,
    base_first: bool,
    reduce: Reduce | None,
    shapes: Sequence[tuple[int, ...]],
    progress: Callable[[int], None] | None,
) -> tuple[list[Any], list[int]]:
    """One traversal: the accumulated state of every copy, and the batch sizes seen."""
    states: list[Any] = [None] * present.shape[0]
    per_batch: list[Tensor] = []
    sizes: list[int] = []
    for index, batch in enumerate(batches):
        elements, _ = batch_elements(batch)
        sizes.append(check_batch(elements, copies.roles, shapes, index))
        outputs, seen = copies.run(elements, present, base_first)
        if reduce is None:
            per_batch.append(_concatenated(outputs, index))
        else:
            states = [reduce(state, out, x) for state, out, x in zip(states, outputs, seen)]
        if progress is not None:
            progress(1)
    if reduce is None and per_batch:
        try:
            states = list(torch.cat(per_batch, dim=1).unbind(0))
        except RuntimeError as error:
            raise ArgumentError(
                f"reduce: the default (None) concatenates the forward's outputs along dim 0, which failed for "
                f"outputs of shapes {sorted({tuple(b.shape[2:]) for b in per_batch})} after the batch ({error})"
            ) from None
    return states, sizes


def _metrics(states: list[Any], to_metric: Callable[[Any], Tensor] | None, shape: Any) -> Tensor:
    """The metric of every copy, ``(copies, *shape)``; ``shape`` is the unperturbed metric's (None for it)."""
    metrics = [state if to_metric is None else to_metric(state) for state in states]
    name = "reduce" if to_metric is None else "to_metric"
    for metric in metrics:
        if not isinstance(metric, Tensor):
            raise ArgumentTypeError(f"{name}: the metric to attribute must be a tensor, got {describe(metric)}")
        shape = metric.shape if shape is None else shape
        if metric.shape != shape:
            raise ArgumentError(
                f"{name}: the metric's shape must not depend on the perturbation; unperturbed "
                f"{tuple(shape)}, perturbed {tuple(metric.shape)}"
            )
    return torch.stack(metrics)


def dataloader_ablation(
    forward_func: Callable[..., Any],
    passes: DataPasses,
    roles: Sequence[int],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    shapes: Sequence[tuple[int, ...]],
    *,
    reduce: Reduce | None = None,
    to_metric: Callable[[Any], Tensor] | None = None,
    perturbations_per_pass: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Per feature, the metric's drop when the feature is set to its baseline in every example.

    Args:
        forward_func: called with a batch's elements whose role is not 2 (not passed), in order.
        passes: the loader; its first traversal may already be begun
            (:meth:`~attribution.functional.dataloader.DataPasses.first_batch`).
        roles: per batch element, 0 (attributed: ``NEED_ATTR``), 1 (passed to the forward only:
            ``NEED_FORWARD``) or 2 (not passed: ``NO_FORWARD``).
        baselines: per attributed element, a tensor broadcastable to it with a first dimension of 1.
        features: masks with a first dimension of 1, shared by every batch.
        shapes: per attributed element, the per-example shape every batch must have.
        reduce: accumulates each copy's outputs (:data:`Reduce`); None concatenates them along dim 0.
        to_metric: turns a copy's accumulated state into the metric tensor; None: the state is the metric.
        perturbations_per_pass: features ablated per traversal (each copy holds one accumulated state).
        progress: called with 1 after every batch of every traversal.

    Returns:
        ``(metric.numel(), F)``: unperturbed minus perturbed metric, its elements in row-major order (as
        the reference lays them out: an ``(N, 1)`` metric gives ``N`` rows, ``(N, C)`` gives ``N * C``).

    Raises:
        ArgumentError: batches that change shape or number between traversals, a forward whose outputs
            cannot be concatenated by the default reduce, or metrics of different shapes.
        ArgumentTypeError: a metric that is not a tensor.
    """
    count = features.count
    device = features.masks[0].device
    absent = ~torch.eye(count, dtype=torch.bool, device=device)
    per_pass: list[Tensor] = []
    first_sizes: list[int] | None = None
    with torch.inference_mode(), ThreadGovernor(device) as governor:
        copies = _Copies(forward_func, roles, baselines, features, governor)
        for lo in range(0, count, perturbations_per_pass):
            present = absent[lo : lo + perturbations_per_pass]
            if lo == 0:  # the unperturbed metric rides along the first traversal
                present = torch.cat([torch.ones(1, count, dtype=torch.bool, device=device), present])
            states, sizes = _traverse(passes, copies, present, lo == 0, reduce, shapes, progress)
            if first_sizes is not None and sizes != first_sizes:
                raise ArgumentError(
                    f"dataloader: traversal {len(per_pass) + 1} yielded batches of sizes {sizes}, the first "
                    f"{first_sizes}; every traversal must yield the same data (randomness in the loader must "
                    f"come from torch's generators, which are reset before each traversal)"
                )
            first_sizes = sizes
            per_pass.append(_metrics(states, to_metric, per_pass[0].shape[1:] if per_pass else None))
        metrics = torch.cat(per_pass)
        metrics = metrics.long() if metrics.dtype == torch.bool else metrics  # bools do not subtract
        drops = (metrics[:1] - metrics[1:]).reshape(count, -1).t()
    drops = drops.clone(memory_format=torch.contiguous_format)  # outside inference mode: an ordinary tensor
    return drops if drops.is_floating_point() else drops.to(torch.promote_types(drops.dtype, torch.float32))


def spread_to_inputs(drops: Tensor, features: FeatureMasks, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Per-feature drops ``(rows, F)`` onto every element of each input: ``(rows, *input.shape[1:])``."""
    return features.spread(drops, inputs)
