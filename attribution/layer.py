"""Layer attribution: GradCAM, activations, gradient x activation, internal influence, conductance, layer IG."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from attribution import functional
from attribution._base import GradientAttribution, LayerAttribution, check_path_arguments, with_delta
from attribution._canonical import BaselineType, TargetType, TensorOrTuple, canonical_call, format_baselines
from attribution._checks import ArgumentTypeError, check_grad_kwargs
from attribution.functional.layer import (
    internal_influence,
    layer_activation,
    layer_conductance,
    layer_gradient_x_activation,
    layer_integrated_gradients,
)
from attribution.registry import register


@register("layer_gradcam")  # signed, as Captum's default: a ReLU would blank a map whose evidence is all negative
class LayerGradCam(LayerAttribution, GradientAttribution):
    """GradCAM (Selvaraju et al., 2017) on a chosen layer, usually the last convolution.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name (``"layer3.1.conv2"``). It must
            run exactly once per forward.
        reshape_transform: turns the layer's output (and its gradient) into
            ``(N, C, *spatial)`` maps before GradCAM, for layers whose output is
            not channels-first: ``attribution.utils.token_grid_reshape(h, w)``
            for vision-transformer tokens ``(N, 1 + h*w, D)``,
            ``attribution.utils.channels_last_reshape`` for ``(N, H, W, C)``
            (pytorch-grad-cam's convention).

    Example:
        >>> cam = LayerGradCam(model, model.layer3[1].conv2).attribute(image, target=3)  # doctest: +SKIP
        >>> heat = LayerAttribution.interpolate(cam, image.shape[2:])  # doctest: +SKIP
        >>> grid = token_grid_reshape(14, 14)  # 1 class token + 14 x 14 patches  # doctest: +SKIP
        >>> vit_cam = LayerGradCam(vit, "encoder.layers.encoder_layer_11", reshape_transform=grid)  # doctest: +SKIP
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: nn.Module | str,
        *,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(forward_func, layer)
        if reshape_transform is not None and not callable(reshape_transform):
            raise ArgumentTypeError(
                f"reshape_transform: expected a callable from the layer's output to (N, C, *spatial), "
                f"got {type(reshape_transform).__name__}"
            )
        self.reshape_transform = reshape_transform

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple:
        """GradCAM map of the layer's output (or input).

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            attribute_to_layer_input: attribute to the layer's input instead.
            relu_attributions: keep only positive evidence (the paper's ReLU).
            attr_dim_summation: sum over channels (default) to one map.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            ``(N, 1, *spatial)`` maps (``(N, C, *spatial)`` without summation);
            a tuple if the layer's output is a tuple.

        Raises:
            ValueError: if the layer does not run exactly once per forward, runs without autograd (under
                ``torch.no_grad()`` or reentrant checkpointing in the model's forward), or gives tokens
                ``(N, T, D)`` for image inputs while no ``reshape_transform`` makes them a spatial map.
        """
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        cams, was_tuple = functional.layer_gradcam(
            call.objective,
            call.inputs,
            self.layer,
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=relu_attributions,
            attr_dim_summation=attr_dim_summation,
            reshape_transform=self.reshape_transform,
            grad_kwargs=grad_kwargs,
        )
        return cams if was_tuple else cams[0]


def _layer_output(values: tuple[Tensor, ...], was_tuple: bool) -> TensorOrTuple:
    """One tensor per tensor the layer produced: a tuple exactly when the layer returned one."""
    return values if was_tuple else values[0]


class _MultipliedLayerAttribution(LayerAttribution, GradientAttribution):
    def __init__(
        self, forward_func: Callable[..., Tensor], layer: nn.Module | str, multiply_by_inputs: bool = True
    ) -> None:
        super().__init__(forward_func, layer)
        self._multiply_by_inputs = multiply_by_inputs


@register("layer_activation")
class LayerActivation(LayerAttribution):
    """The activations of a layer: its output (or input) as the model computes it.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name, or a list of them (``attribute`` then returns a list, one
            entry per layer). It must run exactly once per forward.

    Example:
        >>> features = LayerActivation(model, "layer3").attribute(images)  # doctest: +SKIP
    """

    takes_target = False
    _multiply_by_inputs = True
    accepts_layer_lists = True

    def attribute(
        self, inputs: TensorOrTuple, additional_forward_args: Any = None, attribute_to_layer_input: bool = False
    ) -> TensorOrTuple:
        """The layer's output (or input) for ``inputs``, before any in-place op downstream changes it.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            additional_forward_args: extra arguments passed to the model.
            attribute_to_layer_input: return the layer's input instead.

        Returns:
            The activations; a tuple if the layer's output (input) is a tuple.

        Raises:
            ValueError: if the layer does not run exactly once per forward.
        """
        call = canonical_call(self.forward_func, inputs, None, additional_forward_args)
        results = [
            _layer_output(
                *layer_activation(call.objective, call.inputs, layer, attribute_to_layer_input=attribute_to_layer_input)
            )
            for layer in self.layers()
        ]
        return results if isinstance(self.layer, list) else results[0]


@register("layer_gradient_x_activation")
class LayerGradientXActivation(_MultipliedLayerAttribution):
    """The target's gradient with respect to a layer's activations, times the activations.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name, or a list of them (``attribute`` then returns a list, one
            entry per layer). It must run exactly once per forward.
        multiply_by_inputs: multiply by the activations (default); False gives the layer gradient.
    """

    accepts_layer_lists = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple:
        """Gradient times activation of the layer's output (or input).

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0 (integer
                tensors such as token ids are fine).
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            attribute_to_layer_input: attribute to the layer's input instead.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the activations; a tuple if the layer's output is one.

        Raises:
            ValueError: if the layer does not run exactly once per forward.
        """
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        results = []
        for layer in self.layers():
            attrs, was_tuple = layer_gradient_x_activation(
                call.objective,
                call.inputs,
                layer,
                multiply_by_inputs=self.multiplies_by_inputs,
                attribute_to_layer_input=attribute_to_layer_input,
                grad_kwargs=grad_kwargs,
            )
            results.append(_layer_output(attrs, was_tuple))
        return results if isinstance(self.layer, list) else results[0]


@register("internal_influence", probe_options={"n_steps": 16})
class InternalInfluence(LayerAttribution, GradientAttribution):
    """Internal influence (Leino et al., 2018): the layer gradient integrated along the input path.

    ``integral_0^1 d f / d a (a(b + t (x - b))) dt``, not multiplied by anything.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name. It must run exactly once per forward.
    """

    needs_float_inputs = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple:
        """Integrate the layer gradient from ``baselines`` to ``inputs``.

        Args:
            inputs, baselines, target, additional_forward_args, n_steps, method,
                internal_batch_size: as in :meth:`IntegratedGradients.attribute`.
            attribute_to_layer_input: attribute to the layer's input instead.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the activations; a tuple if the layer's output is one.

        Raises:
            ValueError: bad ``n_steps``, ``method``, baselines or target, or a
                layer that does not run exactly once per forward.
        """
        check_path_arguments(n_steps, method, internal_batch_size)
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, was_tuple = internal_influence(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            self.layer,
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        return _layer_output(attrs, was_tuple)


@register("layer_conductance", probe_options={"n_steps": 16})
class LayerConductance(LayerAttribution, GradientAttribution):
    """Conductance (Dhamdhere et al., 2018): how much of the input path integral flows through each unit.

    ``sum_k grad_a f(x_k) * (a(x_{k+1}) - a(x_k))`` over the ``n_steps + 1``
    points ``x_k`` that the rule places on the path from the baseline to the
    input; summed over the layer it approximates ``f(x) - f(baseline)``.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name. It must run exactly once per forward.
    """

    returns_delta = True
    needs_float_inputs = True
    _multiply_by_inputs = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ):
        """Conductance of every unit of the layer's output (or input).

        Args:
            inputs, baselines, target, additional_forward_args, method,
                internal_batch_size, return_convergence_delta: as in
                :meth:`IntegratedGradients.attribute`.
            n_steps: number of steps; the rule places ``n_steps + 1`` points.
            attribute_to_layer_input: attribute to the layer's input instead.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the activations (a tuple if the layer's
            output is one), and the delta per example if requested.

        Raises:
            ValueError: bad ``n_steps``, ``method``, baselines or target, or a
                layer that does not run exactly once per forward.
        """
        check_path_arguments(n_steps, method, internal_batch_size, nodes=n_steps + 1)
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, delta, was_tuple = layer_conductance(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            self.layer,
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        return with_delta(_layer_output(attrs, was_tuple), delta, return_convergence_delta)


@register("layer_integrated_gradients", probe_options={"n_steps": 16})
class LayerIntegratedGradients(_MultipliedLayerAttribution):
    """Integrated gradients in a layer's activation space (e.g. over token embeddings).

    The layer's output is moved from its value at the baseline to its value
    at the input while the rest of the model sees the original inputs, so
    the inputs may be integer token ids feeding an embedding layer.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name, or a list of layers that do not feed one another: they move
            along their paths together, as in Captum, and ``attribute`` returns a list, one entry per layer.
            Each must run exactly once per forward.
        multiply_by_inputs: multiply by ``a(x) - a(baseline)`` (default).

    Example:
        >>> lig = LayerIntegratedGradients(model, model.embedding)  # doctest: +SKIP
        >>> attr, delta = lig.attribute(  # doctest: +SKIP
        ...     token_ids, baselines=pad_id, target=1, return_convergence_delta=True
        ... )
    """

    returns_delta = True
    accepts_layer_lists = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ):
        """Integrate the layer gradient from ``a(baselines)`` to ``a(inputs)``.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0, of any dtype.
            baselines: as in :meth:`IntegratedGradients.attribute`, in the
                inputs' dtype (for token ids: a pad id, or a tensor of them).
            target, additional_forward_args, n_steps, method, internal_batch_size,
                return_convergence_delta: as in :meth:`IntegratedGradients.attribute`.
            attribute_to_layer_input: integrate over the layer's input instead.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the activations (a tuple if the layer's
            output is one), and the delta per example if requested.

        Raises:
            ValueError: bad ``n_steps``, ``method``, baselines or target, or a
                layer that does not run exactly once per forward.
        """
        check_path_arguments(n_steps, method, internal_batch_size)
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        attrs, delta, was_tuple = layer_integrated_gradients(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            self.layer,
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        if isinstance(self.layer, list):
            return with_delta([_layer_output(*one) for one in zip(attrs, was_tuple)], delta, return_convergence_delta)
        return with_delta(_layer_output(attrs, was_tuple), delta, return_convergence_delta)
