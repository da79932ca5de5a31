"""The end-of-fit timeline: each probe sample's heat map at a few logged points, above the metric curves.

It is laid out for TensorBoard's default image card (``render.CARD_WIDTH``, where it shows at about its
own size): one row per sample (the input, then up to ``COLUMNS`` points, evenly spaced, the first and the
latest included), then one small plot per metric against the global step.  The mosaic is drawn with
:mod:`lightning_xai._draw.render`, the curves with :mod:`lightning_xai._draw.curves`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lightning_xai._compute.heat import THUMBNAIL, is_signed
from lightning_xai._compute.history import Point
from lightning_xai._draw import render
from lightning_xai._draw.curves import curves_image

COLUMNS = 4
"""Logged points shown per sample (the filmstrips show up to ``render.MAX_FRAMES``)."""
CELL = THUMBNAIL
"""Side of a cell, pixels: the thumbnails' own size."""


def timeline_image(
    method: str,
    images: Tensor,
    thumbnails: Tensor,
    points: Sequence[Point],
    curves: Mapping[str, Sequence[float | None]],
    row_labels: Sequence[render.Caption] | None = None,
    max_columns: int = COLUMNS,
    problems: Sequence[Sequence[str | None]] | None = None,
) -> Tensor:
    """The timeline of one method as a ``(3, H, W)`` image in [0, 1].

    Args:
        method: attribution method name, the title.
        images: ``(N, 3, H, W)`` display images in [0, 1] (what ``render.displayable`` returns).
        thumbnails: ``(P, N, h, w)`` heat maps (in [-1, 1], or [0, 1] when unsigned), one slice per point.
        points: the ``P`` logged points (global step and epoch).
        curves: metric name to one value per point (``None`` where missing); all-``None`` curves are skipped.
        row_labels: a line over each sample's row (default ``#i``), plain or with its colour.
        max_columns: at most this many points (at least 2); evenly spaced, always the first and the latest.
        problems: per sample and point, why its map failed the monitor's self-check (None: it did not); such a
            cell is a grey tile labelled with the problem.

    Raises:
        ValueError: if the shapes, points and curves disagree, or ``max_columns`` < 2.

    Example:
        >>> import torch
        >>> from lightning_xai._compute.history import Point
        >>> from lightning_xai._draw import render
        >>> images = torch.rand(2, 3, 32, 32)  # two probe samples
        >>> thumbs = torch.rand(3, 2, 64, 64) * 2 - 1  # their signed maps at three points
        >>> points = [Point(step=0, epoch=0), Point(step=10, epoch=0), Point(step=20, epoch=1)]
        >>> curves = {"infidelity": [0.3, 0.2, None]}
        >>> image = timeline_image("saliency", images, thumbs, points, curves)
        >>> image.shape[0], image.dtype, image.shape[2] <= render.CARD_WIDTH  # fits TensorBoard's image card
        (3, torch.uint8, True)
    """
    _check(images, thumbnails, points, curves, max_columns, row_labels)
    columns = render.pick(len(points), max_columns)
    count = images.shape[0]
    maps = thumbnails[columns].float()  # (C, N, h, w)
    signed = is_signed(maps)
    small = render.resize(images.float().cpu(), _cell_size(images.shape[-2:]))
    cells = render.overlay(small.repeat(len(columns), 1, 1, 1), maps.flatten(0, 1), signed)
    cells = cells.view(len(columns), count, *cells.shape[1:]).transpose(0, 1)  # (N, C, 3, h, w)
    tiles = torch.cat([small[:, None], cells], dim=1).flatten(0, 1)
    marks: list[render.Caption | None] = []
    for i in range(count):
        row = problems[i] if problems is not None else [None] * len(points)
        marks += [None] + [
            None if problem is None else (problem, render.WRONG) for problem in (row[c] for c in columns)
        ]
    mosaic = render.sheet(
        tiles,
        title=[method, ("each column (step) on its own scale", render.MUTED)],
        legend=render.Legend(signed, "max", _meaning(signed)),
        per_row=len(columns) + 1,
        column_heads=column_heads([points[c] for c in columns]),
        row_heads=list(row_labels) if row_labels is not None else [f"#{i}" for i in range(count)],
        enlarge=False,
        marks=marks,
    )
    shown = {name: values for name, values in curves.items() if any(v is not None for v in values)}
    if not shown:
        return mosaic
    plots = curves_image([p.step for p in points], shown, mosaic.shape[-1])
    return torch.cat([mosaic, plots], dim=1)


def column_heads(shown: Sequence[Point]) -> tuple[list[render.Caption], list[render.Caption]]:
    """The two lines over the columns: ``input``, then the global step of each point shown; then its epoch."""
    steps = [("input", render.MUTED)] + [f"step {point.step}" for point in shown]
    return steps, [""] + [(f"epoch {point.epoch}", render.MUTED) for point in shown]


def _meaning(signed: bool) -> str:
    return "red: for the explained class, blue: against" if signed else "bright: strong attribution"


def _cell_size(size: Sequence[int]) -> tuple[int, int]:
    height, width = size
    scale = CELL / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _check(
    images: Tensor,
    thumbnails: Tensor,
    points: Sequence[Point],
    curves: Mapping[str, Sequence[float | None]],
    max_columns: int,
    row_labels: Sequence[render.Caption] | None,
) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (N, 3, H, W) display images, got shape {tuple(images.shape)}")
    if thumbnails.dim() != 4 or thumbnails.shape[1] != images.shape[0] or thumbnails.shape[0] == 0:
        raise ValueError(
            f"thumbnails: expected (P, N, h, w) with P >= 1 and N = {images.shape[0]} samples, "
            f"got shape {tuple(thumbnails.shape)}"
        )
    if len(points) != thumbnails.shape[0]:
        raise ValueError(f"points: expected one per thumbnail slice ({thumbnails.shape[0]}), got {len(points)}")
    for name, values in curves.items():
        if len(values) != len(points):
            raise ValueError(f"curves[{name!r}]: expected {len(points)} values (one per point), got {len(values)}")
    if isinstance(max_columns, bool) or not isinstance(max_columns, int) or max_columns < 2:
        raise ValueError(f"max_columns: expected an int >= 2 (first and latest points are shown), got {max_columns!r}")
    if row_labels is not None and len(row_labels) != images.shape[0]:
        raise ValueError(f"row_labels: expected one per sample ({images.shape[0]}), got {len(row_labels)}")
