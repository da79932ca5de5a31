"""Gradients and layer activations, without touching the caller's state.

Gradients are taken with ``torch.autograd.grad`` with respect to fresh leaf
tensors, so ``param.grad`` and the ``requires_grad`` flags of the caller's
tensors never change.  Hooks live inside context managers and are removed in
``finally``, also when the model raises.

A layer whose forward runs without autograd while the attribution needs
gradients (under ``torch.no_grad()`` inside the model's forward, or inside
``torch.utils.checkpoint.checkpoint(..., use_reentrant=True)``) receives no
gradient: the hooks note it, and the gradient step raises instead of
returning all-zero attributions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from attribution._internal.canonical import Objective
from attribution._internal.checks import ArgumentError, ArgumentTypeError


@contextmanager
def grad_enabled() -> Iterator[None]:
    """Gradients on, even inside the caller's ``no_grad`` or ``inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def fresh_leaf(x: Tensor) -> Tensor:
    """A leaf that requires grad and shares nothing autograd-wise with ``x``.

    Tensors made under ``inference_mode`` cannot join a graph; they are cloned.
    """
    leaf = x.clone() if x.is_inference() else x.detach()
    return leaf.requires_grad_()


def gradients(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    repeats: int = 1,
    row_weights: Tensor | None = None,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], Tensor]:
    """Gradient of each row's target with respect to that row of the inputs.

    Rows are independent examples, so one backward of the (weighted) sum gives
    every row's own gradient; ``row_weights`` scales row ``r``'s gradient.

    Returns:
        ``(grads, outputs)``: per-input gradients shaped like ``inputs`` and
        the detached target value of every row.
    """
    with grad_enabled():
        leaves = tuple(fresh_leaf(x) for x in inputs)
        outputs = objective(leaves, repeats)
        seed = torch.ones_like(outputs) if row_weights is None else row_weights.to(outputs)
        grads = grad(outputs, leaves, seed, grad_kwargs)
    return grads, outputs.detach()


def grad(
    outputs: Tensor,
    wrt: tuple[Tensor, ...],
    seed: Tensor,
    grad_kwargs: Mapping[str, Any] | None = None,
    unreached: Exception | None = None,
) -> tuple[Tensor, ...]:
    """``torch.autograd.grad`` with the caller's ``grad_kwargs`` (Captum's argument, e.g.
    ``{"materialize_grads": True}``); a tensor the outputs do not depend on gets zeros.

    ``unreached`` is raised instead when some tensor of ``wrt`` is not in the outputs' graph at all,
    for callers that know such zeros would be wrong (a layer that ran without autograd).
    """
    options = {"allow_unused": True, **(grad_kwargs or {})}
    options.pop("materialize_grads", None)  # unused tensors get zeros below either way; None tells them apart
    if unreached is not None and not outputs.requires_grad:
        raise unreached
    grads = torch.autograd.grad(outputs, wrt, grad_outputs=seed, **options)
    if unreached is not None and any(g is None for g in grads):
        raise unreached
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, wrt))


def no_gradient_error(layer: nn.Module, use_input: bool = False) -> ArgumentError:
    """The error for a layer that ran without autograd in a forward that needs its gradient."""
    return ArgumentError(
        f"layer: the {'input' if use_input else 'output'} of {type(layer).__name__} does not require grad during "
        f"the forward: it runs under torch.no_grad() or inside reentrant gradient checkpointing "
        f"(torch.utils.checkpoint.checkpoint(..., use_reentrant=True)), so no gradient reaches it; checkpoint with "
        f"use_reentrant=False, or pick a layer after the no_grad or checkpointed region (torch.autograd.grad "
        f"cannot pass reentrant checkpointing to reach a layer before it either)"
    )


def _grad_switched_off(wanted: bool) -> bool:
    """In a hook: gradients were on when the forward began (``wanted``) and the model turned them off."""
    return wanted and not torch.is_grad_enabled()


def resolve_layer(model: object, layer: nn.Module | str) -> nn.Module:
    """The layer as a module; a dotted name (``"layer3.1.conv2"``) is looked up in ``model`` (or in the
    module a forward function wraps as ``.model``, e.g. :class:`attribution.outputs.ModelScores`)."""
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        wrapped = getattr(model, "model", None)
        if not isinstance(model, nn.Module) and isinstance(wrapped, nn.Module):
            model = wrapped
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"layer: a layer name needs an nn.Module forward_func, got {type(model).__name__}")
        names: dict[str, nn.Module] = dict(model.named_modules())
        if layer not in names:
            import difflib

            close = difflib.get_close_matches(layer, names, n=5)
            hint = f"; close matches: {close}" if close else ""
            raise ArgumentError(f"layer: no submodule named {layer!r} in the model{hint}")
        return names[layer]
    raise ArgumentTypeError(f"layer: expected an nn.Module or a dotted module name, got {type(layer).__name__}")


