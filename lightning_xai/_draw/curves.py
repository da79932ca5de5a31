"""Small line plots of metric curves against the global step, drawn straight into uint8 pixels.

The timeline puts one under its mosaic per metric.  They were matplotlib figures, which took about 150 ms
each to build and draw at the end of every fit; these take about a millisecond, with the sheets' font.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_xai._draw import render

PER_ROW = 2
HEIGHT = 115
"""Height of one plot, pixels."""
LEFT = 40
"""Room left of the axes for the value labels, pixels."""
TICKS = 3
"""Round values marked on each axis: about this many."""
LINE_COLOUR = (31, 119, 180)
AXIS_COLOUR = (150, 150, 150)
GRID_COLOUR = (228, 228, 228)


def curves_image(steps: Sequence[int], curves: Mapping[str, Sequence[float | None]], width: int) -> Tensor:
    """One plot per metric, ``PER_ROW`` a row, ``width`` pixels wide in all: a ``(3, H, width)`` uint8 image.

    Args:
        steps: the global step of each logged point.
        curves: metric name to one value per point (``None`` where missing: the line bridges it).
    """
    panel = width // PER_ROW
    plots = [curve_plot(name, steps, values, panel) for name, values in curves.items()]
    plots += [np.full_like(plots[0], 255)] * (-len(plots) % PER_ROW)
    rows = [np.concatenate(plots[i : i + PER_ROW], axis=1) for i in range(0, len(plots), PER_ROW)]
    canvas = np.full((HEIGHT * len(rows), width, 3), 255, dtype=np.uint8)
    canvas[:, : panel * PER_ROW] = np.concatenate(rows, axis=0)
    return torch.from_numpy(canvas).permute(2, 0, 1)


def curve_plot(name: str, steps: Sequence[int], values: Sequence[float | None], width: int) -> np.ndarray:
    """``name``'s values against ``steps`` in a ``(HEIGHT, width, 3)`` uint8 panel: title, axes with round
    values marked, the line with a dot per point."""
    canvas = np.full((HEIGHT, width, 3), 255, dtype=np.uint8)
    known = [(step, float(value)) for step, value in zip(steps, values) if value is not None]
    line = render.LINE
    top, bottom, right = line + line // 2 + 2, HEIGHT - 2 * line - 2, width - 16
    render.write_text(canvas, ((width - render.text_width(name)) / 2, 0), name, width)
    render.write_text(canvas, ((LEFT + right - render.text_width("step")) / 2, bottom + line), "step", width)
    if not known:
        return canvas
    x_low, x_high = _span([steps[0], steps[-1]], pad=0.0)
    y_low, y_high = _span([value for _, value in known], pad=0.08)

    def to_x(step: float) -> float:
        return LEFT + (step - x_low) / (x_high - x_low) * (right - LEFT)

    def to_y(value: float) -> float:
        return bottom - (value - y_low) / (y_high - y_low) * (bottom - top)

    for value in _round_values(y_low, y_high):
        y, label = round(to_y(value)), f"{value:.3g}"
        canvas[y, LEFT:right] = GRID_COLOUR
        render.write_text(canvas, (LEFT - 3 - render.text_width(label), y - line // 2), (label, render.MUTED), LEFT)
    for step in _round_values(x_low, x_high):
        x, label = round(to_x(step)), f"{step:.0f}"
        canvas[bottom : bottom + 3, x] = AXIS_COLOUR
        render.write_text(canvas, (x - render.text_width(label) / 2, bottom + 2), (label, render.MUTED), width)
    canvas[top:bottom, LEFT] = AXIS_COLOUR
    canvas[bottom, LEFT:right] = AXIS_COLOUR
    points = np.array([(to_x(step), to_y(value)) for step, value in known])
    _polyline(canvas, points, LINE_COLOUR)
    for x, y in points.round().astype(int):
        canvas[y - 1 : y + 2, x - 1 : x + 2] = LINE_COLOUR
    return canvas


def _span(values: list[float], pad: float) -> tuple[float, float]:
    """The range an axis shows: the values' own, widened by ``pad`` of it; one value gets room around it."""
    low, high = min(values), max(values)
    if high - low <= 1e-12 * max(1.0, abs(high)):
        margin = 0.5 * max(abs(high), 1e-3) if pad else 0.5
        return low - margin, high + margin
    margin = pad * (high - low)
    return low - margin, high + margin


def _round_values(low: float, high: float) -> list[float]:
    """At most ``TICKS`` + 1 evenly spaced round values (multiples of 1, 2 or 5 times a power of ten) in
    [``low``, ``high``]."""
    rough = (high - low) / TICKS
    power = 10 ** math.floor(math.log10(rough))
    spacing = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    first = math.ceil(low / spacing - 1e-9)
    return [k * spacing for k in range(first, math.floor(high / spacing + 1e-9) + 1)]


def _polyline(canvas: np.ndarray, points: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Two-pixel-wide straight segments through ``points`` (``(P, 2)`` x, y), sampled at half-pixel spacing."""
    if len(points) < 2:
        return
    samples = []
    for start, end in zip(points[:-1], points[1:]):
        count = int(np.abs(end - start).max() * 2) + 2
        samples.append(start + np.linspace(0, 1, count)[:, None] * (end - start))
    xy = np.concatenate(samples)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        x = np.clip(np.floor(xy[:, 0]).astype(int) + dx, 0, canvas.shape[1] - 1)
        y = np.clip(np.floor(xy[:, 1]).astype(int) + dy, 0, canvas.shape[0] - 1)
        canvas[y, x] = colour
