"""Gradient methods to a layer: LayerActivation, LayerGradientXActivation and LayerGradCam."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from attribution import functional
from attribution._internal.canonical import TargetType, TensorOrTuple, canonical_call
from attribution._internal.checks import ArgumentTypeError, check_grad_kwargs
from attribution.functional.layer.gradient import (
    gradient_mean_weights,
    layer_activation,
    layer_gradient_x_activation,
)
from attribution.methods.base import GradientAttribution, LayerAttribution, MultipliedLayerAttribution, layer_output
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
        >>> import torch
        >>> from torch import nn
        >>> from torchvision.models import VisionTransformer
        >>> from attribution import LayerAttribution, LayerGradCam
        >>> from attribution.utils import token_grid_reshape
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> cam = LayerGradCam(model, model[0]).attribute(images, target=2)
        >>> cam.shape  # one map per example at the layer's resolution
        torch.Size([2, 1, 4, 4])
        >>> LayerAttribution.interpolate(cam, images.shape[2:]).shape  # upsampled onto the image
        torch.Size([2, 1, 8, 8])
        >>> vit = VisionTransformer(image_size=8, patch_size=4, num_layers=1, num_heads=1, hidden_dim=4, mlp_dim=8)
        >>> grid = token_grid_reshape(2, 2)  # 1 class token + 2 x 2 patches
        >>> vit_cam = LayerGradCam(vit, "encoder.layers.encoder_layer_0", reshape_transform=grid)
        >>> vit_cam.attribute(images, target=2).shape
        torch.Size([2, 1, 2, 2])
    """

    needs_spatial_layer = True

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
            self._one_layer(),
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=relu_attributions,
            attr_dim_summation=attr_dim_summation,
            reshape_transform=self.reshape_transform,
            grad_kwargs=grad_kwargs,
            channel_weights=self.channel_weights,
        )
        return cams if was_tuple else cams[0]

    @staticmethod
    def channel_weights(activations: Tensor, gradients: Tensor) -> Tensor:
        """The weights of the ``(N, C, *spatial)`` activations, from them and the target's gradients: GradCAM's
        spatial mean of the gradient. A CAM variant overrides this and nothing else (pytorch-grad-cam's
        ``get_cam_weights``); see the docs' how-to "Add a method"."""
        return gradient_mean_weights(activations, gradients)


@register("layer_activation")
class LayerActivation(LayerAttribution):
    """The activations of a layer: its output (or input) as the model computes it.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name, or a list of them (``attribute`` then returns a list, one
            entry per layer). It must run exactly once per forward.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import LayerActivation
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> LayerActivation(model, "2").attribute(images).shape  # the output of model[2], the pooling
        torch.Size([2, 4, 1, 1])
    """

    takes_target = False
    _multiply_by_inputs = True
    accepts_layer_lists = True

    def attribute(
        self, inputs: TensorOrTuple, additional_forward_args: Any = None, attribute_to_layer_input: bool = False
    ) -> TensorOrTuple | list[TensorOrTuple]:
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
            layer_output(
                *layer_activation(call.objective, call.inputs, layer, attribute_to_layer_input=attribute_to_layer_input)
            )
            for layer in self.layers()
        ]
        return results if isinstance(self.layer, list) else results[0]


@register("layer_gradient_x_activation")
class LayerGradientXActivation(MultipliedLayerAttribution):
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
    ) -> TensorOrTuple | list[TensorOrTuple]:
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
            results.append(layer_output(attrs, was_tuple))
        return results if isinstance(self.layer, list) else results[0]
