"""Perturbation methods: how the target changes when parts of the input are replaced.

Perturbed copies are built by broadcasting (no Python loop per window),
evaluated many per forward under ``torch.inference_mode()``, and the output
drops are spread back onto the features with one small tensor contraction
per dimension.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from attribution._internal.canonical import Objective, attribution_dtype, repeat_rows
from attribution._internal.chunking import ThreadGovernor
from attribution._internal.features import FeatureMasks, feature_boxes
from attribution._internal.local_forward import LocalForward, gather_window

AUTO_ROWS_ELEMENTS = {"cpu": 1_250_000, "cuda": 2**25}
"""Input elements per forward when the caller leaves the batch size to us.

On CPU, large batches get slower per example (cache pressure): about 8
ResNet-18 images at 224x224 is the sweet spot there.  GPUs want big batches.
"""


class _Layout:
    """Memory format of the perturbed batches.

    Convolutions run 15-20% faster on channels-last image batches (measured on
    ResNet-18, CPU).  The values are the same in either layout, but a model
    that calls ``.view`` on an activation fails on channels-last strides; such
    a model gets the standard layout from then on.
    """

    def __init__(self, x: Tensor) -> None:
        self.channels_last = x.dim() == 4

    def run(self, objective: Objective, batch: tuple[Tensor, ...], repeats: int) -> Tensor:
        if not self.channels_last:
            return objective(batch, repeats)
        try:
            return objective(tuple(self._convert(t) for t in batch), repeats)
        except RuntimeError as error:
            if "view" not in str(error):
                raise
            self.channels_last = False
            return objective(batch, repeats)

    @staticmethod
    def _convert(t: Tensor) -> Tensor:
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


@dataclass(frozen=True)
class SlidingWindows:
    """Hyper-rectangular windows sliding over the feature shape of one example.

    Along each dimension there are ``ceil((size - window) / stride) + 1``
    window positions; the last one is clipped at the border.  An example of
    shape ``()`` (a ``(n,)`` input) has one window, the whole example.
    """

    shape: tuple[int, ...]
    window: tuple[int, ...]
    stride: tuple[int, ...]

    @cached_property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil((d - w) / s) + 1 for d, w, s in zip(self.shape, self.window, self.stride))

    @property
    def size(self) -> int:
        return math.prod(self.counts)

    def dim_masks(self, device: torch.device) -> list[Tensor]:
        """Per dimension, a ``(positions, size)`` bool matrix: which indices each position covers."""
        masks = []
        for d, w, s, c in zip(self.shape, self.window, self.stride, self.counts):
            starts = torch.arange(c, device=device)[:, None] * s
            index = torch.arange(d, device=device)[None, :]
            masks.append((index >= starts) & (index < starts + w))
        return masks

    def masks(self, lo: int, hi: int, device: torch.device) -> Tensor:
        """Bool masks ``(hi - lo, *shape)`` of windows ``lo .. hi - 1`` (row-major order)."""
        positions = torch.unravel_index(torch.arange(lo, hi, device=device), self.counts)
        k = len(self.shape)
        mask = torch.ones(hi - lo, *([1] * k), dtype=torch.bool, device=device)
        for d, (dim_mask, pos) in enumerate(zip(self.dim_masks(device), positions)):
            part = dim_mask[pos].view(hi - lo, *([1] * d), self.shape[d], *([1] * (k - d - 1)))
            mask = mask & part
        return mask

    def spread(self, values: Tensor) -> Tensor:
        """``sum_w values[:, w] * mask_w``: per-window values ``(n, size)`` onto features ``(n, *shape)``."""
        out = values.reshape(values.shape[0], *self.counts)
        for d, dim_mask in enumerate(self.dim_masks(values.device)):
            out = torch.tensordot(out, dim_mask.to(values.dtype), dims=([d + 1], [0])).movedim(-1, d + 1)
        return out

    def starts(self, lo: int, hi: int, device: torch.device) -> Tensor:
        """First index covered by windows ``lo .. hi - 1`` per dimension, shifted inside the shape: ``(hi - lo, k)``."""
        positions = torch.stack(torch.unravel_index(torch.arange(lo, hi, device=device), self.counts), dim=1)
        stride = torch.tensor(self.stride, device=device)
        last = torch.tensor(self.shape, device=device) - torch.tensor(self.window, device=device)
        return torch.minimum(positions * stride, last)

    def coverage(self, device: torch.device) -> Tensor:
        """How many windows cover each feature, shape ``shape``."""
        counts = torch.ones((), device=device)
        for dim_mask in self.dim_masks(device):
            counts = counts[..., None] * dim_mask.sum(0).to(counts.dtype)
        return counts


def auto_perturbations_per_eval(inputs: tuple[Tensor, ...], total: int, scale: float = 1.0) -> int:
    """Perturbed copies per forward when the caller does not say (``scale`` times the default budget)."""
    per_copy = sum(x.numel() for x in inputs)
    budget = AUTO_ROWS_ELEMENTS.get(inputs[0].device.type, AUTO_ROWS_ELEMENTS["cuda"]) * scale
    return max(1, min(total, int(budget // per_copy)))


Boxes = tuple[Callable[[int, int], Tensor], tuple[int, int]]
"""For copies ``lo .. hi - 1`` of an image batch, where each differs from the image: ``(starts (hi - lo, 2), size)``."""

LOCAL_BATCH_SCALE = 4
"""With local re-evaluation most of the work shrinks to a box's neighbourhood, so larger batches pay off."""