@dataclass
class _Captured:
    """What a layer hook saw in one forward."""

    activations: tuple[Tensor, ...] = ()
    was_tuple: bool = False
    calls: int = 0
    grad_off: bool = False  # the layer ran without autograd while the forward wanted gradients


def _detach_tensors(values: tuple[Any, ...], with_grad: bool) -> tuple[tuple[Any, ...], tuple[Tensor, ...]]:
    """Replace every tensor by a fresh leaf; return the new values and the leaves.

    With ``with_grad`` the values passed on join the graph even where the model turned gradients off
    around the layer: what runs downstream outside that region still reaches the leaf.
    """
    leaves: list[Tensor] = []
    replaced: list[Any] = []
    for v in values:
        if isinstance(v, Tensor) and v.is_floating_point():
            leaf = fresh_leaf(v)
            leaves.append(leaf)
            # The clone goes downstream: in-place ops there must not touch the leaf.
            with torch.set_grad_enabled(with_grad or torch.is_grad_enabled()):
                replaced.append(leaf.clone())
        else:
            replaced.append(v)
    return tuple(replaced), tuple(leaves)


@contextmanager
def capture_layer(layer: nn.Module, use_input: bool = False) -> Iterator[_Captured]:
    """Make the layer's output (or input) a leaf of the graph and record it.

    Gradients with respect to the recorded leaves are the gradients of what
    the model computes *downstream* of the layer; nothing upstream is needed.
    The hook is removed on exit, also when the forward raises.  Entered with
    gradients on, it notes (``grad_off``) a layer that runs with them off.
    """
    captured = _Captured()
    wanted = torch.is_grad_enabled()

    def on_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        captured.calls += 1
        captured.grad_off |= _grad_switched_off(wanted)
        replaced, captured.activations = _detach_tensors(args, wanted)
        captured.was_tuple = len(captured.activations) > 1
        return replaced

    def on_output(module: nn.Module, args: tuple[Any, ...], output: Tensor | tuple[Any, ...]) -> Any:
        captured.calls += 1
        captured.grad_off |= _grad_switched_off(wanted)
        captured.was_tuple = isinstance(output, tuple)
        replaced, captured.activations = _detach_tensors(output if isinstance(output, tuple) else (output,), wanted)
        return replaced if captured.was_tuple else replaced[0]

    handle = layer.register_forward_pre_hook(on_input) if use_input else layer.register_forward_hook(on_output)
    try:
        yield captured
    finally:
        handle.remove()


def _check_single_run(layer: nn.Module, calls: int) -> None:
    if calls == 0:
        raise ArgumentError(
            f"layer: {type(layer).__name__} ran 0 times in one forward; is it part of the model "
            f"(and used by this input)?"
        )
    if calls != 1:
        raise ArgumentError(
            f"layer: {type(layer).__name__} ran {calls} times in one forward; layer attribution "
            f"needs a module that runs exactly once (use a separate module instance per use)"
        )


RowValues = Callable[[tuple[Tensor, ...], int], Tensor]
"""``(inputs, repeats) -> the target value of every row``: an :class:`Objective`, or a wrapper of one."""


def layer_gradients(
    objective: RowValues,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    use_input: bool = False,
    repeats: int = 1,
    row_weights: Tensor | None = None,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], bool]:
    """Activations of ``layer`` and the gradient of the target with respect to them.

    Args:
        repeats: ``inputs`` hold this many repeat-major copies of the batch.
        row_weights: scales each row's gradient (a quadrature weight, say).

    Returns:
        ``(activations, gradients, was_tuple)``.

    Raises:
        ValueError: if the layer runs more than once per forward, or never, or without autograd (under
            ``torch.no_grad()`` or reentrant checkpointing) so that no gradient reaches it.
    """
    with grad_enabled(), capture_layer(layer, use_input) as captured:
        outputs = objective(inputs, repeats)
        _check_single_run(layer, captured.calls)
        if not captured.activations:
            raise ArgumentError(f"layer: {type(layer).__name__} produced no floating-point tensor to attribute to")
        seed = torch.ones_like(outputs) if row_weights is None else row_weights.to(outputs)
        unreached = no_gradient_error(layer, use_input) if captured.grad_off else None
        grads = grad(outputs, captured.activations, seed, grad_kwargs, unreached)
    activations = tuple(a.detach() for a in captured.activations)
    return activations, grads, captured.was_tuple


