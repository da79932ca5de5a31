"""Rule-based backpropagation: DeepLift, DeepLiftShap, GuidedBackprop, Deconvolution, GuidedGradCam.

Nonlinearities are intercepted as torch functions wherever the model calls
them (``nn.ReLU`` modules, also in-place or reused, and ``F.relu``,
``torch.sigmoid``, softmax, max pooling, norms, products and attention ...
inside ``forward``); see :mod:`attribution._internal.rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor

from attribution._internal.canonical import (
    BaselineType,
    Objective,
    TargetType,
    TensorOrTuple,
    canonical_call,
    format_baseline_distribution,
    format_baselines,
)
from attribution.functional import backprop
from attribution.methods.base import GradientAttribution, InternalAttribution, WithDelta, with_delta
from attribution.registry import register


class _ReferenceAttribution(GradientAttribution):
    returns_delta = True
    needs_float_inputs = True

    def __init__(self, model: Callable[..., Tensor], multiply_by_inputs: bool = True, eps: float = 1e-10) -> None:
        super().__init__(model)
        self._multiply_by_inputs = multiply_by_inputs
        self.eps = eps


@register("deep_lift")
class DeepLift(_ReferenceAttribution):
    """DeepLift with the Rescale rule (Shrikumar et al., 2017).

    Attributions sum to ``f(x) - f(baseline)`` exactly (up to float
    rounding) through linear layers, activations (also applied functionally,
    reused or in place), softmax, max pooling, LayerNorm / GroupNorm /
    RMSNorm, products of two activations (squeeze-and-excite gating,
    attention) and ``F.scaled_dot_product_attention`` / ``nn.MultiheadAttention``;
    see ``attribution/_internal/rules.py`` for each rule.  The model must keep the
    batch on dim 0.  Where an op has no exact rule, a ``UserWarning`` says how
    much of ``f(x) - f(baseline)`` is left unexplained, and by which ops.

    Args:
        model: the model (any callable; no module hooks are used).
        multiply_by_inputs: multiply the multipliers by ``inputs - baselines``
            (default); False returns the multipliers.
        eps: where an activation differs from its reference by less, its
            gradient is used instead of the ratio of differences.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import DeepLift
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> attr, delta = DeepLift(model).attribute(images, target=2, return_convergence_delta=True)
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
        custom_attribution_func: Callable[..., Any] | None = None,
    ) -> WithDelta:
        """Attribute ``f(inputs) - f(baselines)`` to the input features.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: references, as in :meth:`IntegratedGradients.attribute` (default zeros).
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            return_convergence_delta: also return ``sum(attr) - (f(x) - f(b))`` per example.
            custom_attribution_func: attributions from the multipliers, as in Captum:
                ``f(multipliers)``, ``f(multipliers, inputs)`` or ``f(multipliers, inputs, baselines)``
                (tuples in, a tuple shaped like the inputs out) instead of ``multipliers * (inputs - baselines)``.

        Returns:
            Attributions shaped like ``inputs``, and the delta if requested.
        """
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, delta = backprop.deep_lift(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
            eps=self.eps,
            custom_attribution_func=custom_attribution_func,
        )
        return with_delta(call.restore(attrs), delta, return_convergence_delta)


@register("deep_lift_shap")
class DeepLiftShap(_ReferenceAttribution):
    """DeepLift SHAP: DeepLift against every baseline of a distribution, averaged.

    Args:
        model: the model.
        multiply_by_inputs: as in :class:`DeepLift`.
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable[..., Any] | None = None,
    ) -> WithDelta:
        """Average DeepLift attributions over the baseline distribution.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: ``k`` baseline rows shaped like one example (per input in
                a tuple); None is a single zero baseline.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            return_convergence_delta: also return the delta per (example,
                baseline), example-major (``delta.view(N, k)``).
            custom_attribution_func: attributions from the multipliers, as in Captum:
                ``f(multipliers)``, ``f(multipliers, inputs)`` or ``f(multipliers, inputs, baselines)``
                (tuples in, a tuple shaped like the inputs out) instead of ``multipliers * (inputs - baselines)``.

        Returns:
            Attributions shaped like ``inputs``, and the delta if requested.
        """
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, delta = backprop.deep_lift_shap(
            call.objective,
            call.inputs,
            format_baseline_distribution(baselines, call.inputs),
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
            eps=self.eps,
            custom_attribution_func=custom_attribution_func,
        )
        return with_delta(call.restore(attrs), delta, return_convergence_delta)


class _ReLURuleAttribution(GradientAttribution):
    _rule: ClassVar[staticmethod[[Objective, tuple[Tensor, ...]], tuple[Tensor, ...]]]
    needs_float_inputs = True

    def attribute(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None
    ) -> TensorOrTuple:
        """Backpropagate the target with the ReLU rule; returns maps shaped like ``inputs``."""
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        return call.restore(type(self)._rule(call.objective, call.inputs))


@register("guided_backprop")
class GuidedBackprop(_ReLURuleAttribution):
    """Guided backpropagation (Springenberg et al., 2015): at every ReLU, only positive gradients
    pass, and only through units that were active."""

    _rule = staticmethod(backprop.guided_backprop)


@register("deconvolution")
class Deconvolution(_ReLURuleAttribution):
    """Deconvolution (Zeiler & Fergus, 2014): at every ReLU, only positive gradients pass."""

    _rule = staticmethod(backprop.deconvolution)


@register("guided_gradcam")
class GuidedGradCam(InternalAttribution, GradientAttribution):
    """Guided GradCAM (Selvaraju et al., 2017): guided backprop times upsampled layer GradCAM.

    Args:
        model: the model.
        layer: the layer for GradCAM (module or dotted name), usually the last convolution.
    """

    needs_spatial_layer = True
    needs_float_inputs = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        interpolate_mode: str = "nearest",
        attribute_to_layer_input: bool = False,
    ) -> TensorOrTuple:
        """Guided GradCAM maps shaped like ``inputs`` (an empty tensor, with a warning, for inputs of another
        spatial rank than the layer's maps)."""
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        return call.restore(
            backprop.guided_gradcam(
                call.objective,
                call.inputs,
                self._one_layer(),
                interpolate_mode=interpolate_mode,
                attribute_to_layer_input=attribute_to_layer_input,
            )
        )
