"""Token attributions as coloured text: an HTML page or a matplotlib figure.

Each token is shaded by its score, green for evidence for the target and red
against it, scaled per sentence by its largest magnitude.

    >>> import torch
    >>> from attribution.text_visualization import token_html
    >>> html = token_html([["a", "great", "film"]], torch.tensor([[0.0, 0.9, 0.1]]))
    >>> html.startswith("<!doctype html>"), html.count("<span")  # a page, one span per token
    (True, 3)
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from attribution._internal.checks import ArgumentError

POSITIVE_RGB = (0.0, 0.6, 0.2)
NEGATIVE_RGB = (0.8, 0.1, 0.1)


def _normalised(scores: Tensor | np.ndarray, tokens: Sequence[Sequence[str]]) -> np.ndarray:
    """Scores in [-1, 1], each row divided by its largest magnitude; checks the shapes match."""
    values = scores.detach().float().cpu().numpy() if isinstance(scores, Tensor) else np.asarray(scores, dtype=float)
    if values.ndim != 2 or values.shape[0] != len(tokens) or any(len(t) > values.shape[1] for t in tokens):
        raise ArgumentError(
            f"scores: expected one row per sentence and one score per token, got shape {values.shape} "
            f"for {len(tokens)} sentences of up to {max((len(t) for t in tokens), default=0)} tokens"
        )
    scale = np.abs(values).max(axis=1, keepdims=True)
    return values / np.where(scale > 0, scale, 1.0)


def _colour(weight: float) -> tuple[float, float, float]:
    """White blended toward green (positive) or red (negative) by ``|weight|``."""
    base = POSITIVE_RGB if weight >= 0 else NEGATIVE_RGB
    red, green, blue = (1 - abs(weight) * (1 - c) for c in base)
    return red, green, blue


def token_html(
    tokens: Sequence[Sequence[str]], scores: Tensor | np.ndarray, titles: Sequence[str] | None = None
) -> str:
    """An HTML page with one line per sentence, tokens shaded by score (hover shows the value).

    Args:
        tokens: the words of each sentence.
        scores: ``(N, T)`` attribution per token (extra positions, e.g. padding, are ignored).
        titles: an optional caption per sentence (e.g. label and prediction).

    Returns:
        A complete HTML document.
    """
    weights = _normalised(scores, tokens)
    raw = scores.detach().float().cpu().numpy() if isinstance(scores, Tensor) else np.asarray(scores, dtype=float)
    lines = []
    for i, words in enumerate(tokens):
        spans = []
        for j, word in enumerate(words):
            r, g, b = (round(255 * c) for c in _colour(float(weights[i, j])))
            spans.append(
                f'<span title="{raw[i, j]:+.4f}" style="background: rgb({r},{g},{b}); padding: 2px 3px; '
                f'margin: 1px; border-radius: 3px">{html_lib.escape(word)}</span>'
            )
        caption = f"<div style='color:#555;font-size:80%'>{html_lib.escape(titles[i])}</div>" if titles else ""
        lines.append(f"<div style='margin: 10px 0'>{caption}{' '.join(spans)}</div>")
    legend = "<p>Green: evidence for the target class; red: against it; shade: share of the sentence's largest.</p>"
    body = legend + "".join(lines)
    return f"<!doctype html><html><meta charset='utf-8'><body style='font-family: sans-serif'>{body}</body></html>"


def token_figure(
    tokens: Sequence[Sequence[str]], scores: Tensor | np.ndarray, titles: Sequence[str] | None = None
) -> Figure:
    """The same as :func:`token_html`, drawn as a matplotlib figure (no pyplot state)."""
    weights = _normalised(scores, tokens)
    longest = max((sum(len(w) + 1 for w in words) for words in tokens), default=1)
    figure = Figure(figsize=(min(20.0, 1.0 + 0.11 * longest), 0.3 + 0.45 * len(tokens) * (2 if titles else 1)), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    rows = len(tokens) * (2 if titles else 1)
    for i, words in enumerate(tokens):
        y = 1 - (i * (2 if titles else 1) + 0.7) / rows
        if titles:
            axes.text(0.01, y, titles[i], fontsize=8, color="#555555", transform=axes.transAxes, va="center")
            y -= 1 / rows
        x = 0.01
        for j, word in enumerate(words):
            axes.text(
                x, y, word, fontsize=10, family="monospace", transform=axes.transAxes, va="center",
                bbox={"facecolor": _colour(float(weights[i, j])), "edgecolor": "none", "pad": 1.5},
            )  # fmt: skip
            x += (len(word) + 1) / longest * 0.98
    return figure
