"""What explaining the probe at one point gives, per method: the attributions, their heat maps, the
metric values with the examples each averages over, and which examples' maps failed the self-check.

Made by :mod:`lightning_xai._compute.explain` and checked by :mod:`lightning_xai._compute.self_check`;
the history keeps it, the drawing side shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from lightning_xai._compute.heat import Heat


@dataclass
class MetricValues:
    """A method's metrics at one point: the means that are logged, how many examples each averages over,
    and why a metric is not logged."""

    means: dict[str, float] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)
    partly: dict[str, list[int]] = field(default_factory=dict)  # examples left out for a non-finite value


@dataclass
class Explanation:
    """One method's result on the probe at one point, checked (see :mod:`lightning_xai._compute.self_check`)."""

    method: str
    attributions: Tensor  # as the method returns them: input-shaped, or layer-shaped for layer methods
    heat: Heat | None  # maps (N, H, W) at the input's resolution, scale and sign, for image inputs;
    # NaN for the examples whose map failed the check
    metrics: dict[str, float] = field(default_factory=dict)  # the means that are logged
    token_scores: Tensor | None = None  # (N, T) signed attribution per token, for token inputs
    problems: list[str | None] = field(default_factory=list)  # per example: why its map failed the check
    checked: MetricValues = field(default_factory=MetricValues)  # examples per metric, and what is undefined
