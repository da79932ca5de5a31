"""The picture of a probe example's influences: the example, then its top proponents and opponents from the
training set, each with its dataset index, label and score (:class:`lightning_xai.InfluenceMonitor`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_xai._draw import render

TILE = 64
"""Short side of a tile, pixels: five tiles a row fit TensorBoard's image card."""


def as_images(inputs: Tensor, image_shape: Sequence[int] | None) -> Tensor | None:
    """``(N, C, H, W)`` images of a batch of inputs: ``(N, C, H, W)`` with 1 or 3 channels, ``(N, H, W)``, or
    flat inputs reshaped to ``image_shape``; None where the inputs are not images."""
    if image_shape is not None:
        shape = tuple(image_shape)
        inputs = inputs.reshape(len(inputs), *shape)
    if inputs.dim() == 3:
        inputs = inputs[:, None]
    if inputs.dim() != 4 or inputs.shape[1] not in (1, 3) or inputs.is_complex():
        return None
    return inputs


def _tiles(images: Tensor) -> np.ndarray:
    """``(N, TILE', TILE'', 3)`` uint8: shown as RGB, enlarged by a whole factor (crisp pixels) or shrunk."""
    height, width = images.shape[-2:]
    short = min(height, width)
    factor = max(1, TILE // short)
    size = (
        (height * factor, width * factor)
        if short <= TILE
        else (round(height * TILE / short), round(width * TILE / short))
    )
    return render.display_pixels(render.resize(render.displayable(images), size), enlarge=False)


def influence_sheet(
    probe: Tensor,
    probe_lines: Sequence[render.Caption],
    groups: Sequence[tuple[str, Tensor, Sequence[Sequence[render.Caption]]]],
    title: Sequence[render.Caption],
) -> Tensor:
    """A sheet: the probe example on the first row, then each group (``(name, images, captions)``: e.g. the
    proponents, then the opponents) on rows of its own headed by its name. ``probe`` and each group's
    ``images`` are ``(N, C, H, W)`` inputs (see :func:`as_images`); a group may be empty.

    Returns:
        A ``(3, H, W)`` uint8 image.
    """
    pixels = _tiles(probe[:1])
    tile_h, tile_w = pixels.shape[1:3]
    per_row = max(
        1,
        min(
            max((len(images) for _, images, _ in groups), default=1),
            (render.CARD_WIDTH - render.PAD) // (tile_w + render.PAD),
        ),
    )
    blank = np.full((tile_h, tile_w, 3), 255, dtype=np.uint8)
    tiles: list[np.ndarray] = [pixels[0]] + [blank] * (per_row - 1)
    captions: list[Sequence[render.Caption]] = [probe_lines] + [()] * (per_row - 1)
    heads: list[render.Caption] = ["probe"]
    for name, images, lines in groups:
        shown = _tiles(images) if len(images) else np.zeros((0, tile_h, tile_w, 3), dtype=np.uint8)
        if len(shown) and shown.shape[1:3] != (tile_h, tile_w):
            shown = render.display_pixels(
                render.resize(torch.from_numpy(shown).permute(0, 3, 1, 2).float() / 255, (tile_h, tile_w)), False
            )
        rows = max(1, -(-len(shown) // per_row))
        for row in range(rows):
            part = list(range(row * per_row, min(len(shown), (row + 1) * per_row)))
            tiles += [shown[i] for i in part] + [blank] * (per_row - len(part))
            captions += [lines[i] for i in part] + [()] * (per_row - len(part))
            heads.append(name if row == 0 else "")
            if not part:
                heads[-1] = (f"{name}: none yet", render.MUTED)
    return render.sheet(np.stack(tiles), captions, title=title, per_row=per_row, row_heads=heads)
