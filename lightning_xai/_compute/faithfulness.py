"""The faithfulness and complexity metrics of a chunk's maps, with the monitor's probe settings.

The perturbation metrics (deletion and insertion curves, faithfulness correlation) move every element of
the input on its own toward a zero baseline, the engine's default and integrated gradients' own; their
areas are mean heights of the explained class score over the share of features moved (see
:func:`attribution.metrics.area_under_curve`).  ROAD (Rong et al., 2022) removes the most relevant pixels of
an image and fills them in by noisy linear imputation (:func:`attribution.metrics.noisy_linear_imputation`),
so the model sees no out-of-distribution holes; it applies to images ``(N, C, H, W)`` only.  Sparseness and
complexity read only the map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attribution.metrics import (
    area_under_curve,
    complexity,
    deletion_curve,
    faithfulness_correlation,
    insertion_curve,
    noisy_linear_imputation,
    sparseness,
)

CURVE_STEPS = 10
"""Points of the deletion and insertion curves after the unperturbed one: ``CURVE_STEPS + 1`` forwards per
probe example and curve, each step moving a tenth of the input's elements (fewer steps for a smaller input)."""
CORRELATION_SAMPLES = 16
"""Random feature subsets of the faithfulness correlation (Quantus's default is 100): 17 forwards per probe
example.  The subsets are drawn from the monitor's seed and shared by all chunks, so the value does not
depend on the chunk size."""
CORRELATION_SUBSET = 0.1
"""Share of the input's elements in each subset of the faithfulness correlation."""
BASELINE = 0.0
"""What a deleted feature becomes (and what insertion starts from)."""
ROAD_PERCENTAGES = (10, 30, 50, 70, 90)
"""Percentages of each image's pixels that ROAD removes, most relevant first (MoRF): every other one of the
paper's nine, one forward of the ``(N, C, H, W)`` chunk each.  The imputation's conjugate gradients need about
as many iterations as the largest hole is wide, so 90% of a large image costs most (see
:mod:`attribution.metrics.road`)."""
ROAD_NOISE = 0.01
"""Standard deviation of the noise added to the imputed pixels, in the inputs' units (the paper's and
:func:`attribution.metrics.road`'s default)."""
FAITHFULNESS_METRICS = ("deletion", "insertion", "faithfulness_correlation", "road", "sparseness", "complexity")
"""The requested metrics (``metrics=``) this module computes."""


def faithfulness(
    forward: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    targets: Tensor,
    forward_args: tuple[Tensor, ...],
    requested: tuple[str, ...],
    seed: int,
) -> dict[str, Tensor]:
    """The per-example values of the ``requested`` faithfulness metrics, by the name they are logged under.

    Args:
        forward: the model's ``(N, C)`` class scores of ``inputs`` (and ``forward_args``).
        inputs: one chunk of the probe, floating point.
        attributions: the chunk's maps, shaped like ``inputs``.
        targets: the explained class per example.
        forward_args: further tensors of the forward, the chunk's rows.
        requested: the monitor's ``metrics``; those not computed here are ignored.
        seed: the point's seed (the subsets of the faithfulness correlation, the noise of ROAD).
    """
    attributions = attributions.detach()
    values: dict[str, Tensor] = {}
    common: dict[str, Any] = {"target": targets, "baselines": BASELINE, "additional_forward_args": forward_args or None}
    features = math.prod(inputs.shape[1:])
    steps = min(CURVE_STEPS, features)
    if "deletion" in requested:
        curve = deletion_curve(forward, inputs, attributions, n_steps=steps, **common)
        values["deletion_auc"] = area_under_curve(curve).float()
    if "insertion" in requested:
        curve = insertion_curve(forward, inputs, attributions, n_steps=steps, **common)
        values["insertion_auc"] = area_under_curve(curve).float()
    if "faithfulness_correlation" in requested and features > 1:  # one feature: no subset to correlate
        size = min(features - 1, max(1, round(CORRELATION_SUBSET * features)))
        values["faithfulness_correlation"] = faithfulness_correlation(
            forward,
            inputs,
            attributions,
            n_perturb_samples=CORRELATION_SAMPLES,
            subset_size=size,
            seed=seed,
            **common,
        ).float()
    if "road" in requested and road_unavailable(inputs) is None:
        values["road"] = road_kept(forward, inputs, attributions, targets, forward_args, seed)
    if "sparseness" in requested:
        values["sparseness"] = sparseness(attributions).float()
    if "complexity" in requested:
        values["complexity"] = complexity(attributions).float()
    return values


