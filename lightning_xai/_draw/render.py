"""Turning heat maps (:mod:`lightning_xai._compute.heat`) into images: coloured overlays, and labelled sheets of
tiles with a colour scale.

Maps and overlays are computed in torch at the inputs' own resolution; a sheet is then laid out as uint8
pixels (small inputs enlarged by repeating pixels), its text pasted in from patches that PIL renders once
per string with its small built-in font, and handed over as CHW floats in [0, 1] (what TensorBoard's
``add_image`` takes). matplotlib only supplies the colour maps' lookup tables and renders figures
(:func:`figure_to_tensor`).

Sizes are chosen for TensorBoard's default image card (``CARD_WIDTH``): it stretches or shrinks every image
to its width, so a sheet is at most that wide, two tiles a row, each at least ``TILE_SIDE`` pixels on its
short side; the card then shows each tile at about 165 pixels and the text unshrunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

SIGNED_CMAP = "RdBu_r"
"""Diverging colour map for maps with both signs: blue against the explained class, red for it."""
UNSIGNED_CMAP = "inferno"
"""Sequential colour map for maps that are never negative (GradCAM after its ReLU, saliency magnitude)."""
OVERLAY_ALPHA = 0.7
LUMA = torch.tensor([0.299, 0.587, 0.114])
"""Weights of the grey the maps are drawn over (ITU-R BT.601 luma)."""
TILE_SIDE = 128
"""Every tile is at least this many pixels on its short side (small inputs: nearest neighbour, integer factor)."""
TILE_MAX_SIDE = 160
"""Larger inputs are shrunk to this short side, so that two tiles fit the card (and PNGs stay quick)."""
CARD_WIDTH = 350
"""Width of TensorBoard's image card (IMAGES tab, default size), CSS pixels, measured in Chromium with
``scripts/screenshots``: a wider image is shrunk to it, and its small text becomes hard to read."""
PER_ROW = 2
"""Tiles per row of a sheet (fewer when wider tiles would not fit ``CARD_WIDTH``)."""
MAX_FRAMES = 5
"""Logged points shown in a filmstrip at most (evenly spaced, always the first and the latest): with the
input, three rows of two, one screen in TensorBoard's card; the drawing and encoding time of a filmstrip
stays bounded however many points (24 filmstrips a point in the demo are most of its logging time)."""
PAD = 4
FONT_SIZE = 12
LINE = 15
"""Height of a line of text, pixels."""
BAR_HEIGHT = 8
NO_MAP_LIGHT, NO_MAP_DARK = 0.72, 0.6
"""Grey levels of the hatched tile drawn where a map failed the monitor's self-check."""
INK = (25, 25, 25)
MUTED = (95, 95, 95)
RIGHT = (0, 115, 40)
WRONG = (200, 20, 20)

Caption = str | tuple[str, tuple[int, int, int]]
"""A line of text under a tile or above a sheet: plain (dark ink), or with its own RGB colour."""


@dataclass(frozen=True)
class Legend:
    """The colour scale drawn above a sheet: the bar, the values at its ends, and what the colours mean."""

    signed: bool
    high: str
    meaning: str

    @property
    def ends(self) -> tuple[str, str]:
        return (f"-{self.high}", f"+{self.high}") if self.signed else ("0", self.high)


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


def tile_size(height: int, width: int) -> tuple[int, int]:
    """The display size of a ``height`` x ``width`` input: short side in [``TILE_SIDE``, ``TILE_MAX_SIDE``],
    by a whole-number factor where that lands in the range (then each pixel becomes a crisp block)."""
    short = min(height, width)
    if TILE_SIDE <= short <= TILE_MAX_SIDE:
        return height, width
    factor = -(-TILE_SIDE // short)
    if short < TILE_SIDE and short * factor <= TILE_MAX_SIDE:
        return height * factor, width * factor
    side = TILE_SIDE if short < TILE_SIDE else TILE_MAX_SIDE
    return max(1, round(height * side / short)), max(1, round(width * side / short))


def resize(images: Tensor, size: Sequence[int]) -> Tensor:
    """``(N, C, H, W)`` or ``(N, H, W)`` to ``size``: nearest neighbour for whole-number enlargements (crisp
    pixels), bilinear otherwise (antialiased when shrinking)."""
    (height, width), (new_height, new_width) = images.shape[-2:], tuple(size)
    if (height, width) == (new_height, new_width):
        return images.float()
    flat = images.float() if images.dim() == 4 else images[:, None].float()
    factor = new_height // height
    if factor >= 1 and (new_height, new_width) == (factor * height, factor * width):
        big = F.interpolate(flat, scale_factor=factor, mode="nearest")
    else:
        shrink = new_height < height
        big = F.interpolate(flat, size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=shrink)
    return big if images.dim() == 4 else big[:, 0]


def base(images: Tensor) -> Tensor:
    """``(N, 3, H, W)`` images at the resolution overlays are computed at: their own, unless they are larger
    than their display size (then shrunk to it); :func:`sheet` enlarges them as the last step."""
    height, width = images.shape[-2:]
    return images.float() if min(height, width) <= TILE_MAX_SIDE else resize(images, tile_size(height, width))


def display_pixels(images: Tensor, enlarge: bool = True) -> np.ndarray:
    """``(N, 3, H, W)`` floats to ``(N, H', W', 3)`` uint8 at display size: whole-number enlargements are done
    on the bytes, by repetition (crisp pixels, and a sixteenth of the arithmetic at 4x)."""
    height, width = images.shape[-2:]
    target = tile_size(height, width) if enlarge else (height, width)
    factor = target[0] // height
    if target != (factor * height, factor * width):
        images, factor = resize(images, target), 1
    pixels = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return pixels.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else pixels


@lru_cache(maxsize=4)
def _colormap(name: str) -> Tensor:
    import matplotlib

    return torch.tensor(matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3], dtype=torch.float32)


