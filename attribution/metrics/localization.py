"""Localization against ground-truth masks: positive mass inside the mask and the pointing game.

Both take attribution maps ``(N, C, H, W)`` (channels summed, signs kept) or
``(N, H, W)`` and masks ``(N, H, W)`` or ``(N, 1, H, W)``, bool or 0/1 (any
nonzero value counts as inside).  Maps at a lower resolution than the masks,
such as layer GradCAM maps, are upsampled bilinearly to the masks' size
(after summing channels, before anything else).

An example whose mask is empty has no place to look at: both scores are NaN
for it (undefined), not 0, so that examples without the object (negatives,
sentences without the planted token) do not drag a mean down.  Average with
``torch.nanmean`` and count the examples used with ``(~scores.isnan()).sum()``.
A map without positive attribution has mass 0 in any non-empty mask, and a
constant map points nowhere (pointing game 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError


def mass_in_mask(attributions: Tensor, masks: Tensor) -> Tensor:
    """Share of each map's positive attribution that lies inside its mask.

    Args:
        attributions: maps ``(N, C, H, W)`` or ``(N, H, W)``, possibly at a lower resolution than the masks.
        masks: ``(N, H, W)`` or ``(N, 1, H, W)``, bool or 0/1.

    Returns:
        A tensor of shape ``(N,)`` in [0, 1]: ``sum(relu(map) * mask) / sum(relu(map))``,
        0 for a map without positive attribution, NaN for an empty mask (undefined: take
        ``torch.nanmean`` over examples).  Negative attribution is ignored.

    Raises:
        TypeError: ``attributions`` or ``masks`` is not a real-valued tensor.
        ValueError: shapes that do not fit (see the module docstring) or empty maps.

    Example:
        >>> import torch
        >>> from attribution.metrics import mass_in_mask
        >>> maps = torch.tensor([[[3.0, -1.0], [1.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]]])  # (N, H, W)
        >>> object_masks = torch.tensor([[[True, False], [False, False]], [[False, False], [False, False]]])
        >>> mass_in_mask(maps, object_masks)  # 3 of 4; the second mask is empty
        tensor([0.7500,    nan])
    """
    maps, inside = _maps_and_masks(attributions, masks)
    positive = maps.clamp_min(0).flatten(1)
    total = positive.sum(1)
    share = (positive * inside.flatten(1)).sum(1) / torch.where(total > 0, total, torch.ones_like(total))
    return _undefined_without_mask(share, inside)


def pointing_game(attributions: Tensor, masks: Tensor) -> Tensor:
    """Whether each map's arg-max lies inside its mask (Zhang et al., 2016).

    The arg-max is taken on the channel-summed signed map; among equal maxima
    the first in row-major order counts.  A constant map points nowhere and
    scores 0; an empty mask leaves nothing to point at and scores NaN.

    Args:
        attributions: maps ``(N, C, H, W)`` or ``(N, H, W)``, possibly at a lower resolution than the masks.
        masks: ``(N, H, W)`` or ``(N, 1, H, W)``, bool or 0/1.

    Returns:
        A float tensor of shape ``(N,)``: 1.0 for a hit, 0.0 for a miss, NaN for an empty mask
        (undefined: take ``torch.nanmean`` over examples).

    Raises:
        TypeError: ``attributions`` or ``masks`` is not a real-valued tensor.
        ValueError: shapes that do not fit (see the module docstring) or empty maps.
    """
    maps, inside = _maps_and_masks(attributions, masks)
    flat = maps.flatten(1)
    hit = inside.flatten(1).gather(1, flat.argmax(dim=1, keepdim=True))[:, 0]
    varies = flat.amax(dim=1) > flat.amin(dim=1)
    return _undefined_without_mask((hit & varies).to(maps.dtype), inside)


def _undefined_without_mask(scores: Tensor, inside: Tensor) -> Tensor:
    """NaN for the examples whose mask is empty: a score there would be a made-up 0."""
    empty = ~inside.flatten(1).any(1)
    return torch.where(empty, torch.full_like(scores, float("nan")), scores)


def _maps_and_masks(attributions: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Signed float maps ``(N, H, W)`` at the masks' resolution and bool masks ``(N, H, W)``."""
    for name, value in (("attributions", attributions), ("masks", masks)):
        if not isinstance(value, Tensor) or value.is_complex():
            raise ArgumentTypeError(f"{name}: expected a real-valued tensor, got {describe(value)}")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ArgumentError(f"masks: expected shape (N, H, W) or (N, 1, H, W), got {tuple(masks.shape)}")
    if attributions.dim() not in (3, 4):
        raise ArgumentError(
            f"attributions: expected maps of shape (N, C, H, W) or (N, H, W), got {tuple(attributions.shape)}"
        )
    if attributions.numel() == 0 or masks.numel() == 0:
        raise ArgumentError(
            f"attributions, masks: expected non-empty maps, got shapes {tuple(attributions.shape)} "
            f"and {tuple(masks.shape)}"
        )
    if attributions.shape[0] != masks.shape[0]:
        raise ArgumentError(f"masks: expected one mask per map ({attributions.shape[0]}), got {masks.shape[0]} masks")
    if attributions.device != masks.device:
        raise ArgumentError(f"masks: expected masks on the maps' device ({attributions.device}), got {masks.device}")
    dtype = torch.float64 if attributions.dtype == torch.float64 else torch.float32
    maps = attributions.to(dtype)
    maps = maps.sum(1) if maps.dim() == 4 else maps
    size = tuple(masks.shape[-2:])
    if tuple(maps.shape[-2:]) != size:
        if maps.shape[-2] > size[0] or maps.shape[-1] > size[1]:
            raise ArgumentError(
                f"masks: expected masks at the maps' resolution or finer, got masks of size {size[0]}x{size[1]} "
                f"for maps of size {maps.shape[-2]}x{maps.shape[-1]}"
            )
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps, masks != 0