def road_unavailable(inputs: Tensor) -> str | None:
    """Why ROAD cannot be computed on the probe ``inputs`` (None: it can)."""
    if inputs.dim() == 4 and inputs.is_floating_point():
        return None
    return (
        f"'road' removes pixels of images (N, C, H, W) and imputes them from their neighbours, but the probe's "
        f"inputs have shape {tuple(inputs.shape)} ({inputs.dtype}), so it is not computed for any method; remove "
        f"'road' from metrics= (deletion, insertion and faithfulness_correlation work on any floating-point input)"
    )


def road_kept(
    forward: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    targets: Tensor,
    forward_args: tuple[Tensor, ...],
    seed: int,
    noise: float = ROAD_NOISE,
) -> Tensor:
    """Per example, the share of :data:`ROAD_PERCENTAGES` at which the model still predicts the explained class
    after that percentage of its most relevant pixels is imputed: ROAD's MoRF accuracy, averaged over the
    percentages (the area under its curve), in [0, 1].  Lower is better: a faithful map points at the pixels
    without which the prediction goes.

    With ``noise=0`` it equals ``road(..., percentages=ROAD_PERCENTAGES, score="accuracy").mean(1)``.  The
    noise differs from :func:`attribution.metrics.road`'s in one way: one draw per percentage from ``seed``,
    shared by the examples, so that an example scores the same in any chunk of the probe.  The imputation
    runs in float32 (or float64) whatever the model's dtype.

    Args:
        forward: the model's ``(N, K)`` class scores.
        inputs: a chunk of images ``(N, C, H, W)``, floating point.
        attributions: the chunk's maps, shaped like ``inputs``; pixels are ranked by their sum over channels
            (ties: the first in row-major order).
        targets: the explained class per example.
        forward_args: further tensors of the forward, the chunk's rows.
        seed: seed of the noise.
        noise: standard deviation of the noise added to the imputed pixels.
    """
    n, channels, height, width = inputs.shape
    device, copies, pixels = inputs.device, len(ROAD_PERCENTAGES), height * width
    relevance = attributions.detach().float().sum(1).reshape(n, pixels)
    ranking = relevance.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(ranking).scatter_(1, ranking, torch.arange(pixels, device=device).expand(n, -1))
    counts = torch.tensor([int(pixels * p / 100) for p in ROAD_PERCENTAGES], device=device)
    removed = (rank[None] < counts[:, None, None]).view(copies, n, 1, height, width)
    work = inputs.detach().to(torch.float64 if inputs.dtype == torch.float64 else torch.float32)
    stacked = work.expand(copies, *work.shape).reshape(copies * n, channels, height, width)
    filled = noisy_linear_imputation(stacked, removed.view(copies * n, height, width))
    if noise > 0:
        generator = torch.Generator(device=device).manual_seed(seed)
        draws = torch.randn((copies, 1, channels, height, width), generator=generator, device=device, dtype=work.dtype)
        filled = filled + (noise * draws * removed).reshape(copies * n, channels, height, width)
    args = tuple(a.repeat(copies, *([1] * (a.dim() - 1))) for a in forward_args)
    with torch.no_grad():
        scores = forward(filled.to(inputs.dtype), *args)
    kept = scores.argmax(dim=1).view(copies, n) == targets.to(device)[None]
    return kept.float().mean(dim=0)
