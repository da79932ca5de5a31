"""The faithfulness and complexity metrics of a chunk's maps, with the monitor's probe settings.

The perturbation metrics (deletion and insertion curves, faithfulness correlation) move every element of
the input on its own toward a zero baseline, the engine's default and integrated gradients' own; their
areas are mean heights of the explained class score over the share of features moved (see
:func:`attribution.metrics.area_under_curve`).  Sparseness and complexity read only the map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor

from attribution.metrics import (
    area_under_curve,
    complexity,
    deletion_curve,
    faithfulness_correlation,
    insertion_curve,
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
FAITHFULNESS_METRICS = ("deletion", "insertion", "faithfulness_correlation", "sparseness", "complexity")
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
        seed: the monitor's seed (the subsets of the faithfulness correlation).
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
    if "sparseness" in requested:
        values["sparseness"] = sparseness(attributions).float()
    if "complexity" in requested:
        values["complexity"] = complexity(attributions).float()
    return values