class _CopyForward:
    """Target values of stacked perturbed copies of the batch.

    Copies that differ from a single image input only inside a box go through
    :class:`LocalForward` (each layer recomputed only where the box reaches);
    other batches through the model, channels-last for images.
    """

    def __init__(self, objective: Objective, inputs: tuple[Tensor, ...], boxes: Boxes | None) -> None:
        self.objective, self.n = objective, inputs[0].shape[0]
        self.layout = _Layout(inputs[0])
        self.local = None
        # On a GPU the full convolutions are cheap and the local pass's gathers are not (ResNet-18 occlusion
        # on an H200: 0.034 s plain, 0.043 s local); on CPU the local pass is about 2x faster.
        image = len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].device.type == "cpu"
        # Integer images may get floating copies (a fractional baseline) that the recorded base pass never saw;
        # an aggregate forward pools over the batch, which the per-row local pass cannot.
        local = image and inputs[0].is_floating_point() and not objective.aggregate and not objective.additional_args
        if boxes is not None and local:
            self.local = LocalForward.build(objective.forward_func, inputs[0])
        self.boxes = boxes

    def __call__(self, batch: tuple[Tensor, ...], lo: int, hi: int) -> Tensor:
        if self.local is None or self.boxes is None:  # (the local pass is built only with boxes)
            return self.layout.run(self.objective, batch, hi - lo)
        starts_of, size = self.boxes
        starts = starts_of(lo, hi).repeat_interleave(self.n, dim=0)
        (copies,) = batch
        rows = torch.arange(copies.shape[0], device=copies.device)
        patch = gather_window(copies, rows, starts, size)
        return self.objective.target.select(self.local(patch, starts), hi - lo)


def evaluate_copies(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    total: int,
    build: Callable[[int, int], tuple[Tensor, ...]],
    *,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
    boxes: Boxes | None = None,
) -> Tensor:
    """Target values ``(n, total)`` of ``total`` perturbed copies of the batch, many per forward.

    With an aggregate objective the values are ``(1, total)``.

    Args:
        build: ``(lo, hi) -> inputs`` holding copies ``lo .. hi - 1`` stacked repeat-major.
        perturbations_per_eval: copies per forward at most; from the input size when None.
        progress: called with the number of copies finished after each forward.
        boxes: where each copy differs from a single image input, enabling local re-evaluation.

    Call under ``torch.inference_mode()``.
    """
    if total == 0:
        return torch.empty(objective.rows, 0, device=inputs[0].device)
    forward = _CopyForward(objective, inputs, boxes)
    scale = 1 if forward.local is None else LOCAL_BATCH_SCALE
    # Batched extra arguments (the model's inputs, for a perturbed layer) are repeated with every copy too.
    repeated = tuple(a for a in objective.additional_args if isinstance(a, Tensor) and a.dim() > 0)
    per_eval = min(perturbations_per_eval or auto_perturbations_per_eval(inputs + repeated, total, scale), total)
    values = []
    with ThreadGovernor(inputs[0].device) as governor:
        for lo in range(0, total, per_eval):
            hi = min(total, lo + per_eval)
            with governor.chunk():
                values.append(forward(build(lo, hi), lo, hi).view(hi - lo, -1))
            if progress is not None:
                progress(hi - lo)
    return torch.cat(values).t()


