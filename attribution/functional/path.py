"""Path methods: gradients integrated or sampled between a baseline and the input."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from attribution._internal.autograd import gradients
from attribution._internal.canonical import Objective
from attribution._internal.chunking import run_chunked

INTEGRATION_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def integration_nodes(n_steps: int, method: str = "gausslegendre") -> tuple[Tensor, Tensor]:
    """Points ``alpha`` in [0, 1] and weights of a quadrature rule with ``n_steps`` nodes.

    The weights of every rule sum to 1, so a constant gradient integrates
    exactly.  (The reference implementation's trapezoid weights sum to
    ``(n - 1) / n``; ours are the textbook rule.)

    Returns:
        ``(alphas, weights)``, float64 tensors of length ``n_steps``.
    """
    k = torch.arange(n_steps, dtype=torch.float64)
    if method == "gausslegendre":
        nodes, gauss_weights = np.polynomial.legendre.leggauss(n_steps)
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(gauss_weights / 2)
    if method == "riemann_trapezoid":
        weights = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return k / (n_steps - 1), weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (k + offset) / n_steps, torch.full((n_steps,), 1.0 / n_steps, dtype=torch.float64)


def _leading(t: Tensor, dims: int) -> Tensor:
    """View a 1-D tensor so that it broadcasts over ``dims`` trailing dimensions."""
    return t.view(-1, *([1] * dims))


def endpoint_outputs(
    objective: Objective, starts: tuple[Tensor, ...], ends: tuple[Tensor, ...], repeats: int = 1
) -> tuple[Tensor, Tensor]:
    """Target values at the path's two ends, from one forward without autograd."""
    with torch.inference_mode():
        rows = tuple(torch.cat([s.expand_as(e), e]) for s, e in zip(starts, ends))
        out = objective(rows, 2 * repeats)
    start, end = out.chunk(2)
    return start, end


def convergence_delta(attrs: tuple[Tensor, ...], start_out: Tensor, end_out: Tensor) -> Tensor:
    """Per row: the attributions' total minus ``f(end) - f(start)`` (0 for a complete method)."""
    total = sum(a.reshape(a.shape[0], -1).sum(1) for a in attrs)
    return total - (end_out - start_out).to(total)


def integrated_gradients(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """Integrated gradients along the straight path from ``baselines`` to ``inputs``.

    Steps are evaluated in chunks sized to a memory budget, and a running
    weighted sum of the gradients is kept instead of every step's gradient.

    Returns:
        ``(attributions, delta)``; ``delta`` is None unless requested.
    """
    n = inputs[0].shape[0]
    alphas, weights = integration_nodes(n_steps, method)
    inputs = tuple(x.detach() for x in inputs)
    diffs = tuple(x - b for x, b in zip(inputs, baselines))
    totals = [torch.zeros_like(x) for x in inputs]
    known_ends: dict[float, Tensor] = {}

    def integrate(lo: int, hi: int) -> None:
        steps = hi - lo
        points = tuple(
            (b.unsqueeze(0) + _leading(alphas[lo:hi].to(x), x.dim()) * d.unsqueeze(0)).reshape(steps * n, *x.shape[1:])
            for x, b, d in zip(inputs, baselines, diffs)
        )
        row_weights = weights[lo:hi].to(inputs[0].device).repeat_interleave(n)
        grads, outputs = gradients(objective, points, repeats=steps, row_weights=row_weights)
        for total, g in zip(totals, grads):
            total += g.view(steps, n, *g.shape[1:]).sum(0)
        for j, alpha in enumerate(alphas[lo:hi].tolist()):
            if alpha in (0.0, 1.0):  # the path's ends are free when the rule evaluates them
                known_ends[alpha] = outputs.view(steps, n)[j]

    run_chunked(n_steps, integrate, rows_per_item=n, internal_batch_size=internal_batch_size, device=inputs[0].device)
    attrs = tuple(t * d for t, d in zip(totals, diffs)) if multiply_by_inputs else tuple(totals)
    if not return_convergence_delta:
        return attrs, None
    if len(known_ends) == 2:
        start_out, end_out = known_ends[0.0], known_ends[1.0]
    else:
        start_out, end_out = endpoint_outputs(objective, baselines, inputs)
    return attrs, convergence_delta(attrs, start_out, end_out)


def gradient_shap_draws(
    inputs: tuple[Tensor, ...], baseline_distribution: tuple[Tensor, ...], n_samples: int, stdevs: tuple[float, ...]
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], Tensor]:
    """GradientSHAP's random draws for ``n_samples`` samples of every example, repeat-major.

    Baseline rows and path points are drawn before the noise, so the same seed
    picks the same baselines and points whatever ``stdevs`` is.  Every draw
    comes from torch's global generator, up front (results do not depend on
    how the work is chunked).

    Returns:
        ``(noisy_inputs, baselines, alphas)``: per input ``n_samples * n`` rows
        of ``x + N(0, stdev^2)`` and of drawn baselines, and one alpha per row.
    """
    n = inputs[0].shape[0]
    rows = n_samples * n
    device = inputs[0].device
    pick = torch.randint(baseline_distribution[0].shape[0], (rows,), device=device)
    starts = tuple(b[pick] for b in baseline_distribution)
    alphas = torch.rand(rows, device=device, dtype=inputs[0].dtype)
    noisy = []
    for x, stdev in zip(inputs, stdevs):
        repeated = x.detach().repeat(n_samples, *([1] * (x.dim() - 1)))
        noisy.append(repeated + stdev * torch.randn_like(repeated) if stdev > 0 else repeated)
    return tuple(noisy), starts, alphas


def gradient_shap(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baseline_distribution: tuple[Tensor, ...],
    *,
    n_samples: int = 5,
    stdevs: tuple[float, ...] = (0.0,),
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    internal_batch_size: int | None = None,
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """Expected ``gradient * (input - baseline)`` at random points between them.

    Each of the ``n_samples`` samples per example adds Gaussian noise of
    ``stdevs`` to the input, draws a baseline from the distribution and a
    point uniformly on the segment between them (all drawn up front from torch's global generator,
    baselines and points before the noise, so results do not depend on how the work is chunked).

    Returns:
        ``(attributions, delta)``; ``delta`` has one entry per (example,
        sample), example-major, or is None unless requested.
    """
    n = inputs[0].shape[0]
    device = inputs[0].device
    noisy, starts, alphas = gradient_shap_draws(inputs, baseline_distribution, n_samples, stdevs)
    totals = [torch.zeros_like(x) for x in inputs]
    row_deltas: list[Tensor] = []

    def sample(lo: int, hi: int) -> None:
        part = slice(lo * n, hi * n)
        ends = tuple(x[part] for x in noisy)
        begins = tuple(b[part] for b in starts)
        points = tuple(b + _leading(alphas[part].to(e), e.dim() - 1) * (e - b) for b, e in zip(begins, ends))
        grads, _ = gradients(objective, points, repeats=hi - lo)
        contribs = tuple(g * (e - b) for g, e, b in zip(grads, ends, begins)) if multiply_by_inputs else grads
        for total, c in zip(totals, contribs):
            total += c.view(hi - lo, n, *c.shape[1:]).sum(0)
        if return_convergence_delta:
            row_deltas.append(convergence_delta(contribs, *endpoint_outputs(objective, begins, ends, hi - lo)))

    run_chunked(n_samples, sample, rows_per_item=n, internal_batch_size=internal_batch_size, device=device)
    attrs = tuple(t / n_samples for t in totals)
    if not return_convergence_delta:
        return attrs, None
    return attrs, torch.cat(row_deltas).view(n_samples, n).t().reshape(-1)
