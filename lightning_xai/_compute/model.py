"""How the monitor meets the user's model: what to feed it and how to read its output (where GradCAM
looks: :mod:`lightning_xai._compute.gradcam_layer`).

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
from lightning_xai._config.probe import Probe


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

    def accepts(key: str) -> bool:
        return takes_any or key in parameters

    input_key = probe.input_key if probe.input_key is not None and probe.input_key in parameters else None
    if probe.input_key is not None and input_key is None and takes_any and not _positional(parameters):
        input_key = probe.input_key  # a forward(**kwargs) only: every tensor goes by keyword
    return input_key, tuple(key for key in probe.forward_tensors if accepts(key))


WHOLE_BATCH_NAMES = ("batch", "inputs", "data", "sample", "samples", "example")
"""Parameter names of a ``forward`` that takes the whole batch (a dict or tuple) instead of its tensors."""


def _whole_batch_hint(model: nn.Module, probe: Probe, input_key: str | None) -> str:
    """A hint when the forward seems to take the whole batch: the monitor passes the input tensor itself."""
    parameters = [p for p in inspect.signature(model.forward).parameters.values() if p.kind is not p.VAR_KEYWORD]
    if input_key is not None or len(parameters) != 1 or parameters[0].name not in WHOLE_BATCH_NAMES:
        return ""
    given = f"the {probe.input_key!r} tensor" if probe.input_key else "the input tensor"
    takes = ", ".join([probe.input_key or "x", *probe.forward_tensors])
    return (
        f". The model's forward takes {parameters[0].name!r}, which looks like the whole batch, but the monitor "
        f"calls it with {given} (and the batch's other tensors by keyword when the forward names them): give the "
        f"LightningModule a forward over tensors, e.g. def forward(self, {takes}), and read the batch in "
        f"training_step"
    )


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

    def record(name: str) -> Callable[[nn.Module, Any, Any], None]:
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
                + _whole_batch_hint(model, probe, input_key)
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
    region = probe.masks if raw.dim() > 2 else None  # segmentation: explain class scores inside the mask
    forward: Callable[..., Tensor] = ModelScores(model, transform, input_key, keys, with_region=region is not None)
    if (
        transform is default_output_transform
        and not (input_key or keys or region is not None)
        and _class_scores(outputs[-1])
    ):
        forward = model  # the model itself: the engine's fast paths (occlusion's local re-evaluation) see it
    args = tuple(probe.forward_tensors[k] for k in keys) + ((region,) if region is not None else ())
    with torch.no_grad():
        scores = forward(inputs, *(t.to(device) for t in args))
    return ModelView(forward, args, scores, layers)


def _class_scores(output: Any) -> bool:
    """Whether a model output is already what the monitor explains: ``(N, C)`` scores of two or more classes."""
    return isinstance(output, Tensor) and output.dim() == 2 and output.shape[1] > 1


def _call(
    model: nn.Module, inputs: Tensor, input_key: str | None, keys: tuple[str, ...], tensors: tuple[Tensor, ...]
) -> Any:
    keywords = dict(zip(keys, tensors))
    return model(inputs, **keywords) if input_key is None else model(**{input_key: inputs}, **keywords)