def occlusion(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    *,
    windows: tuple[tuple[int, ...], ...],
    strides: tuple[tuple[int, ...], ...],
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, ...]:
    """Occlusion: the target's drop when each window is set to the baseline.

    Windows of one input are occluded while the other inputs stay intact.  A
    feature covered by several windows gets the mean of their drops.  For a
    forward that returns values for the whole batch, each window is
    occluded in every example at once and the attributions have one row
    per value (see :meth:`~attribution.functional.Objective.resolve` for the rows).

    Args:
        perturbations_per_eval: occluded copies per forward (at most); chosen
            from the input size when None.
        progress: called with the number of windows finished after each forward.
    """
    inputs = tuple(x.detach() for x in inputs)
    drops_per_input = []
    with torch.inference_mode():
        objective, reference = objective.resolve(inputs)
        for i, (x, b, window, stride) in enumerate(zip(inputs, baselines, windows, strides)):
            grid = SlidingWindows(tuple(x.shape[1:]), window, stride)

            def occluded(
                lo: int, hi: int, i: int = i, x: Tensor = x, b: Tensor = b, grid: SlidingWindows = grid
            ) -> tuple[Tensor, ...]:
                mask = grid.masks(lo, hi, x.device).unsqueeze(1)
                copies = torch.where(mask, b.unsqueeze(0), x.unsqueeze(0)).flatten(0, 1)
                return tuple(copies if j == i else repeat_rows(other, hi - lo) for j, other in enumerate(inputs))

            def box_starts(lo: int, hi: int, grid: SlidingWindows = grid, x: Tensor = x) -> Tensor:
                return grid.starts(lo, hi, x.device)[:, 1:]

            values = evaluate_copies(
                objective,
                inputs,
                grid.size,
                occluded,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
                boxes=(box_starts, (grid.window[-2], grid.window[-1])) if x.dim() == 4 else None,
            )
            drops_per_input.append((grid, reference[:, None] - values))
    # Outside inference mode, so that callers get ordinary tensors back.
    return tuple(
        (grid.spread(drops.clone()) / grid.coverage(drops.device)).to(attribution_dtype(x, drops))
        for (grid, drops), x in zip(drops_per_input, inputs)
    )


def feature_ablation(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, ...]:
    """Feature ablation: the target's drop when each feature (group) is set to the baseline.

    Every feature is one perturbed copy, in all inputs at once (ids are
    shared across inputs).  Image features go through local re-evaluation
    around their bounding box when the model allows it.  A forward that
    returns values for the whole batch needs shared masks and gets one row
    of attributions per value (a first dimension of 1 for a single one).
    """
    inputs = tuple(x.detach() for x in inputs)
    eye = torch.eye(features.count, dtype=torch.bool, device=inputs[0].device)
    with torch.inference_mode():
        objective, reference = objective.resolve(inputs)
        features.check_shared(objective.aggregate)
        located = feature_boxes(features, inputs[0]) if len(inputs) == 1 else None
        boxes = None if located is None else (lambda lo, hi: located[0][lo:hi], located[1])
        values = evaluate_copies(
            objective,
            inputs,
            features.count,
            lambda lo, hi: features.perturbed(~eye[lo:hi], inputs, baselines),
            perturbations_per_eval=perturbations_per_eval,
            progress=progress,
            boxes=boxes,
        )
        drops = reference[:, None] - values
    return features.spread(drops.clone(), inputs)


def _shuffles(count: int, n: int, device: torch.device) -> Tensor:
    """``count`` uniformly random permutations of ``n >= 2`` examples, none the identity (which changes nothing)."""
    orders = torch.rand(count, n, device=device).argsort(dim=1)
    identity = torch.arange(n, device=device)
    while (unchanged := (orders == identity).all(dim=1)).any():
        orders[unchanged] = torch.rand(int(unchanged.sum()), n, device=device).argsort(dim=1)
    return orders


def feature_permutation(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, ...]:
    """Permutation importance: the target's change when a feature is shuffled across the batch.

    Each feature gets its own random permutation of the examples, never the
    identity (from torch's global generator), applied to every element of
    that feature.  A batch of one cannot be shuffled: every attribution is
    0, with a warning (as in the reference).  A forward that returns values
    for the whole batch (a loss, say) gets attributions with a first
    dimension of 1 (one row per value): the batch's change in that value;
    its inputs may have batch sizes of their own (sparse index lists), each
    shuffled along its own first dimension.
    """
    inputs = tuple(x.detach() for x in inputs)
    eye = torch.eye(features.count, dtype=torch.bool, device=inputs[0].device)

    def permuted(lo: int, hi: int) -> tuple[Tensor, ...]:
        keep = ~eye[lo:hi]  # copy k: feature k of example j comes from example orders[k, j]
        return tuple(
            torch.where(features.present(keep, i), x.unsqueeze(0), x[orders[x.shape[0]][lo:hi]]).flatten(0, 1)
            if x.shape[0] in orders
            else repeat_rows(x, hi - lo)  # fewer than two rows: nothing to shuffle
            for i, x in enumerate(inputs)
        )

    with torch.inference_mode():
        objective, reference = objective.resolve(inputs)
        features.check_shared(objective.aggregate)
        # One set of permutations per batch size (inputs share one unless the forward is aggregate).
        sizes = dict.fromkeys(x.shape[0] for x in inputs if x.shape[0] > 1)
        orders = {size: _shuffles(features.count, size, inputs[0].device) for size in sizes}
        if not orders:
            warnings.warn(
                "inputs: FeaturePermutation shuffles each feature across the batch, and a batch of one example "
                "cannot be shuffled, so every attribution is 0; pass at least 2 examples",
                stacklevel=3,
            )
            drops = torch.zeros_like(reference)[:, None].expand(-1, features.count)
        else:
            values = evaluate_copies(
                objective,
                inputs,
                features.count,
                permuted,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
            drops = reference[:, None] - values
    return features.spread(drops.clone(), inputs)
