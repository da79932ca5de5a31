"""Gradient of one hidden unit: NeuronGradient.

The input gradient (:func:`attribution.functional.saliency`) of the model cut at the layer, with the unit
as the target (:func:`attribution.functional.neuron_objective`); the forward stops once the layer has run.
``neuron_selector`` picks the unit: an int (a layer with one dimension per
example), a tuple with one int per layer dimension after the batch (e.g.
``(channel, row, column)``), a tuple with slices (the covered units are
summed), or a callable from the layer's output to one value per row.
Methods evaluate several copies of the batch at once, so a callable must
handle any multiple of the batch size in rows.
"""

from __future__ import annotations

from typing import Any

from attribution._internal.canonical import TensorOrTuple
from attribution.functional.gradient import saliency
from attribution.functional.neuron.selection import NeuronSelector
from attribution.methods.base import GradientNeuronAttribution
from attribution.registry import register


@register("neuron_gradient")
class NeuronGradient(GradientNeuronAttribution):
    """Gradient of one unit of a hidden layer with respect to the inputs.

    Args:
        forward_func: the model.
        layer: the module holding the unit, or its dotted name.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import NeuronGradient
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> grads = NeuronGradient(model, model[0]).attribute(images, neuron_selector=(1, 2, 3))  # (channel, row, col)
        >>> grads.shape
        torch.Size([2, 3, 8, 8])
        >>> torch.allclose(grads[:, :, 1:4, 2:5], model[0].weight[1].expand(2, 3, 3, 3))  # the unit's 3 x 3 kernel
        True
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
    ) -> TensorOrTuple:
        """Gradient of the selected unit.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            neuron_selector: the unit (see the module docstring).
            additional_forward_args: extra arguments passed to the model.
            attribute_to_neuron_input: select the unit from the layer's input.

        Returns:
            Gradients shaped like ``inputs``.

        Raises:
            ValueError: the selector does not fit the layer, or the layer does
                not run in the model's forward.
        """
        call = self._neuron_call(inputs, neuron_selector, additional_forward_args, attribute_to_neuron_input)
        return call.restore(saliency(call.objective, call.inputs, abs=False))
