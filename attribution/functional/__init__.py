"""The functional core: plain functions over canonical tuples of tensors.

Each function takes an :class:`attribution._canonical.Objective` (model,
target and forward arguments already normalised) and tuples of tensors, and
returns tuples of tensors.  The public classes in :mod:`attribution` do the
argument handling and call these.
"""

from attribution.functional.backprop import deconvolution, deep_lift, deep_lift_shap, guided_backprop, guided_gradcam
from attribution.functional.gradient import input_x_gradient, saliency
from attribution.functional.layer import (
    internal_influence,
    interpolate,
    layer_activation,
    layer_conductance,
    layer_gradcam,
    layer_gradient_x_activation,
    layer_integrated_gradients,
)
from attribution.functional.neuron import neuron_conductance, neuron_objective, neuron_target
from attribution.functional.noise import NT_TYPES, noise_tunnel
from attribution.functional.path import INTEGRATION_METHODS, gradient_shap, integrated_gradients, integration_nodes
from attribution.functional.perturbation import feature_ablation, feature_permutation, occlusion
from attribution.functional.shapley import shapley_value_sampling, shapley_values
from attribution.functional.surrogate import kernel_shap, lime

__all__ = [
    "deconvolution",
    "deep_lift",
    "deep_lift_shap",
    "feature_ablation",
    "feature_permutation",
    "guided_backprop",
    "guided_gradcam",
    "INTEGRATION_METHODS",
    "NT_TYPES",
    "gradient_shap",
    "input_x_gradient",
    "integrated_gradients",
    "integration_nodes",
    "internal_influence",
    "interpolate",
    "kernel_shap",
    "layer_activation",
    "layer_conductance",
    "layer_gradcam",
    "layer_gradient_x_activation",
    "layer_integrated_gradients",
    "lime",
    "neuron_conductance",
    "neuron_objective",
    "neuron_target",
    "noise_tunnel",
    "occlusion",
    "saliency",
    "shapley_value_sampling",
    "shapley_values",
]
