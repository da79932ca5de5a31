"""Rule-based backpropagation of one hidden unit: NeuronGuidedBackprop and NeuronDeconvolution.

Each is its input method applied to the model cut at the layer, with the
unit as the target (:func:`attribution.functional.neuron_objective`): the
forward stops once the layer has run, and every ReLU on the way, however it
is called (module, in place, reused, ``F.relu``), backpropagates with the
method's rule.  ``neuron_selector`` takes the forms of
:class:`attribution.NeuronGradient`: an int, a tuple of ints (one per layer
dimension after the batch), a tuple with slices (the covered units are
summed), or a callable from the layer's output to one value per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from attribution._base import GradientAttribution, NeuronAttribution
from attribution._canonical import TensorOrTuple
from attribution.functional.backprop import deconvolution, guided_backprop
from attribution.functional.neuron import NeuronSelector
from attribution.registry import register


class _NeuronReLURuleAttribution(NeuronAttribution, GradientAttribution):
    """One unit of ``layer`` (module or dotted name) backpropagated to the inputs with a ReLU rule."""

    needs_float_inputs = True
    _rule: ClassVar[Callable]

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
        >>> explainer = NeuronGuidedBackprop(model, "features.8")  # doctest: +SKIP
        >>> maps = explainer.attribute(images, neuron_selector=(5, 1, 1))  # doctest: +SKIP
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
