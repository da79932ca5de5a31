"""Explanation metrics: infidelity and max-sensitivity, batched over perturbation samples.

Both metrics look at ``S`` perturbed copies of a batch of ``n`` examples.  The
copies arrive stacked example-major (row ``i * S + s`` is sample ``s`` of
example ``i``: the reference's layout, in which the perturbations were drawn),
already drawn, so the result does not depend on how the work is split into
forwards: ``samples_per_forward`` only bounds memory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attribution._canonical import Objective

Explain = Callable[[tuple[Tensor, ...], int], tuple[Tensor, ...]]
"""``explain(rows, repeats)``: explanations of ``repeats`` copies of each example, stacked example-major."""


def _chunks(total: int, per_chunk: int | None) -> list[tuple[int, int]]:
    """Consecutive ``(lo, hi)`` ranges over ``range(total)`` of at most ``per_chunk`` items."""
    size = total if per_chunk is None else max(1, per_chunk)
    return [(lo, min(total, lo + size)) for lo in range(0, total, size)]


def _copies(rows: tuple[Tensor, ...], n: int, lo: int, hi: int) -> tuple[Tensor, ...]:
    """Copies ``lo`` to ``hi`` of each of ``n`` examples from an example-major stack, example-major
    (a view when they are all the copies)."""
    return tuple(_by_example(r, n)[:, lo:hi].reshape(n * (hi - lo), *r.shape[1:]) for r in rows)


def _repeat_major(rows: tuple[Tensor, ...], n: int, lo: int, hi: int) -> tuple[Tensor, ...]:
    """Copies ``lo`` to ``hi`` of each of ``n`` examples from an example-major stack, as the repeat-major
    batch that an :class:`~attribution._canonical.Objective` evaluates."""
    return tuple(_by_example(r, n)[:, lo:hi].transpose(0, 1).reshape(n * (hi - lo), *r.shape[1:]) for r in rows)


def _by_example(rows: Tensor, n: int) -> Tensor:
    """An example-major stack seen as ``(n, copies, ...)``."""
    return rows.reshape(n, rows.shape[0] // n, *rows.shape[1:])


def output_changes(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    perturbed_inputs: tuple[Tensor, ...],
    n_samples: int,
    samples_per_forward: int | None = None,
) -> Tensor:
    """``f(x) - f(x - I)`` for every perturbed copy, ``(n, S)``: what infidelity compares the attributions
    with, the same for every explanation of one batch and target.  The unperturbed batch is evaluated as one
    more copy in front of the perturbed ones, so ``f(x)`` costs no forward of its own."""
    n = inputs[0].shape[0]
    outputs = []
    with torch.inference_mode():
        for lo, hi in _chunks(n_samples + 1, samples_per_forward):
            perturbed = _repeat_major(perturbed_inputs, n, max(lo - 1, 0), hi - 1)
            rows = tuple(torch.cat([x, p]) for x, p in zip(inputs, perturbed)) if lo == 0 else perturbed
            outputs.append(objective(rows, hi - lo))
    values = torch.cat(outputs).view(n_samples + 1, n)
    return (values[0] - values[1:]).T


def infidelity_of(
    attributions: tuple[Tensor, ...], perturbations: tuple[Tensor, ...], changes: Tensor, normalize: bool = False
) -> Tensor:
    """Infidelity per example from the output ``changes`` (:func:`output_changes`) under ``perturbations``.

    With ``normalize`` the attributions are first scaled by the least-squares ``beta = E[ab] / E[a^2]`` per
    example; the error is then computed directly as ``E[(beta a - b)^2]``, which (unlike the expanded
    polynomial) can never come out negative.
    """
    n, n_samples = changes.shape
    dots = sum((p.reshape(n, n_samples, -1) * a.reshape(n, 1, -1)).sum(-1) for p, a in zip(perturbations, attributions))
    dots = dots.to(changes)
    if normalize:
        squares = (dots * dots).sum(1, keepdim=True)
        beta = (dots * changes).sum(1, keepdim=True) / torch.where(squares == 0, torch.ones_like(squares), squares)
        dots = beta * dots
    return (dots - changes).pow(2).mean(1)


def vector_norm(rows: Tensor, norm_ord: str | float) -> Tensor:
    """The norm of each row of a 2-D (or the last dim of any) tensor; ``"fro"`` is the 2-norm."""
    return torch.linalg.vector_norm(rows, ord=2 if norm_ord == "fro" else norm_ord, dim=-1)


def _flatten(explanations: tuple[Tensor, ...], rows: int) -> Tensor:
    """All inputs' explanations of each row side by side: ``(rows, features)``."""
    return torch.cat([e.reshape(rows, -1) for e in explanations], dim=1)


def sensitivity_max(
    explain: Explain,
    inputs: tuple[Tensor, ...],
    perturbed_inputs: tuple[Tensor, ...],
    *,
    n_samples: int,
    norm_ord: str | float = "fro",
    samples_per_forward: int | None = None,
    explanations: tuple[Tensor, ...] | None = None,
) -> Tensor:
    """Largest relative change of the explanation over the perturbed copies.

    ``max_s ||e(x_s) - e(x)|| / ||e(x)||`` per example, the norm taken over
    all inputs' explanations together; an explanation of norm 0 divides by 1
    (so its sensitivity is the absolute change).

    Args:
        explain: explanations of ``repeats`` copies of each example, stacked
            example-major, as a tuple with one tensor per input and
            ``n * repeats`` rows each.
        inputs: the unperturbed batch (``n`` rows per input).
        perturbed_inputs: ``n * n_samples`` rows per input, example-major.
        n_samples: ``S``, the number of perturbed copies.
        norm_ord: ``"fro"`` or a vector norm order (as ``torch.linalg.vector_norm``).
        samples_per_forward: copies per ``explain`` call (None: all in one call).
        explanations: ``e(x)``, the explanations of ``inputs`` when they are
            already known (``n`` rows per tensor); None explains them first.

    Returns:
        One sensitivity value per example, shape ``(n,)``.
    """
    n = inputs[0].shape[0]
    reference = _flatten(explain(inputs, 1) if explanations is None else explanations, n)
    scale = vector_norm(reference, norm_ord)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    largest: Tensor | None = None
    for lo, hi in _chunks(n_samples, samples_per_forward):
        copies = hi - lo
        explained = _flatten(explain(_copies(perturbed_inputs, n, lo, hi), copies), n * copies)
        change = vector_norm(explained.view(n, copies, -1) - reference.to(explained)[:, None], norm_ord).amax(1)
        largest = change if largest is None else torch.maximum(largest, change)
    return largest / scale.to(largest)
