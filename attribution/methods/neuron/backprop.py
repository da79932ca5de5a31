"""Rule-based backpropagation of one hidden unit: NeuronDeepLift, NeuronDeepLiftShap, NeuronGuidedBackprop
and NeuronDeconvolution.

Each is its input method applied to the model cut at the layer, with the
unit as the target (:func:`attribution.functional.neuron_objective`): the
forward stops once the layer has run, and every ReLU on the way, however it
is called (module, in place, reused, ``F.relu``), backpropagates with the
method's rule (DeepLift: with its rules, :mod:`attribution._internal.rules`).
``neuron_selector`` takes the forms of :class:`attribution.NeuronGradient`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from attribution._internal.canonical import (
    BaselineType,
    Objective,
    TensorOrTuple,
    format_baseline_distribution,
    format_baselines,
)
from attribution.functional.backprop import CustomAttribution, deconvolution, deep_lift, deep_lift_shap, guided_backprop
from attribution.functional.neuron.selection import NeuronSelector
from attribution.methods.base import GlobalNeuronAttribution, GradientAttribution, NeuronAttribution
from attribution.registry import register


class _NeuronReLURuleAttribution(NeuronAttribution, GradientAttribution):
    """One unit of ``layer`` (module or dotted name) backpropagated to the inputs with a ReLU rule."""

    needs_float_inputs = True
    _rule: ClassVar[staticmethod[[Objective, tuple[Tensor, ...]], tuple[Tensor, ...]]]

    def __init__(self, model: Callable[..., Tensor], layer: nn.Module | str) -> None:
        super().__init__(model, layer)  # Captum names the model ``model`` here

    def attribute(
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
    ) -> TensorOrTuple:
        """Backpropagate the selected unit with the ReLU rule.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            neuron_selector: the unit (see the module docstring).
            additional_forward_args: extra arguments passed to the model.
            attribute_to_neuron_input: select the unit from the layer's input.

        Returns:
            Maps shaped like ``inputs``.

        Raises:
            ValueError: the selector does not fit the layer, or the layer does not run in the model's forward.
        """
        call = self._neuron_call(inputs, neuron_selector, additional_forward_args, attribute_to_neuron_input)
        return call.restore(type(self)._rule(call.objective, call.inputs))


@register("neuron_guided_backprop")
class NeuronGuidedBackprop(_NeuronReLURuleAttribution):
    """Guided backpropagation (Springenberg et al., 2015) of one hidden unit: at every ReLU between the
    inputs and the unit, only positive gradients pass, and only through units that were active.

    Args:
        model: the model.
        layer: the module holding the unit, or its dotted name.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import NeuronGuidedBackprop
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> explainer = NeuronGuidedBackprop(model, model[1])
        >>> maps = explainer.attribute(images, neuron_selector=(1, 2, 3))  # (channel, row, col) of the ReLU's output
        >>> maps.shape
        torch.Size([2, 3, 8, 8])
    """

    _rule = staticmethod(guided_backprop)


@register("neuron_deconvolution")
class NeuronDeconvolution(_NeuronReLURuleAttribution):
    """Deconvolution (Zeiler & Fergus, 2014) of one hidden unit: at every ReLU between the inputs and the
    unit, only positive gradients pass, whatever the unit's input.

    Args:
        model: the model.
        layer: the module holding the unit, or its dotted name.
    """

    _rule = staticmethod(deconvolution)


class _NeuronDeepLiftBase(GlobalNeuronAttribution):
    def __init__(
        self, model: Callable[..., Tensor], layer: nn.Module | str, multiply_by_inputs: bool = True, eps: float = 1e-10
    ) -> None:
        super().__init__(model, layer, multiply_by_inputs)  # Captum names the model ``model`` here
        self.eps = eps


@register("neuron_deep_lift")
class NeuronDeepLift(_NeuronDeepLiftBase):
    """DeepLift (Rescale rule) of one unit: sums to ``unit(x) - unit(baseline)``.

    Args:
        model: the model.
        layer: the module holding the unit, or its dotted name.
        multiply_by_inputs: multiply the multipliers by ``inputs - baselines`` (default).
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        baselines: BaselineType = None,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        custom_attribution_func: CustomAttribution | None = None,
    ) -> TensorOrTuple:
        """Attribute ``unit(inputs) - unit(baselines)`` to the input features.

        Arguments are those of :meth:`DeepLift.attribute` (``custom_attribution_func`` too), with
        ``neuron_selector`` (see the module docstring) instead of ``target``.
        """
        call = self._neuron_call(inputs, neuron_selector, additional_forward_args, attribute_to_neuron_input)
        attrs, _ = deep_lift(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            multiply_by_inputs=self.multiplies_by_inputs,
            eps=self.eps,
            custom_attribution_func=custom_attribution_func,
        )
        return call.restore(attrs)


@register("neuron_deep_lift_shap")
class NeuronDeepLiftShap(_NeuronDeepLiftBase):
    """DeepLift SHAP of one unit: its DeepLift against every baseline, averaged.

    Args:
        model: the model.
        layer: the module holding the unit, or its dotted name.
        multiply_by_inputs: as in :class:`NeuronDeepLift`.
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        baselines: BaselineType = None,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        custom_attribution_func: CustomAttribution | None = None,
    ) -> TensorOrTuple:
        """Average the unit's DeepLift attributions over ``k`` baseline rows.

        Arguments are those of :meth:`DeepLiftShap.attribute` (``custom_attribution_func`` too), with
        ``neuron_selector`` (see the module docstring) instead of ``target``.
        """
        call = self._neuron_call(inputs, neuron_selector, additional_forward_args, attribute_to_neuron_input)
        attrs, _ = deep_lift_shap(
            call.objective,
            call.inputs,
            format_baseline_distribution(baselines, call.inputs),
            multiply_by_inputs=self.multiplies_by_inputs,
            eps=self.eps,
            custom_attribution_func=custom_attribution_func,
        )
        return call.restore(attrs)
