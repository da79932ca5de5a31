"""The language-model monitor's pictures of a point: every probe prompt as coloured text (one sheet, an image)
and the attributions as HTML tables (TensorBoard's text tab keeps ``table``, ``strong`` and ``em`` and drops
styles, so the largest magnitude per row is in bold instead of a colour)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attribution.text_visualization import token_figure
from lightning_xai._draw import render


@dataclass(frozen=True)
class PromptRows:
    """What is shown of one prompt: its tokens, its target's tokens, the attributions, and its caption values."""

    tokens: list[str]
    target: list[str]
    seq_attr: Tensor
    """``(n_tokens,)`` attribution to the whole target."""
    token_attr: Tensor | None
    """``(n_target, n_tokens)`` attribution to each target token, or None."""
    log_prob: float
    share: float | None
    mask: Tensor | None


def _caption(index: int, rows: PromptRows, target_token: str | None = None) -> str:
    wanted = " ".join(rows.target)
    text = f"#{index} -> {wanted!r}  log p = {rows.log_prob:.3f}"
    if rows.share is not None:
        text += f"  mask share = {rows.share:.2f}"
    return text if target_token is None else f"#{index}, target token {target_token!r}"


def token_sheet(prompts: Sequence[PromptRows], per_token: bool) -> Tensor:
    """One image of every prompt, its tokens shaded by attribution (green: raises the target's log-probability,
    red: lowers it; scaled per line), captioned with the target, its log-probability and the mask share; with
    ``per_token`` a line per target token follows each prompt.  ``(3, H, W)`` floats in [0, 1]."""
    words: list[list[str]] = []
    scores: list[list[float]] = []
    titles: list[str] = []
    for i, rows in enumerate(prompts):
        marked = [f"[{t}]" if rows.mask is not None and bool(rows.mask[j]) else t for j, t in enumerate(rows.tokens)]
        words.append(marked)
        scores.append(rows.seq_attr.float().tolist())
        titles.append(_caption(i, rows))
        if per_token and rows.token_attr is not None and len(rows.target) > 1:
            for k, token in enumerate(rows.target):
                words.append(marked)
                scores.append(rows.token_attr[k].float().tolist())
                titles.append(_caption(i, rows, token))
    width = max(len(row) for row in scores)
    padded = [row + [0.0] * (width - len(row)) for row in scores]
    return render.figure_to_tensor(token_figure(words, torch.tensor(padded, dtype=torch.float32), titles))


def _cells(values: Sequence[float]) -> list[str]:
    top = max(range(len(values)), key=lambda j: abs(values[j])) if values else -1
    return [f"<strong>{v:+.4f}</strong>" if j == top else f"{v:+.4f}" for j, v in enumerate(values)]


def token_table_html(index: int, rows: PromptRows, per_token: bool) -> str:
    """An HTML table of one prompt: its tokens as columns (watched tokens in italics), a row for the whole
    target and, with ``per_token``, one per target token; the largest magnitude of each row in bold."""
    head = "".join(
        f"<th><em>{html.escape(t)}</em></th>"
        if rows.mask is not None and bool(rows.mask[j])
        else f"<th>{html.escape(t)}</th>"
        for j, t in enumerate(rows.tokens)
    )
    lines = [f"<tr><th>target</th>{head}</tr>"]
    whole = html.escape(" ".join(rows.target))
    lines.append(f"<tr><td>{whole}</td>{''.join(f'<td>{c}</td>' for c in _cells(rows.seq_attr.tolist()))}</tr>")
    if per_token and rows.token_attr is not None:
        for k, token in enumerate(rows.target):
            cells = "".join(f"<td>{c}</td>" for c in _cells(rows.token_attr[k].tolist()))
            lines.append(f"<tr><td>{html.escape(token)}</td>{cells}</tr>")
    caption = html.escape(_caption(index, rows))
    return f"<p>{caption}</p>\n\n<table>{''.join(lines)}</table>"


def point_html(prompts: Sequence[PromptRows], per_token: bool, title: str) -> str:
    """Every prompt's table under ``title``: one text entry of a point."""
    tables = "\n\n".join(token_table_html(i, rows, per_token) for i, rows in enumerate(prompts))
    return f"<p>{html.escape(title)}</p>\n\n{tables}"
