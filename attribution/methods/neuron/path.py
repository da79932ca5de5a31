"""Path methods of one hidden unit: NeuronIntegratedGradients, NeuronConductance, NeuronGradientShap.

Each attributes one unit of a hidden layer to the input features.  Except for conductance
(:mod:`attribution.functional.neuron.path`), these are the input path methods applied to the model cut at
the layer, with the unit as the target (:mod:`attribution.functional.neuron.selection`); the forward
stops once the layer has run.  ``neuron_selector`` takes the forms of :class:`attribution.NeuronGradient`.
"""

from __future__ import annotations

from typing import Any

import torch

from attribution._internal.canonical import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    format_baseline_distribution,
    format_baselines,
    format_stdevs,
    make_objective,
)
from attribution._internal.checks import check_grad_kwargs, check_int
from attribution.functional.neuron.path import neuron_conductance
from attribution.functional.neuron.selection import NeuronSelector
from attribution.functional.path import gradient_shap, integrated_gradients
from attribution.methods.base import GlobalNeuronAttribution, check_path_arguments
from attribution.registry import register


@register("neuron_integrated_gradients", probe_options={"n_steps": 16})
class NeuronIntegratedGradients(GlobalNeuronAttribution):
    """Integrated gradients of one unit: they sum to ``unit(x) - unit(baseline)`` up to quadrature error.

    Args:
        forward_func: the model.
        layer: the module holding the unit, or its dotted name.
        multiply_by_inputs: multiply by ``inputs - baselines`` (default).
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        baselines: BaselineType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        attribute_to_neuron_input: bool = False,
    ) -> TensorOrTuple:
        """Integrate the unit's gradient from ``baselines`` to ``inputs``.

        Arguments are those of :meth:`IntegratedGradients.attribute`, with
        ``neuron_selector`` (see the module docstring) instead of ``target``.
        """
        check_path_arguments(n_steps, method, internal_batch_size)
        call = self._neuron_call(inputs, neuron_selector, additional_forward_args, attribute_to_neuron_input)
        attrs, _ = integrated_gradients(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            multiply_by_inputs=self.multiplies_by_inputs,
        )
        return call.restore(attrs)


@register("neuron_conductance", probe_options={"n_steps": 16})
class NeuronConductance(GlobalNeuronAttribution):
    """Conductance of the input features through one unit (Dhamdhere et al., 2018).

    Integrates ``d target / d unit * d unit / d input`` along the path from
    the baseline, times ``inputs - baselines``; summed over the input
    features it is the unit's layer conductance.  Here ``target`` picks the
    model's output and ``neuron_selector`` the unit.

    Args:
        forward_func: the model.
        layer: the module holding the unit, or its dotted name.
        multiply_by_inputs: multiply by ``inputs - baselines`` (default).
    """

    takes_target = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_trapezoid",
        internal_batch_size: int | None = None,
        attribute_to_neuron_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple:
        """Conductance of every input feature through the selected unit.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            neuron_selector: the unit: an index, or a callable that *picks* one
                unit (it is applied to the layer's gradient too); no slices.
            baselines: the path's start, as in :meth:`IntegratedGradients.attribute`.
            target: which model output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            n_steps, method, internal_batch_size: the quadrature and chunking,
                as in :meth:`IntegratedGradients.attribute`.
            attribute_to_neuron_input: select the unit from the layer's input.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like ``inputs``.

        Raises:
            ValueError: bad selector, target, quadrature arguments or layer.
        """
        check_path_arguments(n_steps, method, internal_batch_size)
        check_grad_kwargs(grad_kwargs)
        call = self._neuron_call(inputs, neuron_selector, additional_forward_args, attribute_to_neuron_input)
        objective = make_objective(self.forward_func, target, additional_forward_args, call.inputs[0].shape[0])
        attrs = neuron_conductance(
            objective,
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            self._one_layer(),
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            multiply_by_inputs=self.multiplies_by_inputs,
            attribute_to_neuron_input=attribute_to_neuron_input,
            grad_kwargs=grad_kwargs,
        )
        return call.restore(attrs)


@register(
    "neuron_gradient_shap",
    probe_options=lambda inputs: {"baselines": torch.zeros_like(inputs[:1]), "n_samples": 16, "stdevs": 0.1},
)
class NeuronGradientShap(GlobalNeuronAttribution):
    """GradientSHAP of one unit: expected gradients from a baseline distribution.

    Draws come from torch's global generator (seed it for reproducible results).

    Args:
        forward_func: the model.
        layer: the module holding the unit, or its dotted name.
        multiply_by_inputs: multiply gradients by ``inputs - baselines`` (default).
    """

    draws_random_numbers = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        baselines: BaselineType,
        n_samples: int = 5,
        stdevs: float | tuple[float, ...] = 0.0,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
    ) -> TensorOrTuple:
        """Estimate the unit's SHAP values with ``n_samples`` samples per example.

        Arguments are those of :meth:`GradientShap.attribute`, with
        ``neuron_selector`` (see the module docstring) instead of ``target``.
        """
        check_int(n_samples, "n_samples")
        call = self._neuron_call(inputs, neuron_selector, additional_forward_args, attribute_to_neuron_input)
        attrs, _ = gradient_shap(
            call.objective,
            call.inputs,
            format_baseline_distribution(baselines, call.inputs),
            n_samples=n_samples,
            stdevs=format_stdevs(stdevs, len(call.inputs)),
            multiply_by_inputs=self.multiplies_by_inputs,
        )
        return call.restore(attrs)
