"""Feature groups: which input elements are perturbed together.

Perturbation and surrogate methods switch *features* on and off; a feature
is a group of input elements given by an integer ``feature_mask`` (one per
input, ids shared across inputs: the same id in two inputs is one feature).
Here the masks are validated once, and a batch of *coalitions* (which
features are present) is turned into perturbed inputs by broadcasting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attribution._internal.canonical import attribution_dtype, describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError


@dataclass(frozen=True, eq=False)
class FeatureMasks:
    """Per input, a long tensor of feature ids broadcastable to the input (first dim 1 or n)."""

    masks: tuple[Tensor, ...]
    count: int
    name: str = "feature_mask"  # the argument's name in error messages (layer methods take ``layer_mask``)

    def check_shared(self, aggregate: bool) -> None:
        """Raise when a forward that returns one value for the whole batch (``aggregate``) meets masks
        that differ between examples: a feature is then perturbed in every example at once."""
        if aggregate and any(m.shape[0] != 1 for m in self.masks):
            raise ArgumentError(
                f"{self.name}: forward_func returns one value for the whole batch, so each feature is perturbed "
                "in every example at once and the mask must be shared by the batch (first dimension 1), got "
                f"shapes {[tuple(m.shape) for m in self.masks]}"
            )

    def present(self, coalitions: Tensor, i: int) -> Tensor:
        """Which elements of input ``i`` are kept, for coalitions ``(P, F)`` or per example ``(P, n, F)``.

        Returns:
            A bool tensor ``(P, 1 or n, *input.shape[1:])`` (trailing dims may broadcast).
        """
        mask = self.masks[i]
        if coalitions.dim() == 2:
            return coalitions[:, mask]
        rows = torch.arange(coalitions.shape[1], device=mask.device).view(-1, *([1] * (mask.dim() - 1)))
        return coalitions[:, rows, mask]

    def perturbed(
        self, coalitions: Tensor, inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        """Inputs with absent features set to the baseline: ``P`` stacked copies (repeat-major)."""
        return tuple(
            torch.where(self.present(coalitions, i), x.unsqueeze(0), b.unsqueeze(0)).flatten(0, 1)
            for i, (x, b) in enumerate(zip(inputs, baselines))
        )

    def spread(self, values: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Per-feature values ``(rows, F)`` onto the elements of every input (each element gets its
        feature's), as ``(rows, *input.shape[1:])``: ``rows`` is ``n``, ``n * K`` for ``K`` outputs per
        example (example-major), or 1 for a batch explained as a whole (shared masks).  Floating for
        integer and bool inputs (at least float32)."""
        rows = values.shape[0]
        result = []
        for mask, x in zip(self.masks, inputs):
            if mask.shape[0] > 1 and rows != mask.shape[0]:  # several outputs per example: example-major rows
                mask = mask.repeat_interleave(rows // mask.shape[0], dim=0)
            index = mask.expand(rows, *x.shape[1:]).reshape(rows, -1)
            result.append(values.gather(1, index).view(rows, *x.shape[1:]).to(attribution_dtype(x, values)))
        return tuple(result)


def format_feature_mask(feature_mask: Any, inputs: tuple[Tensor, ...], name: str = "feature_mask") -> FeatureMasks:
    """Validate ``feature_mask`` (None: every element its own feature) as :class:`FeatureMasks`.

    Masks hold integer ids (group labels, as Captum documents them); floating
    masks are refused even when they hold whole numbers, since a float mask is
    usually a weight or a saliency map passed by mistake, and bool masks too
    (a selection, not a grouping).  ``name`` is the argument's name in error
    messages (``layer_mask`` for layer methods).

    Raises:
        TypeError: not an integer tensor (floating and bool masks included: convert ids with ``.long()``).
        ValueError: a mask that does not broadcast to its input, negative ids, or ids with gaps (every id
            from 0 to the largest must be used).
    """
    if feature_mask is None:
        masks, offset = [], 0
        for x in inputs:
            size = x.shape[1:].numel()  # also for an input with no rows (an empty sparse list)
            masks.append((torch.arange(size, device=x.device) + offset).view(1, *x.shape[1:]))
            offset += size
        return FeatureMasks(tuple(masks), offset, name)
    given = feature_mask if isinstance(feature_mask, (tuple, list)) else (feature_mask,)
    if len(given) != len(inputs):
        raise ArgumentError(f"{name}: expected one mask per input ({len(inputs)}), got {len(given)}")
    masks = []
    for i, (mask, x) in enumerate(zip(given, inputs)):
        label = name if len(inputs) == 1 else f"{name}[{i}]"
        mask = _feature_ids(mask, label).to(x.device)
        if mask.dim() < x.dim():  # broadcast from the right: e.g. (H, W) or (C, H, W) shared by the batch
            mask = mask.reshape((1,) * (x.dim() - mask.dim()) + tuple(mask.shape))
        if mask.dim() != x.dim() or not _broadcasts(mask.shape, x.shape):
            raise ArgumentError(
                f"{label}: expected a shape that broadcasts to the input's {tuple(x.shape)} "
                f"(first dimension 1 or {x.shape[0]}), got {tuple(mask.shape)}"
            )
        masks.append(mask)
    ids = torch.unique(torch.cat([m.flatten() for m in masks]))
    if int(ids[0]) < 0:
        raise ArgumentError(f"{name}: ids must be >= 0, got {int(ids[0])}")
    count = int(ids[-1]) + 1
    if len(ids) != count:
        missing = sorted(set(range(count)) - set(ids.tolist()))[:5]
        raise ArgumentError(
            f"{name}: ids must run from 0 to the number of features - 1 without gaps; "
            f"{len(ids)} distinct ids up to {count - 1}, missing e.g. {missing}"
        )
    return FeatureMasks(tuple(masks), count, name)


def _feature_ids(mask: Any, name: str) -> Tensor:
    """A mask of feature ids as a long tensor; only integer tensors are ids."""
    if not isinstance(mask, Tensor) or mask.is_complex():
        raise ArgumentTypeError(f"{name}: expected an integer tensor of feature ids, got {describe(mask)}")
    if mask.is_floating_point() or mask.dtype == torch.bool:
        # Checked on the dtype alone (no scan of the values): a float mask is refused whatever it holds.
        meaning = "two groups, False and True" if mask.dtype == torch.bool else "whole-number ids"
        raise ArgumentTypeError(
            f"{name}: expected an integer tensor of feature ids 0..F-1 (e.g. torch.long), got a {describe(mask)}; "
            f"if it holds {meaning}, pass {name}.long()"
        )
    return mask.long()


def grid_feature_mask(inputs: Tensor, cells: int) -> Tensor:
    """A ``(1, 1, H, W)`` feature mask of ``cells x cells`` rectangular superpixels (ids row by row),
    shared by the batch and the channels of an image batch ``(N, C, H, W)``."""
    height, width = inputs.shape[-2:]
    cells = min(cells, height, width)  # every id must be used
    rows = torch.arange(height, device=inputs.device) * cells // height
    cols = torch.arange(width, device=inputs.device) * cells // width
    return (rows[:, None] * cells + cols[None, :])[None, None]


def superpixel_options(cells: int, **image_options: Any) -> Callable[[Tensor], dict[str, Any]]:
    """Probe options of a coalition method: a grid of superpixels for image batches, since every
    coalition costs a forward (``image_options`` are added for images too)."""

    def options(inputs: Tensor) -> dict[str, Any]:
        return {"feature_mask": grid_feature_mask(inputs, cells), **image_options} if inputs.dim() == 4 else {}

    return options


def _broadcasts(shape: Sequence[int], target: Sequence[int]) -> bool:
    return all(s in (1, t) for s, t in zip(shape, target))


def feature_boxes(masks: FeatureMasks, x: Tensor) -> tuple[Tensor, tuple[int, int]] | None:
    """Spatial bounding box of every feature of an image input, as ``(starts (F, 2), size)``.

    None when the input is not ``(n, C, H, W)``.  One size serves every
    feature (the largest box), shifted to stay inside the image.
    """
    (mask,) = masks.masks
    if x.dim() != 4:
        return None
    height, width = x.shape[-2:]
    full = mask.expand(-1, -1, height, width)  # spatial dims may have been broadcast
    ids = full.flatten()
    rows = torch.arange(height, device=x.device).view(1, 1, -1, 1).expand_as(full)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, -1).expand_as(full)
    lo = torch.full((masks.count, 2), max(height, width), device=x.device, dtype=torch.long)
    hi = torch.full((masks.count, 2), -1, device=x.device, dtype=torch.long)
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    lo.scatter_reduce_(0, ids[:, None].expand(-1, 2), coords, reduce="amin")
    hi.scatter_reduce_(0, ids[:, None].expand(-1, 2), coords, reduce="amax")
    box_height, box_width = (int(v) for v in (hi - lo + 1).amax(0).tolist())
    bound = torch.tensor([height - box_height, width - box_width], device=x.device)
    return torch.minimum(lo, bound), (box_height, box_width)