def colorize(maps: Tensor, signed: bool) -> Tensor:
    """``(N, H, W)`` values (in [-1, 1] if ``signed``, else [0, 1]) to ``(N, 3, H, W)`` colours."""
    position = (maps.cpu().float() + 1) / 2 if signed else maps.cpu().float()
    index = (position * 255).round().long().clamp(0, 255)
    return _colormap(SIGNED_CMAP if signed else UNSIGNED_CMAP)[index].permute(0, 3, 1, 2)


def overlay(images: Tensor, maps: Tensor, signed: bool, alpha: float = OVERLAY_ALPHA) -> Tensor:
    """Heat maps blended over the images in grey (so that the colours read as the map's alone); stronger
    evidence (either sign) is more opaque. ``(N, 3, H, W)``.  A map holding NaN (no explanation, see
    :func:`lightning_xai._compute.heat.heat`) gives a hatched grey tile instead, which no heat map or image
    looks like."""
    maps = resize(maps.cpu(), images.shape[-2:])
    blank = torch.isnan(maps).flatten(1).any(dim=1)
    maps = torch.nan_to_num(maps)
    grey = (images * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
    weight = alpha * maps.abs()[:, None]
    blended = (1 - weight) * grey + weight * colorize(maps, signed)
    if blank.any():
        blended[blank] = no_map_tile((images.shape[-2], images.shape[-1]))
    return blended


def no_map_tile(size: tuple[int, int]) -> Tensor:
    """``(3, H, W)`` flat grey with diagonal hatching: where a map failed the self-check."""
    rows, columns = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    stripes = ((rows + columns) // max(2, min(size) // 16)) % 4 == 0
    return torch.where(stripes, NO_MAP_DARK, NO_MAP_LIGHT).expand(3, *size)


def pick(count: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` (>= 2) of ``count`` items, evenly spaced, the first and the last included."""
    if count <= limit:
        return list(range(count))
    return torch.linspace(0, count - 1, limit).round().long().tolist()  # step > 1, so no duplicates


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: the bitmap font, which has one size
        return ImageFont.load_default()


def _fitted(text: str, width: int) -> str:
    """``text`` cut (ending in '..') to fit ``width`` pixels."""
    font = _font()
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def text_width(text: str) -> float:
    """Pixels ``text`` takes in the sheets' font."""
    return _font().getlength(text)


@lru_cache(maxsize=4096)
def _text_patch(text: str, colour: tuple[int, int, int], width: int) -> np.ndarray:
    """``text`` (cut to ``width`` pixels) in ``colour`` on white, ``(LINE, w, 3)`` uint8: rendered once, pasted
    wherever it recurs (a filmstrip redraws the labels of its earlier frames at every point)."""
    text = _fitted(text, width)
    mask = Image.new("L", (max(1, min(width, int(_font().getlength(text)) + 2)), LINE), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=_font())
    ink = np.asarray(mask, dtype=np.float32)[..., None] / 255
    return np.round(255 - ink * (255 - np.asarray(colour, dtype=np.float32))).astype(np.uint8)


def write_text(canvas: np.ndarray, at: tuple[float, float], line: Caption, width: int) -> None:
    """Paste a line of text into ``canvas`` (white there) at ``at``, at most ``width`` pixels long."""
    text, colour = (line, INK) if isinstance(line, str) else line
    if not text:
        return
    patch = _text_patch(text, tuple(colour), int(width))
    x, y = max(0, round(at[0])), max(0, round(at[1]))
    height, length = min(patch.shape[0], canvas.shape[0] - y), min(patch.shape[1], canvas.shape[1] - x)
    if height > 0 and length > 0:
        canvas[y : y + height, x : x + length] = patch[:height, :length]


def sheet(
    images: Tensor | np.ndarray,
    captions: Sequence[Sequence[Caption]] = (),
    title: Sequence[Caption] = (),
    legend: Legend | None = None,
    per_row: int = PER_ROW,
    column_heads: Sequence[Sequence[Caption]] = (),
    row_heads: Sequence[Caption] = (),
    enlarge: bool = True,
    marks: Sequence[Caption | None] = (),
) -> Tensor:
    """Tiles in rows of ``per_row``, each with its lines of text below, under a title and a colour scale.

    Args:
        images: ``(N, 3, H, W)`` tiles in [0, 1] (see :func:`base`), or ``(N, H', W', 3)`` uint8 tiles
            already at display size (:func:`display_pixels`, for tiles drawn once and shown many times).
        captions: the lines of text under each tile (none: no text).
        title: lines of text above the sheet.
        legend: the colour scale drawn under the title.
        per_row: tiles per row (fewer if the sheet would be wider than ``CARD_WIDTH``).
        column_heads: lines of text over the columns, each line one text per column.
        row_heads: a line of text over each row.
        enlarge: bring the tiles to their display size (:func:`tile_size`); else draw them as they are.
        marks: a line of text written on each tile's top left corner (None: none), e.g. "no map".

    Returns:
        A ``(3, H', W')`` uint8 image (0-255): it goes to the PNG encoder as it is (converting a float image
        back to bytes cost several times the encoding).
    """
    pixels = images if isinstance(images, np.ndarray) else display_pixels(images, enlarge)
    count, height, width = pixels.shape[:3]
    lines = max((len(c) for c in captions), default=0)
    above = LINE if row_heads else 0
    cell = above + height + lines * LINE + PAD
    columns = max(1, min(per_row, count, (CARD_WIDTH - PAD) // (width + PAD)))
    rows = -(-count // columns)
    heads = PAD + len(title) * LINE + (BAR_HEIGHT + 2 * LINE + PAD if legend else 0)
    top = heads + len(column_heads) * LINE
    canvas = np.full((top + rows * cell, columns * width + (columns + 1) * PAD, 3), 255, dtype=np.uint8)
    corners = []
    for k in range(count):
        row, column = divmod(k, columns)
        x, y = PAD + column * (width + PAD), top + row * cell + above
        canvas[y : y + height, x : x + width] = pixels[k]
        corners.append((x, y + height))
    room = canvas.shape[1] - 2 * PAD
    for i, line in enumerate(title):
        write_text(canvas, (PAD, PAD + i * LINE), line, room)
    if legend is not None:
        _draw_legend(canvas, (PAD, PAD + len(title) * LINE), room, legend)
    for i, texts in enumerate(column_heads):
        for column, line in enumerate(texts[:columns]):
            write_text(canvas, (PAD + column * (width + PAD), heads + i * LINE), line, width)
    for row, line in enumerate(row_heads[:rows]):
        write_text(canvas, (PAD, top + row * cell), line, room)
    for (x, y), below in zip(corners, captions):
        for i, line in enumerate(below):
            write_text(canvas, (x, y + i * LINE), line, width)
    for (x, y), mark in zip(corners, marks):
        if mark:
            write_text(canvas, (x + 2, y - height + 2), mark, width - 4)
    return torch.from_numpy(canvas).permute(2, 0, 1)


def _draw_legend(canvas: np.ndarray, at: tuple[int, int], width: int, legend: Legend) -> None:
    """The colour bar, its end values (and 0 in the middle of a diverging one), and what it means."""
    x, y = at
    bar = _colormap(SIGNED_CMAP if legend.signed else UNSIGNED_CMAP)[torch.linspace(0, 255, width).round().long()]
    canvas[y : y + BAR_HEIGHT, x : x + width] = (bar * 255).round().to(torch.uint8).numpy()
    low, high = legend.ends
    below = y + BAR_HEIGHT + 1
    write_text(canvas, (x, below), (low, MUTED), width)
    write_text(canvas, (x + width - text_width(high) - 2, below), (high, MUTED), width)
    if legend.signed:
        write_text(canvas, (x + (width - text_width("0")) / 2, below), ("0", MUTED), width)
    write_text(canvas, (x, below + LINE), legend.meaning, width)


def value_text(value: float) -> str:
    """A scale value in few characters: ``0.021``, ``3.1e-05``."""
    return f"{value:.2g}"


def figure_to_tensor(figure: Figure) -> Tensor:
    """Render ``figure`` with Agg into a ``(3, H, W)`` uint8 image, ready for the PNG encoder."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = torch.from_numpy(np.asarray(canvas.buffer_rgba()).copy())
    return rgba[..., :3].permute(2, 0, 1)
