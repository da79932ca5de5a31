"""Rule-based backpropagation to a layer: LayerDeepLift and LayerDeepLiftShap.

DeepLift's rules run as for :class:`attribution.DeepLift` (torch functions
intercepted wherever the model calls them, see :mod:`attribution._internal.rules`);
the multipliers are read at the layer's output (or input) instead of at the
model's inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from attribution._internal.canonical import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    canonical_call,
    format_baseline_distribution,
    format_baselines,
)
from attribution._internal.checks import check_grad_kwargs
from attribution.functional.backprop import layer_deep_lift, layer_deep_lift_shap
from attribution.methods.base import GradientAttribution, LayerAttribution, WithDelta, layer_output, with_delta
from attribution.registry import register


class _LayerDeepLiftBase(LayerAttribution, GradientAttribution):
    returns_delta = True

    def __init__(
        self, model: Callable[..., Tensor], layer: nn.Module | str, multiply_by_inputs: bool = True, eps: float = 1e-10
    ) -> None:
        super().__init__(model, layer)  # Captum names the model ``model`` here
        self._multiply_by_inputs = multiply_by_inputs
        self.eps = eps


@register("layer_deep_lift")
class LayerDeepLift(_LayerDeepLiftBase):
    """DeepLift (Rescale rule, Shrikumar et al., 2017) attributed to a layer's activations.

    ``m * (a(x) - a(baseline))`` with ``m`` DeepLift's multipliers at the layer;
    summed over the layer they give ``f(x) - f(baseline)`` wherever the ops
    downstream of the layer have exact rules (see :class:`attribution.DeepLift`;
    a ``UserWarning`` names the ops where they do not).  One forward and one
    backward of ``[inputs; baselines]``.

    Args:
        model: the model (any callable; no module hooks are used for the rules).
        layer: the module, or its dotted name. It must run exactly once per forward.
        multiply_by_inputs: multiply the multipliers by ``a(inputs) - a(baselines)``
            (default); False returns the multipliers.
        eps: where an activation differs from its reference by less, its gradient is used instead of the
            ratio of differences.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import LayerDeepLift
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> attr, delta = LayerDeepLift(model, model[1]).attribute(
        ...     images, target=2, return_convergence_delta=True
        ... )
        >>> attr.shape  # shaped like the ReLU's output
        torch.Size([2, 4, 8, 8])
        >>> gap = model(images)[:, 2] - model(torch.zeros_like(images))[:, 2]  # f(x) - f(baseline)
        >>> torch.allclose(attr.sum((1, 2, 3)), gap, atol=1e-5)
        True
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        custom_attribution_func: Callable[..., Any] | None = None,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> WithDelta:
        """Attribute ``f(inputs) - f(baselines)`` to the layer's output (or input) units.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0 (token ids are fine when the
                layer comes after the embedding).
            baselines: references, as in :meth:`DeepLift.attribute` (default zeros), or a callable
                returning them (called with ``inputs`` if it takes an argument).
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            return_convergence_delta: also return ``sum(attr) - (f(x) - f(b))`` per example.
            attribute_to_layer_input: attribute to the layer's input instead.
            custom_attribution_func: attributions from the layer multipliers, as in Captum:
                ``f(multipliers)``, ``f(multipliers, a(inputs))`` or ``f(multipliers, a(inputs), a(baselines))``
                (tuples in, a tuple shaped like the activations out).
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the layer's activations (a tuple if the layer's output is one), and the
            delta per example if requested.

        Raises:
            ValueError: bad baselines or target, or a layer that does not run exactly once per forward.
        """
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        attrs, delta, was_tuple = layer_deep_lift(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            self._one_layer(),
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
            eps=self.eps,
            custom_attribution_func=custom_attribution_func,
            grad_kwargs=grad_kwargs,
        )
        return with_delta(layer_output(attrs, was_tuple), delta, return_convergence_delta)


@register("layer_deep_lift_shap")
class LayerDeepLiftShap(_LayerDeepLiftBase):
    """DeepLift SHAP at a layer: :class:`LayerDeepLift` against every baseline of a distribution, averaged.

    Args:
        model: the model.
        layer: the module, or its dotted name. It must run exactly once per forward.
        multiply_by_inputs: as in :class:`LayerDeepLift`.
        eps: as in :class:`LayerDeepLift`.
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        custom_attribution_func: Callable[..., Any] | None = None,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> WithDelta:
        """Average the layer's DeepLift attributions over ``k`` baseline rows.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: ``k`` baseline rows shaped like one example (per input in a tuple), or a callable
                returning them; None is a single zero baseline.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            return_convergence_delta: also return the delta per (example, baseline), example-major
                (``delta.view(N, k)``).
            attribute_to_layer_input: attribute to the layer's input instead.
            custom_attribution_func: as in :meth:`LayerDeepLift.attribute`, applied per baseline.
            grad_kwargs: further options of ``torch.autograd.grad``.

        Returns:
            Attributions shaped like the layer's activations, and the delta if requested.

        Raises:
            ValueError: bad baselines or target, or a layer that does not run exactly once per forward.
        """
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        attrs, delta, was_tuple = layer_deep_lift_shap(
            call.objective,
            call.inputs,
            format_baseline_distribution(baselines, call.inputs),
            self._one_layer(),
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
            eps=self.eps,
            custom_attribution_func=custom_attribution_func,
            grad_kwargs=grad_kwargs,
        )
        return with_delta(layer_output(attrs, was_tuple), delta, return_convergence_delta)
