"""NoiseTunnel: any attribution averaged over noisy copies of the input."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attribution._internal.canonical import repeat_rows

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")

NoisyAttribute = Callable[
    [tuple[Tensor, ...], int, "tuple[Tensor, ...] | None"], "tuple[tuple[Tensor, ...], Tensor | None]"
]
"""``(noisy_inputs, repeats, row_baselines) -> (attributions, delta)`` for ``repeats`` repeat-major copies."""


def _noisy_copies(x: Tensor, stdev: float, repeats: int) -> Tensor:
    """``repeats`` noisy copies of the batch ``x``, stacked repeat-major.

    The noise is drawn example-major (all copies of example 0 first), as the reference draws it, so the
    same seed gives every (example, copy) the same noise as Captum's NoiseTunnel; only the rows are then
    reordered into the core's layout.  A floating input draws its noise even at ``stdev`` 0 (the reference
    does), so that the inputs after it get the reference's draws too.
    """
    n = x.shape[0]
    if not x.is_floating_point() and stdev == 0:
        return repeat_rows(x, repeats)
    noise = torch.randn((n, repeats, *x.shape[1:]), dtype=x.dtype, device=x.device)
    if stdev == 0:
        return repeat_rows(x, repeats)
    # In place on the (example, copy) draw seen as (copy, example): one copy of the data, into the new order.
    return noise.mul_(stdev).transpose(0, 1).add_(x).reshape(repeats * n, *x.shape[1:])


def _row_baselines(
    baselines: tuple[Tensor, ...], n: int, repeats: int, draw_from_distribution: bool
) -> tuple[Tensor, ...]:
    """Baselines for a batch of ``repeats`` noisy copies: drawn per row, or repeated with the batch."""
    if draw_from_distribution:
        pick = torch.randint(baselines[0].shape[0], (n * repeats,), device=baselines[0].device)
        return tuple(b[pick] for b in baselines)
    return tuple(repeat_rows(b, repeats) if b.shape[0] == n else b for b in baselines)


def noise_tunnel(
    attribute: NoisyAttribute,
    inputs: tuple[Tensor, ...],
    *,
    nt_type: str = "smoothgrad",
    nt_samples: int = 5,
    nt_samples_batch_size: int | None = None,
    stdevs: tuple[float, ...] = (1.0,),
    baselines: tuple[Tensor, ...] | None = None,
    draw_baseline_from_distrib: bool = False,
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """Aggregate ``attribute`` over ``nt_samples`` Gaussian-noised copies of the inputs.

    Copies are processed ``nt_samples_batch_size`` at a time (all at once by
    default) while running sums of the attributions and their squares are
    kept, so memory does not grow with ``nt_samples``.  Each batch of copies
    draws its noise as the reference does (example-major, input by input), so
    with the same seed the noisy copies equal Captum's for any batch size.
    Baselines drawn from a distribution come from torch's generator, after
    each batch's noise (the reference draws them with numpy's, and one draw
    serves all its full batches).

    Returns:
        ``(aggregated, delta)``: smoothgrad is the mean, smoothgrad_sq the mean
        of squares, vargrad the variance ``E[a^2] - E[a]^2``; ``delta`` holds
        the wrapped method's deltas example-major (None if it gave none).
    """
    n = inputs[0].shape[0]
    step = nt_samples_batch_size or nt_samples
    sums: list[Tensor] = []
    squares: list[Tensor] = []
    deltas: list[Tensor] = []
    for lo in range(0, nt_samples, step):
        k = min(step, nt_samples - lo)
        noisy = tuple(_noisy_copies(x.detach(), stdev, k) for x, stdev in zip(inputs, stdevs))
        row_baselines = None if baselines is None else _row_baselines(baselines, n, k, draw_baseline_from_distrib)
        attrs, delta = attribute(noisy, k, row_baselines)
        per_sample = [a.view(k, n, *a.shape[1:]) for a in attrs]
        if not sums:
            sums = [torch.zeros_like(a[0]) for a in per_sample]
            squares = [torch.zeros_like(a[0]) for a in per_sample]
        for total, total_sq, a in zip(sums, squares, per_sample):
            total += a.sum(0)
            total_sq += (a * a).sum(0)
        if delta is not None:
            deltas.append(delta.reshape(k, n, -1).transpose(0, 1))
    means = [t / nt_samples for t in sums]
    mean_squares = [t / nt_samples for t in squares]
    if nt_type == "smoothgrad":
        result = means
    elif nt_type == "smoothgrad_sq":
        result = mean_squares
    else:
        # E[a^2] - E[a]^2 can round below zero; a variance cannot.
        result = [(sq - m * m).clamp_min(0) for sq, m in zip(mean_squares, means)]
    delta = torch.cat(deltas, dim=1).reshape(-1) if deltas else None
    return tuple(result), delta
