"""How the monitor meets the user's model: what to feed it, how to read its output, where GradCAM looks.

Decided once, at the start of fit, from one forward of the probe with every module's output shape
recorded: a probe that does not fit the model is an error before training starts, not a warning at
every epoch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn

from attribution.outputs import ModelScores, default_output_transform
from attribution.utils import channels_last_reshape, token_grid_reshape
from lightning_xai._probe import Probe

NORMALIZATION = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
ASPECT_TOLERANCE = 0.5
"""A spatial map's height/width ratio may differ this much (relatively) from the input's (odd sizes round)."""
PREFIX_TOKENS = (1, 0, 2)
"""Leading non-patch tokens tried for token-shaped layers: a class token (ViT), none, class + distillation (DeiT)."""


@dataclass(frozen=True)
class LayerOutput:
    """A module and the (first) tensor it produced in the probe forward."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    tensor_id: int


@dataclass(frozen=True)
class ModelView:
    """The probe's forward function and arguments, and what one forward showed."""

    forward: Callable[..., Tensor]  # the model itself when it returns class scores, else ModelScores
    forward_args: tuple[Tensor, ...]
    scores: Tensor  # (N, C) on the probe
    layers: tuple[LayerOutput, ...]  # every module that returned a tensor, in the order they finished

    def args_on(self, device: torch.device) -> tuple[Tensor, ...]:
        return tuple(t.to(device) for t in self.forward_args)


def keyword_inputs(model: nn.Module, probe: Probe) -> tuple[str | None, tuple[str, ...]]:
    """How the forward takes the probe's tensors: the attributed input's keyword (None: first positional
    argument) and the names of the other tensors it accepts by keyword."""
    parameters = inspect.signature(model.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepts = lambda key: takes_any or key in parameters  # noqa: E731
    input_key = probe.input_key if probe.input_key is not None and probe.input_key in parameters else None
    if probe.input_key is not None and input_key is None and takes_any and not _positional(parameters):
        input_key = probe.input_key  # a forward(**kwargs) only: every tensor goes by keyword
    return input_key, tuple(key for key in probe.forward_tensors if accepts(key))


def _positional(parameters: Any) -> bool:
    keyword_only = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)
    return any(p.kind not in keyword_only for p in parameters.values())


def inspect_model(
    model: nn.Module, probe: Probe, inputs: Tensor, output_transform: Callable[[Any], Tensor] | None
) -> ModelView:
    """Run the probe (``inputs``: its inputs on the model's device and dtype) through ``model`` (call
    inside the monitor's untouched training state): once on two examples with every module's output
    recorded, once on the whole probe for its class scores.

    Raises:
        MisconfigurationException: naming ``probe`` (or ``output_transform``) when the forward fails or
            its output cannot be read as class scores.
    """
    input_key, keys = keyword_inputs(model, probe)
    transform = output_transform or default_output_transform
    device = inputs.device
    tensors = tuple(probe.forward_tensors[k].to(device) for k in keys)
    seen: list[tuple[str, nn.Module, Tensor]] = []  # tensors are held, so their ids stay unique

    def record(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            first = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(first, Tensor):
                seen.append((name, module, first))

        return hook

    outputs: list[Any] = []

    def run(rows: slice, hooked: bool = False) -> Any:
        handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n and hooked]
        try:
            with torch.no_grad():
                outputs.append(_call(model, inputs[rows], input_key, keys, tuple(t[rows] for t in tensors)))
                return transform(outputs[-1])
        except Exception as error:
            raise MisconfigurationException(
                f"probe: the model fails on the probe (inputs of shape {tuple(probe.inputs.shape)}"
                + (f", passed as {input_key}=" if input_key else "")
                + (f", with {list(keys)} by keyword" if keys else "")
                + f"): {type(error).__name__}: {error}"
            ) from error
        finally:
            for handle in handles:
                handle.remove()

    run(slice(0, 2), hooked=True)
    raw = run(slice(None))
    layers = tuple(LayerOutput(name, module, tuple(t.shape), id(t)) for name, module, t in seen)
    if not isinstance(raw, Tensor) or raw.dim() == 0 or raw.shape[0] != len(probe):
        raise MisconfigurationException(
            f"output_transform: expected scores with one row per probe example ({len(probe)}), got "
            f"{tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__}"
        )
    region = probe.masks is not None and raw.dim() > 2  # segmentation: explain class scores inside the mask
    forward = ModelScores(model, transform, input_key, keys, with_region=region)
    if transform is default_output_transform and not (input_key or keys or region) and _class_scores(outputs[-1]):
        forward = model  # the model itself: the engine's fast paths (occlusion's local re-evaluation) see it
    args = tuple(probe.forward_tensors[k] for k in keys) + ((probe.masks,) if region else ())
    with torch.no_grad():
        scores = forward(inputs, *(t.to(device) for t in args))
    return ModelView(forward, args, scores, layers)


def _class_scores(output: Any) -> bool:
    """Whether a model output is already what the monitor explains: ``(N, C)`` scores of two or more classes."""
    return isinstance(output, Tensor) and output.dim() == 2 and output.shape[1] > 1


def _call(model: nn.Module, inputs: Tensor, input_key: str | None, keys: tuple[str, ...], tensors: tuple) -> Any:
    keywords = dict(zip(keys, tensors))
    return model(inputs, **keywords) if input_key is None else model(**{input_key: inputs}, **keywords)


# --------------------------------------------------------------------------- GradCAM's layer


