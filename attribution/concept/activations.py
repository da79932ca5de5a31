"""Layer activations and layer gradients of several layers at once, and their store on disk.

Every layer is hooked for one forward (and one backward for the gradients), whatever the number of layers;
the hooks are removed on exit, also when the model raises.  Activations are kept flat, ``(N, F)``: a layer
that returns a tuple gives its float tensors flattened side by side.

On disk, activations follow Captum's ``AV`` layout, ``<path>/av/<model_id>/<identifier>/<layer>/<n>.pt``,
with all of a concept's examples in one file ``0.pt``; Captum's ``AV.load`` reads them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.autograd import grad_enabled, plain_inputs, resolve_layer
from attribution._internal.canonical import TargetType, canonical_call, format_inputs
from attribution._internal.checks import ArgumentError


class _Record:
    """What the hook of one layer saw."""

    def __init__(self) -> None:
        self.values: list[Tensor] = []
        self.calls = 0


@contextmanager
def _recording(layer: nn.Module, use_input: bool, detach: bool) -> Iterator[_Record]:
    """Record the float tensors of the layer's output (or input).  Downstream gets clones, so in-place ops
    there cannot change what is recorded (and, with gradients, the recorded tensors stay differentiable)."""
    record = _Record()

    def keep(values: tuple[Any, ...]) -> tuple[Any, ...]:
        record.calls += 1
        passed = []
        for v in values:
            if isinstance(v, Tensor) and v.is_floating_point():
                if detach:
                    record.values.append(v.detach().flatten(1).clone())
                    passed.append(v)
                else:
                    record.values.append(v)
                    passed.append(v.clone())
            else:
                passed.append(v)
        return tuple(passed)

    def on_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return keep(args)

    def on_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        passed = keep(output if isinstance(output, tuple) else (output,))
        return passed if isinstance(output, tuple) else passed[0]

    handle = layer.register_forward_pre_hook(on_input) if use_input else layer.register_forward_hook(on_output)
    try:
        yield record
    finally:
        handle.remove()


def _check(record: _Record, name: str) -> None:
    if record.calls != 1:
        raise ArgumentError(
            f"layers: {name!r} ran {record.calls} times in one forward; TCAV needs a layer that runs exactly once"
        )
    if not record.values:
        raise ArgumentError(f"layers: {name!r} produced no floating-point tensor")


def layer_activations(
    model: nn.Module, layers: Sequence[str], batches: Iterable[Any], use_input: bool = False
) -> dict[str, Tensor]:
    """The flat activations ``(N, F)`` of every layer for all examples of ``batches``, one forward per batch.

    Args:
        model: the model.
        layers: dotted layer names.
        batches: tensors, or tuples of tensors for a model with several inputs.
        use_input: the layers' inputs instead of their outputs.

    Raises:
        ValueError: no batch, or a layer that does not run exactly once per forward.
    """
    modules = [resolve_layer(model, name) for name in layers]
    gathered: dict[str, list[Tensor]] = {name: [] for name in layers}
    for batch in batches:
        inputs, _ = format_inputs(batch)
        with ExitStack() as stack, torch.no_grad():
            records = [stack.enter_context(_recording(m, use_input, detach=True)) for m in modules]
            model(*inputs)
        for name, record in zip(layers, records):
            _check(record, name)
            gathered[name].append(torch.cat(record.values, dim=1))
    if not all(gathered.values()):
        raise ArgumentError("data_iter: the concept gave no batch of examples")
    return {name: torch.cat(parts) for name, parts in gathered.items()}


def layer_sensitivities(
    model: nn.Module,
    layers: Sequence[str],
    inputs: Any,
    target: TargetType = None,
    additional_forward_args: Any = None,
    use_input: bool = False,
    multiply_by_inputs: bool = False,
) -> dict[str, Tensor]:
    """The gradient of the target with respect to every layer's activations, flat ``(N, F)``, from one
    forward and one backward (times the activations with ``multiply_by_inputs``).

    ``torch.autograd.grad`` is used, so ``param.grad`` is untouched; a layer that the target does not depend
    on gets zeros.
    """
    modules = [resolve_layer(model, name) for name in layers]
    call = canonical_call(model, inputs, target, additional_forward_args)
    with grad_enabled(), ExitStack() as stack:
        records = [stack.enter_context(_recording(m, use_input, detach=False)) for m in modules]
        # inputs that require grad make every layer differentiable, even in a model with frozen parameters
        leaves_in = tuple(x.requires_grad_() if x.is_floating_point() else x for x in plain_inputs(call.inputs))
        values = call.objective(leaves_in)
        for name, record in zip(layers, records):
            _check(record, name)
        leaves = [v for record in records for v in record.values]
        grads = torch.autograd.grad(values, leaves, torch.ones_like(values), allow_unused=True)
    result: dict[str, Tensor] = {}
    start = 0
    for name, record in zip(layers, records):
        parts = []
        for value, g in zip(record.values, grads[start : start + len(record.values)]):
            g = torch.zeros_like(value) if g is None else g
            parts.append((g * value.detach() if multiply_by_inputs else g).flatten(1))
        start += len(record.values)
        result[name] = torch.cat(parts, dim=1)
    return result


# --------------------------------------------------------------------------- Captum's AV layout on disk


def av_folder(path: str, model_id: str, identifier: str, layer: str) -> str:
    """``<path>/av/<model_id>/<identifier>/<layer>``: where Captum's ``AV`` keeps a concept's activations."""
    return os.path.join(path, "av", model_id, identifier, layer)


def save_activations(path: str, model_id: str, identifier: str, layer: str, activations: Tensor) -> None:
    """Write ``activations`` as ``0.pt``, replacing the files of an earlier run."""
    folder = av_folder(path, model_id, identifier, layer)
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(os.path.join(folder, "*.pt")):
        os.remove(old)
    torch.save(activations.cpu(), os.path.join(folder, "0.pt"))


def load_activations(path: str, model_id: str, identifier: str, layer: str) -> Tensor | None:
    """A concept's activations in ``layer`` read back (all files, in batch order), or None if there is none."""
    files = glob.glob(os.path.join(av_folder(path, model_id, identifier, layer), "*.pt"))
    if not files:
        return None
    files.sort(key=lambda f: int(s) if (s := os.path.basename(f)[:-3]).isdigit() else -1)
    return torch.cat([torch.load(f, weights_only=True).flatten(1) for f in files])
