"""Neuron perturbation methods' core: neuron feature ablation, input feature ablation of the model cut at
the layer, with the selected unit as the target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from attribution._internal.autograd import layer_output_forward
from attribution._internal.canonical import Objective, Target
from attribution._internal.features import FeatureMasks
from attribution.functional.perturbation import feature_ablation


def neuron_feature_ablation(
    forward_func: Callable[..., Any],
    layer: nn.Module,
    neuron: Target,
    additional_args: tuple[Any, ...],
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    attribute_to_neuron_input: bool = False,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, ...]:
    """Each input feature group gets the selected unit's drop when the group is set to its baseline.

    The model runs only up to the layer.  The cut model is a plain function,
    not a module, so the evaluator never hands it to local re-evaluation,
    whose trace records the model's modules but not the hook that cuts it.

    Args:
        neuron: the unit, as a target over the layer's output (input) rows.
        additional_args: extra forward arguments, already a tuple.

    Returns:
        Attributions shaped like ``inputs``.
    """
    cut = layer_output_forward(forward_func, layer, attribute_to_neuron_input)
    objective = Objective(cut, neuron, additional_args)
    return feature_ablation(
        objective, inputs, baselines, features, perturbations_per_eval=perturbations_per_eval, progress=progress
    )