def _is_spatial(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[2] * shape[3] > 1


def gradcam_reshape(shape: tuple[int, ...], input_size: tuple[int, int]) -> tuple[Callable | None, str]:
    """How to make a layer output of ``shape`` a ``(N, C, h, w)`` map for images of ``input_size``.

    A 4-D output is read channels-first or channels-last, whichever puts a grid shaped like the input
    in the spatial dims; a 3-D output as vision-transformer tokens when their count fits such a grid.

    Returns:
        ``(reshape_transform or None, layout)`` with layout ``"channels_first"``, ``"channels_last"`` or
        ``"tokens"``; ``(None, "")`` when the output cannot be read as a spatial map.
    """
    if len(shape) == 4:
        candidates = [(shape[2:], "channels_first"), (shape[1:3], "channels_last")]
        fits = [(_aspect_error(grid, input_size), layout) for grid, layout in candidates if grid[0] * grid[1] > 1]
        fits = [fit for fit in fits if fit[0] <= ASPECT_TOLERANCE]
        if fits:
            layout = min(fits)[1]  # ties: channels-first, the PyTorch convention
            return (channels_last_reshape if layout == "channels_last" else None), layout
        return None, ""
    if len(shape) == 3:
        grid = token_grid(shape[1], input_size)
        if grid is not None:
            (height, width), prefix = grid
            return token_grid_reshape(height, width, prefix), "tokens"
    return None, ""


def _aspect_error(spatial: tuple[int, ...], input_size: tuple[int, int]) -> float:
    """Relative difference between a candidate grid's aspect ratio and the input's (0: the same)."""
    grid_ratio, input_ratio = spatial[0] / spatial[1], input_size[0] / input_size[1]
    return abs(grid_ratio - input_ratio) / input_ratio


def token_grid(tokens: int, input_size: tuple[int, int]) -> tuple[tuple[int, int], int] | None:
    """``((h, w), prefix)`` when ``tokens`` is ``prefix + h * w`` patches on a grid shaped like the input."""
    height, width = input_size
    for prefix in PREFIX_TOKENS:
        patches = tokens - prefix
        for rows in range(1, patches + 1):
            if patches % rows == 0 and rows * width == (patches // rows) * height and patches > 1:
                return (rows, patches // rows), prefix
    return None


def default_layer(view: ModelView, input_size: tuple[int, int]) -> str | None:
    """GradCAM's default layer: the last convolution, unless blocks with token-shaped or channels-last
    spatial outputs run after it (a transformer): then the last such block that is not a normalisation.

    Among modules returning the same tensor (a block and the ``Sequential`` holding it), the innermost
    is named.
    """
    layers = view.layers
    convs = [i for i, out in enumerate(layers) if isinstance(out.module, nn.modules.conv._ConvNd)]
    start = convs[-1] + 1 if convs else 0
    norm_outputs = {out.tensor_id for out in layers if isinstance(out.module, NORMALIZATION)}
    first_name = {}
    for out in layers:
        first_name.setdefault(out.tensor_id, out.name)
    blocks = [
        out
        for out in layers[start:]
        if list(out.module.children())
        and out.tensor_id not in norm_outputs
        and gradcam_reshape(out.shape, input_size)[1] in ("channels_last", "tokens")
    ]
    if blocks:
        return first_name[blocks[-1].tensor_id]
    return layers[convs[-1]].name if convs and _is_spatial(layers[convs[-1]].shape) else None


def layer_shape(view: ModelView, name: str) -> tuple[int, ...] | None:
    """The output shape of the module ``name`` in the probe forward (None if it did not run)."""
    return next((out.shape for out in view.layers if out.name == name), None)


@dataclass(frozen=True)
class LayerChoice:
    """The layer of layer methods and GradCAM, how its output becomes a map, and whether GradCAM runs."""

    name: str | None = None
    reshape_transform: Callable[[Tensor], Tensor] | None = None
    gradcam: bool = False
    note: str | None = None  # why GradCAM was left out, for a warning


def choose_layer(
    view: ModelView, inputs: Tensor, layer: str | None, gradcam: bool, needs_layer: bool, gradcam_named: bool
) -> LayerChoice:
    """Pick (or check) the layer from what the probe forward showed.

    Args:
        view: the probe forward.
        inputs: the probe's inputs (images ``(N, C, H, W)`` get GradCAM; token ids do not).
        layer: the user's layer, or None for the default.
        gradcam: GradCAM is wanted by default (``AttributionMonitor(gradcam=True)``).
        needs_layer: a requested method needs a layer.
        gradcam_named: ``layer_gradcam`` (or ``guided_gradcam``) is among the requested methods.

    Raises:
        MisconfigurationException: no layer for methods that need one; a layer that does not run; a layer
            whose output is no spatial map while GradCAM was asked for by name.
    """
    images = inputs.dim() == 4
    size = tuple(inputs.shape[-2:])
    name = layer if layer is not None else (default_layer(view, size) if images else None)
    if name is None:
        if needs_layer:
            raise MisconfigurationException(
                "layer: the requested methods need a layer and there is no convolution or transformer block "
                "to default to; pass layer=<dotted module name>"
            )
        return LayerChoice(note=None if not images else "the model has no convolution or transformer block")
    shape = layer_shape(view, name)
    if shape is None:
        raise MisconfigurationException(f"layer: {name!r} does not run in the model's forward on the probe")
    reshape, layout = gradcam_reshape(shape, size) if images else (None, "")
    if gradcam_named and not layout:
        raise MisconfigurationException(
            f"layer: GradCAM needs a spatial map, but {name!r} outputs shape {shape}"
            + (" for image inputs" if images else f" for inputs of shape {tuple(inputs.shape)} (not images)")
            + "; choose a layer with (N, C, h, w), (N, h, w, C) or vision-transformer token outputs"
        )
    if not layout:
        note = f"the output of {name!r} has shape {shape}, not a spatial map" if images else None
        return LayerChoice(name, None, False, note)
    return LayerChoice(name, reshape, gradcam)
