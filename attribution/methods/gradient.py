"""Saliency and InputXGradient: one forward and one backward."""

from __future__ import annotations

from typing import Any

from attribution import functional
from attribution._internal.canonical import TargetType, TensorOrTuple, canonical_call
from attribution.methods.base import GradientAttribution
from attribution.registry import register


@register("saliency")
class Saliency(GradientAttribution):
    """Gradient of the target with respect to the inputs (Simonyan et al., 2013).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import Saliency
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 2])  # one target per example
        >>> attr = Saliency(model).attribute(images, target=labels)
        >>> attr.shape, bool((attr >= 0).all())  # |gradient| unless abs=False
        (torch.Size([2, 3, 8, 8]), True)
    """

    needs_float_inputs = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        abs: bool = True,
        additional_forward_args: Any = None,
    ) -> TensorOrTuple:
        """Attribute the target to each input feature.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            target: which output to explain: None (scalar output), an int, a
                tuple index, one int/tuple per example (list or 1-D tensor),
                or a callable from the output to one value per row.  Methods
                evaluate several copies of the batch at once, stacked
                (row ``r`` belongs to example ``r % N``), so a callable must
                handle any multiple of ``N`` rows.
            abs: return the gradient's magnitude (default) or its sign too.
            additional_forward_args: extra arguments passed to the model after
                the inputs.

        Returns:
            Gradients shaped like ``inputs``.
        """
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        return call.restore(functional.saliency(call.objective, call.inputs, abs=abs))


@register("input_x_gradient")
class InputXGradient(GradientAttribution):
    """Input times the gradient of the target: exact for a linear model."""

    _multiply_by_inputs = True
    needs_float_inputs = True

    def attribute(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None
    ) -> TensorOrTuple:
        """Attribute the target to each input feature (arguments as in :meth:`Saliency.attribute`)."""
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        return call.restore(functional.input_x_gradient(call.objective, call.inputs))
