"""Layer gradient methods' core: a layer's activations, gradient x activation, and GradCAM.

GradCAM's maps are channel-weighted activations of a spatial layer; :mod:`attribution.functional.layer.maps`
turns other layer outputs into such maps (``reshape_transform``) and resizes maps to the input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from attribution._internal.autograd import grad_enabled, layer_activations, layer_gradients, plain_inputs
from attribution._internal.canonical import Objective
from attribution._internal.checks import ArgumentError


def layer_gradcam(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    attribute_to_layer_input: bool = False,
    relu_attributions: bool = False,
    attr_dim_summation: bool = True,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    grad_kwargs: Mapping[str, Any] | None = None,
    refuse_tokens: bool = True,
    channel_weights: ChannelWeights | None = None,
) -> tuple[tuple[Tensor, ...], bool]:
    """GradCAM: activations weighted by the spatial mean of their gradients.

    Each channel's weight is the mean of the target's gradient over the
    channel's spatial positions (dims 2 and up); layers without spatial dims
    use the gradient itself.  The weighted activations are summed over
    channels unless ``attr_dim_summation`` is False.  ``reshape_transform``
    turns activations and gradients alike into ``(N, C, *spatial)`` first
    (e.g. :func:`~attribution.utils.token_grid_reshape` for ViT tokens).
    ``channel_weights`` replaces the spatial mean: a function of the
    ``(N, C, *spatial)`` activations and gradients giving weights that
    broadcast against them (other CAM variants differ only there).

    Returns:
        ``(attributions, layer_returned_tuple)``, one attribution per tensor
        the layer produced.

    Raises:
        ValueError: with ``refuse_tokens``, image inputs (``(N, C, H, W)`` or more dims) and a layer that
            gives tokens ``(N, T, D)``, without ``reshape_transform``: read as ``(N, C, L)`` they would give a
            map over the embedding dimension, not over the image.  (Guided GradCAM passes False: like
            Captum, it gives such inputs an empty tensor and a warning.)
    """
    activations, grads, was_tuple = layer_gradients(
        objective, inputs, layer, attribute_to_layer_input, grad_kwargs=grad_kwargs
    )
    if reshape_transform is None:
        if refuse_tokens:
            _check_spatial(activations, inputs[0], layer)
    else:
        activations = tuple(reshape_transform(a) for a in activations)
        grads = tuple(reshape_transform(g) for g in grads)
    weigh = channel_weights or gradient_mean_weights
    cams = []
    for a, g in zip(activations, grads):
        cam = weigh(a, g) * a
        if attr_dim_summation:
            cam = cam.sum(dim=1, keepdim=True)
        cams.append(F.relu(cam) if relu_attributions else cam)
    return tuple(cams), was_tuple


ChannelWeights = Callable[[Tensor, Tensor], Tensor]
"""``(activations, gradients) -> weights``: a CAM's per-channel (or per-position) weights of the activations."""


def gradient_mean_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """GradCAM's channel weights: the gradient's mean over the spatial dims (the gradient itself without any)."""
    return gradients.mean(dim=tuple(range(2, gradients.dim())), keepdim=True) if gradients.dim() > 2 else gradients


def _check_spatial(activations: tuple[Tensor, ...], x: Tensor, layer: nn.Module) -> None:
    """Refuse token-shaped activations ``(N, T, D)`` of a model that takes images: GradCAM would average
    the gradient over ``D`` and sum over the tokens, a "map" over the embedding dimension.  (A 3-D
    output of a model with 1-D inputs is a 1-D convolution's ``(N, C, L)`` and stays as it is.)"""
    for a in activations:
        if a.dim() == 3 and x.dim() >= 4:
            raise ArgumentError(
                f"layer: {type(layer).__name__} outputs shape {tuple(a.shape)}, tokens (N, T, D) rather than the "
                f"spatial map (N, C, h, w) GradCAM needs for inputs of shape {tuple(x.shape)}; pass "
                f"reshape_transform=attribution.utils.{_token_grid_hint(a.shape[1], x.shape[-2], x.shape[-1])} "
                f"(h x w patches after prefix_tokens class/distillation tokens), or any callable to (N, C, h, w)"
            )


def _token_grid_hint(tokens: int, height: int, width: int) -> str:
    """``token_grid_reshape(h, w, prefix)`` with a patch grid shaped like the image, when one fits."""
    for prefix in (1, 0, 2):  # a class token (ViT), none, class and distillation tokens (DeiT)
        patches = tokens - prefix
        for rows in range(1, patches + 1):
            if patches % rows == 0 and rows * width == (patches // rows) * height and patches > 1:
                return f"token_grid_reshape({rows}, {patches // rows}, {prefix})"
    return "token_grid_reshape(h, w, prefix_tokens)"


def layer_activation(
    objective: Objective, inputs: tuple[Tensor, ...], layer: nn.Module, *, attribute_to_layer_input: bool = False
) -> tuple[tuple[Tensor, ...], bool]:
    """The layer's output (or input) as the model computes it, before any in-place op downstream.

    Returns:
        ``(activations, layer_returned_tuple)``.
    """
    activations, was_tuple, _ = layer_activations(objective, inputs, layer, attribute_to_layer_input)
    return activations, was_tuple


def layer_gradient_x_activation(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    multiply_by_inputs: bool = True,
    attribute_to_layer_input: bool = False,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], bool]:
    """The target's gradient with respect to the layer's activations, times the activations.

    Returns:
        ``(attributions, layer_returned_tuple)``; the bare gradients when
        ``multiply_by_inputs`` is False.
    """
    with grad_enabled():
        inputs = plain_inputs(inputs)
    activations, grads, was_tuple = layer_gradients(
        objective, inputs, layer, attribute_to_layer_input, grad_kwargs=grad_kwargs
    )
    attrs = tuple(g * a for g, a in zip(grads, activations)) if multiply_by_inputs else grads
    return attrs, was_tuple
