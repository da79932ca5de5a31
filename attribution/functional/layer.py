"""Layer methods: attributions to the activations of a hidden layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from attribution._autograd import layer_gradients
from attribution._canonical import Objective


def layer_gradcam(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    attribute_to_layer_input: bool = False,
    relu_attributions: bool = False,
    attr_dim_summation: bool = True,
) -> tuple[tuple[Tensor, ...], bool]:
    """GradCAM: activations weighted by the spatial mean of their gradients.

    Each channel's weight is the mean of the target's gradient over the
    channel's spatial positions (dims 2 and up); layers without spatial dims
    use the gradient itself.  The weighted activations are summed over
    channels unless ``attr_dim_summation`` is False.

    Returns:
        ``(attributions, layer_returned_tuple)``, one attribution per tensor
        the layer produced.
    """
    activations, grads, was_tuple = layer_gradients(objective, inputs, layer, attribute_to_layer_input)
    cams = []
    for a, g in zip(activations, grads):
        weights = g.mean(dim=tuple(range(2, g.dim())), keepdim=True) if g.dim() > 2 else g
        cam = weights * a
        if attr_dim_summation:
            cam = cam.sum(dim=1, keepdim=True)
        cams.append(F.relu(cam) if relu_attributions else cam)
    return tuple(cams), was_tuple


def interpolate(
    layer_attribution: Tensor, interpolate_dims: int | Sequence[int], interpolate_mode: str = "nearest"
) -> Tensor:
    """Resize a layer attribution ``(N, C, *spatial)`` to ``interpolate_dims`` (e.g. the input's H, W)."""
    size = interpolate_dims if isinstance(interpolate_dims, int) else tuple(interpolate_dims)
    return F.interpolate(layer_attribution, size=size, mode=interpolate_mode)
