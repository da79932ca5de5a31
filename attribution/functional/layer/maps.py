"""Layer maps as image maps: ``reshape_transform`` functions that turn a layer's output into
``(N, C, *spatial)`` maps (vision-transformer tokens, channels-last layers), and :func:`interpolate`, which
resizes a layer attribution to the input's size (:meth:`attribution.LayerAttribution.interpolate`)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice, describe


def token_grid_reshape(height: int, width: int, prefix_tokens: int = 1) -> Callable[[Tensor], Tensor]:
    """A ``reshape_transform`` for vision-transformer tokens: ``(N, prefix + height * width, D)`` to
    ``(N, D, height, width)``, dropping the ``prefix_tokens`` leading tokens (class, distillation, ...).

    Raises (when applied):
        ValueError: the layer's output is not ``(N, prefix_tokens + height * width, D)``.
    """

    def reshape(tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != prefix_tokens + height * width:
            raise ArgumentError(
                f"reshape_transform: expected tokens (N, {prefix_tokens} + {height}*{width}, D), "
                f"got {tuple(tokens.shape)}"
            )
        grid = tokens[:, prefix_tokens:].reshape(tokens.shape[0], height, width, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    return reshape


def channels_last_reshape(maps: Tensor) -> Tensor:
    """A ``reshape_transform`` for channels-last layer outputs ``(N, *spatial, C)`` (Swin, ConvNeXt
    blocks): channels moved to dim 1."""
    return maps.movedim(-1, 1)


INTERPOLATE_MODES = {
    "nearest": None,
    "nearest-exact": None,
    "area": None,
    "linear": 1,
    "bilinear": 2,
    "bicubic": 2,
    "trilinear": 3,
}
"""``F.interpolate``'s modes and the number of spatial dims each needs (None: any)."""


def interpolate(
    layer_attribution: Tensor, interpolate_dims: int | Sequence[int], interpolate_mode: str = "nearest"
) -> Tensor:
    """Resize a layer attribution ``(N, C, *spatial)`` to ``interpolate_dims`` (e.g. the input's H, W).

    Raises:
        TypeError: ``layer_attribution`` is not a tensor, or ``interpolate_dims`` is not an int or a
            sequence of ints.
        ValueError: maps without spatial dims, sizes < 1, a number of sizes other than the maps' spatial
            dims (an int serves them all), or a mode for another number of spatial dims.
    """
    if not isinstance(layer_attribution, Tensor):
        raise ArgumentTypeError(
            f"layer_attribution: expected a tensor (N, C, *spatial), got {describe(layer_attribution)}"
        )
    spatial = layer_attribution.dim() - 2
    if spatial < 1:
        raise ArgumentError(
            f"layer_attribution: expected maps (N, C, *spatial) to resize, got shape "
            f"{tuple(layer_attribution.shape)} (a layer without spatial dims has no map)"
        )
    single = isinstance(interpolate_dims, numbers.Integral)
    sizes = list(interpolate_dims) if isinstance(interpolate_dims, Sequence) else [interpolate_dims]
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in sizes):
        raise ArgumentTypeError(
            f"interpolate_dims: expected an int or a sequence of ints (e.g. inputs.shape[2:]), "
            f"got {describe(interpolate_dims)}"
        )
    if not sizes or any(v < 1 for v in sizes):
        raise ArgumentError(f"interpolate_dims: expected sizes >= 1, got {interpolate_dims!r}")
    if not single and len(sizes) != spatial:
        hint = ""
        if spatial == 1 and len(sizes) > 1:  # the usual way here: transformer tokens (N, T, D) read as (N, C, L)
            hint = (
                "; layer outputs of tokens (N, T, D) are no image map: give LayerGradCam "
                "reshape_transform=attribution.utils.token_grid_reshape(h, w, prefix_tokens)"
            )
        raise ArgumentError(
            f"interpolate_dims: expected {spatial} size(s) for maps of shape {tuple(layer_attribution.shape)}, "
            f"got {tuple(sizes)}{hint}"
        )
    check_choice(interpolate_mode, "interpolate_mode", INTERPOLATE_MODES)
    needed = INTERPOLATE_MODES[interpolate_mode]
    if needed is not None and needed != spatial:
        raise ArgumentError(
            f"interpolate_mode: {interpolate_mode!r} resizes maps with {needed} spatial dim(s), the maps have shape "
            f"{tuple(layer_attribution.shape)}; use 'nearest' or the mode for {spatial} dim(s)"
        )
    size = int(sizes[0]) if single else tuple(int(v) for v in sizes)
    return F.interpolate(layer_attribution, size=size, mode=interpolate_mode)
