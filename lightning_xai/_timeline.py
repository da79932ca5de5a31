"""The end-of-fit timeline summary: each probe sample's heat map across the logged epochs, with metric curves.

Overlays are computed in torch with :mod:`lightning_xai._render`; matplotlib only lays them out, through
``matplotlib.figure.Figure`` directly so that pyplot's global figure registry is never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor
from torchvision.utils import make_grid

from lightning_xai import _render

CELL_INCHES = 1.2
CURVE_INCHES = 2.0
DPI = 80
"""Legible 8-point labels at a third fewer pixels than matplotlib's default (rendering and PNG time)."""
PADDING = 2
"""Pixels between the cells of the mosaic."""
MAX_FIGSIZE = (20.0, 24.0)
"""Width and height caps in inches: a 16-sample, 12-epoch grid with curves stays legible yet bounded."""


def timeline_figure(
    method: str,
    images: Tensor,
    thumbnails: Tensor,
    epochs: Sequence[int],
    curves: Mapping[str, Sequence[float | None]],
    max_columns: int = 12,
) -> Figure:
    """A grid of overlays (rows: probe samples, columns: logged epochs) above one line plot per metric.

    Args:
        method: attribution method name, used as the suptitle.
        images: ``(N, 3, H, W)`` display images in [0, 1] (what ``_render.displayable`` returns).
        thumbnails: ``(E, N, h, w)`` heat maps in [0, 1], one slice per logged epoch.
        epochs: the ``E`` logged epochs.
        curves: metric name to one value per logged epoch (``None`` where missing); all-``None`` curves are skipped.
        max_columns: at most this many epoch columns (at least 2); evenly spaced, always the first and last.

    Returns:
        The figure, not registered with pyplot.

    Raises:
        ValueError: if the shapes, epochs and curves disagree, or ``max_columns`` < 2.

    Example:
        >>> save_timeline(timeline_figure("saliency", images, thumbs, [0, 1, 2], {"infidelity": [0.3, 0.2, None]}),
        ...               "timeline.png")  # doctest: +SKIP
    """
    _check(images, thumbnails, epochs, curves, max_columns)
    columns = _pick_columns(len(epochs), max_columns)
    samples = images.shape[0]
    maps = _render.enlarge(thumbnails[columns].float().flatten(0, 1), _render.THUMBNAIL)  # (C*N, h', w')
    small = F.interpolate(images.float().cpu(), size=maps.shape[-2:], mode="bilinear", align_corners=False)
    cells = _render.overlay(small.repeat(len(columns), 1, 1, 1), maps).clamp(0, 1)
    cells = cells.view(len(columns), samples, *cells.shape[1:])
    shown = {name: values for name, values in curves.items() if any(v is not None for v in values)}

    ncols, grid_h = len(columns) + 1, CELL_INCHES * samples
    curve_h = CURVE_INCHES if shown else 0.0
    width = min(MAX_FIGSIZE[0], max(6.0, CELL_INCHES * ncols + 0.6))
    height = min(MAX_FIGSIZE[1], grid_h + curve_h + 0.9)
    figure = Figure(figsize=(width, height), dpi=DPI)
    outer = figure.add_gridspec(
        2 if shown else 1,
        1,
        height_ratios=[grid_h, curve_h] if shown else None,
        left=0.45 / width,
        right=1 - 0.15 / width,
        top=1 - 0.8 / height,  # room for the suptitle above the column titles
        bottom=(0.45 if shown else 0.1) / height,
        hspace=1.2 / (grid_h + curve_h),  # about 0.6 inch between the grid and the curves
    )
    _draw_mosaic(figure.add_subplot(outer[0]), small, cells, ["input"] + [f"epoch {epochs[i]}" for i in columns])
    if shown:
        curve_grid = outer[1].subgridspec(1, len(shown), wspace=0.35)
        for slot, (name, values) in enumerate(shown.items()):
            axes = figure.add_subplot(curve_grid[0, slot])
            known = [(epoch, float(v)) for epoch, v in zip(epochs, values) if v is not None]  # bridge missing values
            axes.plot(*zip(*known), marker="o", markersize=3)
            axes.set_title(name, fontsize=9)
            axes.set_xlabel("epoch", fontsize=8)
            axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
            axes.tick_params(labelsize=7)
            axes.grid(alpha=0.3)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    figure.suptitle(method, y=1 - 0.12 / height, va="top")
    return figure


def save_timeline(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` (format from its suffix), creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_figure(path)
    return path


def _draw_mosaic(axes: Axes, inputs: Tensor, cells: Tensor, column_titles: list[str]) -> None:
    """One image for the whole grid: a single axes draws in a fraction of the time of one axes per cell."""
    samples, columns = inputs.shape[0], len(column_titles)
    tiles = torch.cat([inputs[:, None], cells.transpose(0, 1)], dim=1).flatten(0, 1)  # row-major: sample, column
    mosaic = make_grid(tiles, nrow=columns, padding=PADDING, pad_value=1.0)
    height, width = tiles.shape[-2:]
    axes.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
    axes.set_xticks([PADDING + c * (width + PADDING) + width / 2 for c in range(columns)], column_titles, fontsize=8)
    axes.set_yticks(
        [PADDING + r * (height + PADDING) + height / 2 for r in range(samples)],
        [f"sample {r}" for r in range(samples)],
        fontsize=8,
    )
    axes.xaxis.tick_top()
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)


def _pick_columns(count: int, max_columns: int) -> list[int]:
    """Indices of at most ``max_columns`` evenly spaced epochs, first and last included."""
    if count <= max_columns:
        return list(range(count))
    return torch.linspace(0, count - 1, max_columns).round().long().tolist()  # step > 1, so no duplicates


def _check(
    images: Tensor, thumbnails: Tensor, epochs: Sequence[int], curves: Mapping[str, Sequence], max_columns: int
) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (N, 3, H, W) display images, got shape {tuple(images.shape)}")
    if thumbnails.dim() != 4 or thumbnails.shape[1] != images.shape[0] or thumbnails.shape[0] == 0:
        raise ValueError(
            f"thumbnails: expected (E, N, h, w) with E >= 1 and N = {images.shape[0]} samples, "
            f"got shape {tuple(thumbnails.shape)}"
        )
    if len(epochs) != thumbnails.shape[0]:
        raise ValueError(f"epochs: expected one per thumbnail slice ({thumbnails.shape[0]}), got {len(epochs)}")
    for name, values in curves.items():
        if len(values) != len(epochs):
            raise ValueError(f"curves[{name!r}]: expected {len(epochs)} values (one per epoch), got {len(values)}")
    if isinstance(max_columns, bool) or not isinstance(max_columns, int) or max_columns < 2:
        raise ValueError(f"max_columns: expected an int >= 2 (first and last epochs are shown), got {max_columns!r}")
