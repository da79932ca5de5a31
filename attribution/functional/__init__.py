"""The functional core: plain functions over canonical tuples of tensors.

Each function takes an :class:`Objective` (model, target and forward arguments
already normalised; :func:`make_objective` builds one) and tuples of tensors, and
returns tuples of tensors.  The public classes (:mod:`attribution`, defined under
``attribution/methods/``) do the argument handling and call these; each file here
mirrors the class file of the same path there (layer methods in ``layer/``, neuron
methods in ``neuron/``).  (``lrp`` is the module's name here: its
function is ``attribution.functional.lrp.lrp``.)

Example:
    >>> import torch
    >>> from torch import nn
    >>> from attribution import functional
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(4, 3)
    >>> x = torch.rand(2, 4)
    >>> objective = functional.make_objective(model, target=1, additional_forward_args=None, n=2)
    >>> (attr,) = functional.input_x_gradient(objective, (x,))
    >>> torch.allclose(attr, x * model.weight[1])  # a linear model's exact contributions
    True
"""

from attribution._internal.canonical import Objective, make_objective
from attribution.functional.backprop import (
    deconvolution,
    deep_lift,
    deep_lift_shap,
    guided_backprop,
    guided_gradcam,
    layer_deep_lift,
    layer_deep_lift_shap,
)
from attribution.functional.dataloader import dataloader_ablation
from attribution.functional.gradient import input_x_gradient, saliency
from attribution.functional.layer.gradient import layer_activation, layer_gradcam, layer_gradient_x_activation
from attribution.functional.layer.maps import interpolate
from attribution.functional.layer.path import (
    internal_influence,
    layer_conductance,
    layer_gradient_shap,
    layer_integrated_gradients,
)
from attribution.functional.layer.perturbation import layer_feature_ablation, layer_feature_permutation
from attribution.functional.lrp import layer_lrp
from attribution.functional.lrp_rules import LayerCall, LayerRule
from attribution.functional.neuron.path import neuron_conductance
from attribution.functional.neuron.perturbation import neuron_feature_ablation
from attribution.functional.neuron.selection import neuron_objective, neuron_target
from attribution.functional.noise_tunnel import NT_TYPES, noise_tunnel
from attribution.functional.path import INTEGRATION_METHODS, gradient_shap, integrated_gradients, integration_nodes
from attribution.functional.perturbation import feature_ablation, feature_permutation, occlusion
from attribution.functional.shapley import shapley_value_sampling, shapley_values
from attribution.functional.surrogate import kernel_shap, lime

__all__ = [
    "LayerCall",
    "LayerRule",
    "Objective",
    "make_objective",
    "dataloader_ablation",
    "deconvolution",
    "deep_lift",
    "deep_lift_shap",
    "feature_ablation",
    "feature_permutation",
    "gradient_shap",
    "guided_backprop",
    "guided_gradcam",
    "input_x_gradient",
    "integrated_gradients",
    "INTEGRATION_METHODS",
    "integration_nodes",
    "internal_influence",
    "interpolate",
    "kernel_shap",
    "layer_activation",
    "layer_conductance",
    "layer_deep_lift",
    "layer_deep_lift_shap",
    "layer_feature_ablation",
    "layer_feature_permutation",
    "layer_gradcam",
    "layer_gradient_shap",
    "layer_gradient_x_activation",
    "layer_integrated_gradients",
    "layer_lrp",
    "lime",
    "neuron_conductance",
    "neuron_feature_ablation",
    "neuron_objective",
    "neuron_target",
    "noise_tunnel",
    "NT_TYPES",
    "occlusion",
    "saliency",
    "shapley_value_sampling",
    "shapley_values",
]
