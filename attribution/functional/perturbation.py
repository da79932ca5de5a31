"""Perturbation methods: how the target changes when parts of the input are replaced.

Perturbed copies are built by broadcasting (no Python loop per window),
evaluated many per forward under ``torch.inference_mode()``, and the output
drops are spread back onto the features with one small tensor contraction
per dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from attribution._canonical import Objective, repeat_rows
from attribution._local_forward import LocalForward, gather_window

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
    window positions; the last one is clipped at the border.
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
        mask = None
        for d, (dim_mask, pos) in enumerate(zip(self.dim_masks(device), positions)):
            part = dim_mask[pos].view(hi - lo, *([1] * d), self.shape[d], *([1] * (k - d - 1)))
            mask = part if mask is None else mask & part
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


class _LocalWindows:
    """Occluded image batches through :class:`LocalForward`: each layer is recomputed
    only where the window can reach it (conv nets, one image input, no extra args)."""

    BATCH_SCALE = 4
    """Most of the work shrinks to the window's neighbourhood, so larger batches pay off."""

    def __init__(self, forward: LocalForward, objective: Objective, grid: SlidingWindows, n: int) -> None:
        self.forward, self.objective, self.grid, self.n = forward, objective, grid, n

    @classmethod
    def build(cls, objective: Objective, inputs: tuple[Tensor, ...], grid: SlidingWindows) -> _LocalWindows | None:
        if len(inputs) != 1 or objective.additional_args or inputs[0].dim() != 4:
            return None
        forward = LocalForward.build(objective.forward_func, inputs[0])
        return None if forward is None else cls(forward, objective, grid, inputs[0].shape[0])

    def __call__(self, occluded: Tensor, lo: int, hi: int) -> Tensor:
        """Target values of the occluded rows (repeat-major, ``(hi - lo) * n``)."""
        starts = self.grid.starts(lo, hi, occluded.device)[:, 1:].repeat_interleave(self.n, dim=0)
        rows = torch.arange(occluded.shape[0], device=occluded.device)
        patch = gather_window(occluded, rows, starts, self.grid.window[1:])
        return self.objective.target.select(self.forward(patch, starts), hi - lo)


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
    feature covered by several windows gets the mean of their drops.

    Args:
        perturbations_per_eval: occluded copies per forward (at most); chosen
            from the input size when None.
        progress: called with the number of windows finished after each forward.
    """
    n = inputs[0].shape[0]
    inputs = tuple(x.detach() for x in inputs)
    drops_per_input = []
    with torch.inference_mode():
        reference = objective(inputs)
        for i, (x, b, window, stride) in enumerate(zip(inputs, baselines, windows, strides)):
            grid = SlidingWindows(tuple(x.shape[1:]), window, stride)
            local = _LocalWindows.build(objective, inputs, grid)
            scale = 1 if local is None else _LocalWindows.BATCH_SCALE
            per_eval = min(perturbations_per_eval or auto_perturbations_per_eval(inputs, grid.size, scale), grid.size)
            drops = torch.empty(n, grid.size, device=x.device, dtype=reference.dtype)
            layout = _Layout(x)
            for lo in range(0, grid.size, per_eval):
                hi = min(grid.size, lo + per_eval)
                mask = grid.masks(lo, hi, x.device).unsqueeze(1)
                occluded = torch.where(mask, b.unsqueeze(0), x.unsqueeze(0)).flatten(0, 1)
                batch = tuple(occluded if j == i else repeat_rows(other, hi - lo) for j, other in enumerate(inputs))
                values = local(occluded, lo, hi) if local else layout.run(objective, batch, hi - lo)
                drops[:, lo:hi] = (reference - values.view(hi - lo, n)).t()
                if progress is not None:
                    progress(hi - lo)
            drops_per_input.append((grid, drops))
    # Outside inference mode, so that callers get ordinary tensors back.
    return tuple(
        (grid.spread(drops.clone()) / grid.coverage(drops.device)).to(x.dtype)
        for (grid, drops), x in zip(drops_per_input, inputs)
    )