def plain_inputs(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Inputs that may join an autograd graph (inference tensors are cloned); call under ``grad_enabled``."""
    return tuple(x.clone() if x.is_inference() else x.detach() for x in inputs)


def layer_activations(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    use_input: bool,
    repeats: int = 1,
    with_target: bool = False,
) -> tuple[tuple[Tensor, ...], bool, Tensor | None]:
    """The layer's output (or input) in one forward without autograd, and the target values if asked.

    Returns:
        ``(activations, was_tuple, outputs)``; ``outputs`` (the target of
        every row) is None unless ``with_target``.

    Raises:
        ValueError: if the layer does not run exactly once, or yields no float tensor.
    """
    with grad_enabled(), torch.no_grad(), capture_layer(layer, use_input) as captured:
        inputs = plain_inputs(inputs)
        outputs = objective(inputs, repeats) if with_target else objective.forward(inputs, repeats)
        _check_single_run(layer, captured.calls)
    if not captured.activations:
        raise ArgumentError(f"layer: {type(layer).__name__} produced no floating-point tensor to attribute to")
    return tuple(a.detach() for a in captured.activations), captured.was_tuple, outputs if with_target else None


class _LayerReached(Exception):
    """Raised by a hook to stop the forward once the layer of interest has run."""


def layer_output_forward(
    forward_func: Callable[..., Tensor], layer: nn.Module, use_input: bool = False
) -> Callable[..., Tensor]:
    """A function from the model's inputs to ``layer``'s output (or input), as the model computes it.

    The forward stops as soon as the layer has run (the rest of the model is
    not needed), and gradients flow back to the inputs.  Neuron methods use
    it as their forward function, with the neuron selector as the target.

    Raises:
        ValueError: the layer returns (or takes) something other than tensors, or never runs, or (in a
            forward with gradients on) runs without autograd so that its value is cut from the inputs.
    """

    def forward(*args: Any) -> Tensor:
        captured: list[Any] = []
        grad_off: list[bool] = []
        wanted = torch.is_grad_enabled()

        def stop(module: nn.Module, *hook_args: Any) -> None:
            value = hook_args[0] if use_input else hook_args[-1]
            captured.append(value[0] if use_input and isinstance(value, tuple) and len(value) == 1 else value)
            grad_off.append(_grad_switched_off(wanted))
            raise _LayerReached

        handle = layer.register_forward_pre_hook(stop) if use_input else layer.register_forward_hook(stop)
        try:
            forward_func(*args)
        except _LayerReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ArgumentError(f"layer: {type(layer).__name__} did not run in the model's forward")
        (value,) = captured
        several = isinstance(value, tuple) and value and all(isinstance(v, Tensor) for v in value)
        if not isinstance(value, Tensor) and not several:
            raise ArgumentError(
                f"layer: neuron methods need a layer with tensor {'inputs' if use_input else 'outputs'}, "
                f"{type(layer).__name__} has {type(value).__name__}"
            )
        if grad_off[0] and not any(v.requires_grad for v in (value if several else (value,))):
            raise no_gradient_error(layer, use_input)
        # Several tensors: a callable neuron_selector picks the unit from the tuple (Target.select takes it);
        # the type names the usual case, which the Objective's forward_func is declared with.
        return cast(Tensor, value)

    return forward


@contextmanager
def substitute_layer(layer: nn.Module, values: tuple[Tensor, ...], use_input: bool = False) -> Iterator[_Captured]:
    """Within the block, ``layer`` outputs (or receives) ``values`` instead of what it computes.

    Layer integrated gradients moves along a path in the layer's activation
    space this way; the hook is removed on exit, also when the forward raises.
    Yields a record of the runs (``calls``, to check with :func:`_check_single_run` after the forward:
    a backward inside the block may rerun the layer, as non-reentrant checkpointing does) and whether the
    layer ran with gradients off (``grad_off``) when they were on as the block was entered.
    """
    record = _Captured(activations=values)
    wanted = torch.is_grad_enabled()

    def replace_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        record.calls += 1
        record.grad_off |= _grad_switched_off(wanted)
        return values + tuple(args[len(values) :])

    def replace_output(
        module: nn.Module, args: tuple[Any, ...], output: Tensor | tuple[Any, ...]
    ) -> Tensor | tuple[Tensor, ...]:
        record.calls += 1
        record.grad_off |= _grad_switched_off(wanted)
        return values if isinstance(output, tuple) else values[0]

    handle = (
        layer.register_forward_pre_hook(replace_input) if use_input else layer.register_forward_hook(replace_output)
    )
    try:
        yield record
    finally:
        handle.remove()
