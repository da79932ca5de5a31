"""Turning attribution maps into images: heat maps, overlays, grids and filmstrips.

Everything stays in torch (CHW floats in [0, 1], what TensorBoard's
``add_image`` takes); matplotlib only supplies the colour map's lookup table
and renders figures (:func:`figure_to_tensor`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

HEAT_CMAP = "inferno"
OVERLAY_ALPHA = 0.6
OUTLIER_QUANTILE = 0.99
THUMBNAIL = 64
"""Side of the maps kept per epoch for filmstrips (history must stay small)."""
DISPLAY_SIDE = 128
"""Small images are enlarged to at least this side, so that TensorBoard shows them legibly."""


def enlarge(images: Tensor, side: int = DISPLAY_SIDE) -> Tensor:
    """``(N, C, H, W)`` (or ``(N, H, W)``) scaled up by an integer factor to at least ``side`` pixels."""
    factor = -(-side // max(images.shape[-2:]))
    if factor <= 1:
        return images
    flat = images if images.dim() == 4 else images[:, None]
    big = F.interpolate(flat.float(), scale_factor=factor, mode="nearest")
    return big if images.dim() == 4 else big[:, 0]


def heat(attributions: Tensor, size: Sequence[int] | None = None) -> Tensor:
    """Attribution magnitude per pixel, scaled per example into [0, 1].

    Channels are summed in absolute value; the scale is each map's 99th
    percentile, so a few extreme pixels do not wash out the rest.

    Args:
        attributions: ``(N, C, H, W)`` (input or layer maps) or ``(N, H, W)``.
        size: resize the maps to this ``(H, W)`` (bilinear), e.g. the input's.

    Returns:
        ``(N, H, W)`` floats in [0, 1].
    """
    maps = attributions.detach().float()
    maps = maps.abs().sum(1) if maps.dim() == 4 else maps.abs()
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    scale = torch.quantile(maps.flatten(1), OUTLIER_QUANTILE, dim=1).clamp_min(1e-12)
    return (maps / scale[:, None, None]).clamp(0, 1)


def displayable(images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """Input images as RGB in [0, 1]: normalisation undone, grayscale expanded, else min-max scaled."""
    images = images.detach().float().cpu()
    if std is not None:
        images = images * torch.tensor(std).view(1, -1, 1, 1)
    if mean is not None:
        images = images + torch.tensor(mean).view(1, -1, 1, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        images = images[:, :3] if images.shape[1] > 3 else images.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    if images.min() < 0 or images.max() > 1:  # not in display range: scale each image on its own
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-12)
    return images.clamp(0, 1)


def _colormap(name: str = HEAT_CMAP) -> Tensor:
    import matplotlib

    return torch.tensor(matplotlib.colormaps[name](torch.linspace(0, 1, 256).numpy())[:, :3], dtype=torch.float32)


def colorize(maps: Tensor, cmap: str = HEAT_CMAP) -> Tensor:
    """``(N, H, W)`` values in [0, 1] to ``(N, 3, H, W)`` colours."""
    index = (maps.cpu() * 255).round().long().clamp(0, 255)
    return _colormap(cmap)[index].permute(0, 3, 1, 2)


def overlay(images: Tensor, maps: Tensor, alpha: float = OVERLAY_ALPHA) -> Tensor:
    """Heat maps blended over images; stronger evidence is more opaque. ``(N, 3, H, W)``."""
    weight = alpha * maps.cpu()[:, None]
    return (1 - weight) * images + weight * colorize(maps)


def grid(images: Tensor, per_row: int = 8) -> Tensor:
    """One ``(3, H, W)`` image tiling the batch."""
    return make_grid(images, nrow=per_row, padding=2, pad_value=1.0)


def filmstrip(image: Tensor, thumbnails: Tensor, max_columns: int = 16) -> Tensor:
    """One row: the input, then its overlay at each logged epoch (the most recent ``max_columns``).

    Args:
        image: ``(3, H, W)`` display image of one probe sample.
        thumbnails: ``(E, h, w)`` heat maps of that sample, one per logged epoch.
    """
    thumbnails = enlarge(thumbnails[-max_columns:].float(), THUMBNAIL)
    side = thumbnails.shape[-2:]
    small = F.interpolate(image[None], size=side, mode="bilinear", align_corners=False)
    frames = overlay(small.expand(len(thumbnails), -1, -1, -1), thumbnails)
    return make_grid(torch.cat([small, frames]), nrow=len(thumbnails) + 1, padding=2, pad_value=1.0)


def figure_to_tensor(figure: Figure) -> Tensor:
    """Render ``figure`` with Agg into a ``(3, H, W)`` float tensor in [0, 1], ready for TensorBoard's ``add_image``."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = torch.from_numpy(np.asarray(canvas.buffer_rgba()).copy())
    return rgba[..., :3].permute(2, 0, 1).float() / 255


def thumbnail(maps: Tensor) -> Tensor:
    """Maps ``(N, H, W)`` shrunk to at most ``THUMBNAIL`` pixels a side, stored as float16."""
    height, width = maps.shape[-2:]
    scale = min(1.0, THUMBNAIL / max(height, width))
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        maps = F.interpolate(maps[:, None].float(), size=size, mode="area")[:, 0]
    return maps.to(torch.float16).cpu()
