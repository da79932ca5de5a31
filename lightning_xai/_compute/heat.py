"""Attribution maps as heat: per pixel, on one scale for the whole probe, ready to colour; and the small
thumbnails of them that the history keeps for every point.

Computed with the explanation (in torch, on the maps' device), so that what is logged, kept and drawn
agrees; colouring and drawing them is :mod:`lightning_xai._draw.render`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

OUTLIER_QUANTILE = 0.99
THUMBNAIL = 64
"""Side of the maps kept per point for filmstrips and timelines (history must stay small)."""


@dataclass(frozen=True)
class Heat:
    """Attribution maps ready to colour.

    Attributes:
        maps: ``(N, H, W)``: in [-1, 1] when ``signed``, else in [0, 1]; 1 stands for ``scale``.
        scale: the attribution value drawn at full colour: the batch's 99th percentile of ``|map|``.
        signed: whether any value is negative (then shown with the diverging colour map).
    """

    maps: Tensor
    scale: float
    signed: bool


def heat(attributions: Tensor, size: Sequence[int] | None = None, blank: Tensor | None = None) -> Heat:
    """Attribution per pixel (channels summed, sign kept), on one scale for the whole batch.

    The scale is the batch's 99th percentile of the magnitude, so a few extreme pixels do not wash out
    the rest, and tiles of one image compare with each other.

    Args:
        attributions: ``(N, C, H, W)`` (input or layer maps) or ``(N, H, W)``.
        size: resize the maps to this ``(H, W)`` (bilinear), e.g. the input's.
        blank: ``(N,)`` bool, the maps that are no explanation (they failed the monitor's self-check): they
            become NaN, which :func:`lightning_xai._draw.render.overlay` draws as a grey "no map" tile, and
            do not set the scale.

    Returns:
        The maps in [-1, 1] (or [0, 1] when none is negative), with their scale and sign.
    """
    maps = attributions.detach().float()
    maps = maps.sum(1) if maps.dim() == 4 else maps
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    blank = torch.zeros(maps.shape[0], dtype=torch.bool) if blank is None else blank.to(torch.bool).cpu()
    shown = maps[~blank.to(maps.device)]
    magnitude = shown.abs().flatten()
    scale = 1.0
    if magnitude.numel():
        scale = float(magnitude.kthvalue(max(1, math.ceil(OUTLIER_QUANTILE * magnitude.numel()))).values)
        if scale <= 0:  # sparse maps: fewer than 1% of the pixels are non-zero
            scale = float(magnitude.max()) or 1.0
    signed = is_signed(shown)
    maps = (maps / scale).clamp(-1 if signed else 0, 1)
    maps[blank.to(maps.device)] = float("nan")
    return Heat(maps, scale, signed)


def is_signed(maps: Tensor) -> bool:
    """Whether the maps hold negative evidence, so need the diverging colour map."""
    return bool((maps < 0).any())


def thumbnail(heat: Heat | Tensor) -> Tensor:
    """Maps ``(N, H, W)`` shrunk to at most ``THUMBNAIL`` pixels a side, stored as float16."""
    maps = heat.maps if isinstance(heat, Heat) else heat
    height, width = maps.shape[-2:]
    scale = min(1.0, THUMBNAIL / max(height, width))
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        maps = F.interpolate(maps[:, None].float(), size=size, mode="area")[:, 0]
    return maps.to(torch.float16).cpu()


def stored_maps(attributions: Tensor, input_size: Sequence[int], display_size: Sequence[int]) -> Tensor:
    """Maps as the maps files keep them by default: image maps ``(N, C, H, W)`` summed over channels to
    ``(N, 1, H, W)`` (sign kept, as the overlays show them) and, when they have the input's size and that is
    larger than its display size, shrunk to the display size by summing the input pixels each stored pixel
    covers (so a region's total attribution stays what it was); other maps as they are.

    Args:
        attributions: one method's maps.
        input_size: the probe's ``(H, W)``.
        display_size: the ``(H, W)`` overlays are computed at (:func:`lightning_xai._draw.render.base`).
    """
    if attributions.dim() != 4:
        return attributions.detach()
    maps = attributions.detach().float().sum(1, keepdim=True)
    height, width = maps.shape[-2:]
    if (height, width) == tuple(input_size) and tuple(display_size) != (height, width):
        new_height, new_width = display_size
        area = (height * width) / (new_height * new_width)
        maps = F.interpolate(maps, size=(new_height, new_width), mode="area") * area
    return maps
