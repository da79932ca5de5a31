"""Layer-wise relevance propagation (Bach et al., 2015) in one forward and one backward.

Relevance travels backward as its ratio to the activation it belongs to,
``r = R / a``, in the gradient's place; the input's relevance is ``x * r``.
In that form LRP-0 is the plain gradient through every linear op, so the ops
that module rules never see are right without rules of their own: a residual
addition ``z = a + b`` passes the same ``r`` to both summands, which gives
each ``R_a = a / z * R_z``, its share in proportion to its contribution;
constant factors, views, ``cat``, average pooling, batch norm in eval and
functional convolutions conserve relevance; a bias absorbs its share.  What
the rules change:

- A module with a rule (``LayerRule``): the ratio at its output is scaled by
  ``z / (z' + eps * sign(z'))`` on its way into the module, where ``z`` is
  the module's output and ``z'`` its output with the rule's modified
  parameters (the same module for the epsilon rule), and it backpropagates
  through the modified module: ``R_in = a * J'^T (R_out / stab(z'))``, the
  rule as Captum applies it.  The identity rule passes ``R_in = R_out``.
- Elementwise activations (tanh, sigmoid, GELU, ..., called as modules or as
  functions, also in place) pass relevance unchanged, ``R_x = R_y``: their
  backward is the ratio ``y / x``.  ReLU, leaky ReLU, PReLU and dropout need
  nothing: their gradient already is that ratio.

Any other nonlinear op (softmax, a product of two activations, a norm over
features) is backpropagated with its gradient, which does not conserve
relevance; the convergence delta shows how much is lost.

Nothing of the caller's is changed: rules are applied by forward hooks that
live for one forward, modified parameters are used by a shallow copy of the
module, and batch norm runs on its running statistics for that forward.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from attribution._internal.autograd import (
    _check_single_run,
    _grad_switched_off,
    grad,
    grad_enabled,
    gradients,
    no_gradient_error,
)
from attribution._internal.canonical import Objective, describe
from attribution._internal.checks import ArgumentError
from attribution._internal.rules import ACTIVATIONS, _activation_call, _vjp
from attribution.functional.backprop import batch_norm_in_eval

ParameterRule = Callable[[nn.Module, tuple[Any, ...], Tensor], Mapping[str, Tensor]]
"""``(module, inputs, output) -> {parameter name: modified value}`` for one call of a module."""


@dataclass(frozen=True)
class LayerRule:
    """How relevance crosses one module.

    Attributes:
        epsilon: added to the modified output (with its sign) before dividing by it.
        parameters: the modified parameters (by name) the rule propagates through; None keeps the module's.
        identity: pass the output's relevance to the input unchanged (same shapes), ignoring the rest.
    """

    epsilon: float = 1e-9
    parameters: ParameterRule | None = None
    identity: bool = False


# ---------------------------------------------------------------- modified parameters


def _own(module: nn.Module, name: str) -> Tensor | None:
    value = module._parameters.get(name)
    return None if value is None else value.detach()


def _with_bias(modified: dict[str, Tensor], module: nn.Module, zero_bias: bool) -> dict[str, Tensor]:
    bias = _own(module, "bias")
    if zero_bias and bias is not None:
        modified["bias"] = torch.zeros_like(bias)
    return modified


def gamma_parameters(module: nn.Module, gamma: float, zero_bias: bool) -> dict[str, Tensor]:
    """The gamma rule's parameters: ``w + gamma * max(w, 0)``, the bias kept or zeroed."""
    weight = _own(module, "weight")
    return _with_bias({} if weight is None else {"weight": weight + gamma * weight.clamp(min=0)}, module, zero_bias)


def positive_parameters(module: nn.Module, zero_bias: bool) -> dict[str, Tensor]:
    """The alpha1-beta0 rule's parameters (Captum's form): ``max(w, 0)``, the bias kept or zeroed."""
    weight = _own(module, "weight")
    return _with_bias({} if weight is None else {"weight": weight.clamp(min=0)}, module, zero_bias)


def manipulated_parameters(
    manipulate: Callable[[nn.Module, tuple[Any, ...], Tensor], Any],
    module: nn.Module,
    inputs: tuple[Any, ...],
    output: Tensor,
) -> dict[str, Tensor]:
    """Parameters as a Captum-style ``_manipulate_weights(module, inputs, outputs)`` leaves them, run on a
    copy of the module whose parameters are copies: the caller's module and weights are never written."""
    twin = copy.copy(module)
    twin._parameters = {
        name: None if p is None else nn.Parameter(p.detach().clone(), requires_grad=False)
        for name, p in module._parameters.items()
    }
    with torch.no_grad():
        manipulate(twin, inputs, output)
    return {name: p.detach() for name, p in twin._parameters.items() if p is not None}


def _forward_with(
    module: nn.Module, parameters: Mapping[str, Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``module.forward`` with some parameters replaced, on a shallow copy (no hooks run, nothing written)."""
    twin = copy.copy(module)
    # Plain tensors where torch keeps Parameters: the module's forward reads both alike (module.weight).
    replaced: dict[str, Any] = {**module._parameters, **parameters}
    twin._parameters = replaced
    return twin.forward(*args, **kwargs)


# ---------------------------------------------------------------- backward rules


def _stabilized(z: Tensor, epsilon: float) -> Tensor:
    """``z + epsilon * sign(z)``, with the sign of 0 taken as +1 (Captum's stabiliser)."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)  # +-1 exact in any dtype, epsilon not


class _Ruled(torch.autograd.Function):
    """Returns ``z``; backward sends ``grad * z / stab(z')`` into ``z'`` (the modified output), none into ``z``."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, modified: Tensor, epsilon: float) -> Tensor:
        denominator = _stabilized(modified.detach(), epsilon)
        ratio = z.detach() / denominator
        ctx.ratio = ratio if epsilon > 0 else torch.where(denominator == 0, 0.0, ratio)  # LRP-0: 0 / 0 is 0
        return z.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[None, Tensor, None]:
        return None, grad_output * ctx.ratio, None


class _PassThrough(torch.autograd.Function):
    """Returns ``z``; backward gives the input ``a`` the output's relevance: ratio ``grad * z / a``.

    Where ``a`` is exactly 0 its relevance ``a * r`` is 0 whatever ``r`` is, so that share is dropped.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, a: Tensor) -> Tensor:
        a = a.detach()
        ctx.ratio = torch.where(a == 0, 0.0, z.detach() / torch.where(a == 0, 1.0, a))
        return z.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[None, Tensor]:
        return None, grad_output * ctx.ratio


class _PassRelevance(torch.autograd.Function):
    """``y = op(x)`` elementwise, backward ``grad * y / x``: relevance passes unchanged, ``R_x = R_y``.

    Where ``x`` is too small to divide by (0, or subnormal) its relevance ``x * r`` vanishes anyway; the
    gradient is used there, the ratio's limit for activations with ``op(0) = 0``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, op: Callable[[Tensor], Tensor]) -> Tensor:
        y = op(x)
        ctx.op = op
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        x, y = ctx.saved_tensors
        safe = x.abs() >= torch.finfo(x.dtype).tiny
        ratio = y / torch.where(safe, x, torch.ones_like(x))
        return torch.where(safe, grad_output * ratio, _vjp(ctx.op, x, grad_output)), None


_GRADIENT_IS_THE_RATIO: set[Callable[..., Any]] = {F.relu, F.leaky_relu, F.rrelu, F.prelu}
"""Activations whose gradient already is ``y / x``: they run natively (in-place ReLU included)."""
_NOT_UNITS: set[Callable[..., Any]] = {
    torch.exp,
    torch.log,
    torch.sqrt,
    torch.rsqrt,
    torch.reciprocal,
    torch.square,
    torch.erf,
    torch.abs,
}
"""Math ops that :data:`ACTIVATIONS` also lists: parts of larger computations (norms, softmax), not units."""
PASS_RELEVANCE = {func: op for func, op in ACTIVATIONS.items() if op not in _GRADIENT_IS_THE_RATIO | _NOT_UNITS}
"""Elementwise activations through which relevance passes unchanged, each mapped to its out-of-place form."""


def _in_place(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    name = getattr(func, "__name__", "")
    if name.endswith("_") and not name.startswith("__"):
        return True
    try:
        return bool(inspect.signature(func).bind(*args, **kwargs).arguments.get("inplace", False))
    except (TypeError, ValueError):  # builtins without a Python signature take no inplace flag
        return False


class _ActivationsPassRelevance(TorchFunctionMode):
    """Every elementwise activation, however it is called, passes relevance unchanged."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func not in PASS_RELEVANCE:
            return func(*args, **kwargs)
        x, op = _activation_call(func, args, kwargs)
        if not (isinstance(x, Tensor) and x.is_floating_point() and x.requires_grad):
            return func(*args, **kwargs)
        if not _in_place(func, args, kwargs):
            return _PassRelevance.apply(x, op)
        y = _PassRelevance.apply(x.clone(), op)  # the rule keeps x's old values; callers may use x or y
        return x.copy_(y)


# ---------------------------------------------------------------- hooks for one forward


def _rule_hook(rule: LayerRule, cache: dict[nn.Module, Mapping[str, Tensor]]) -> Callable[..., Tensor | None]:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Tensor | None:
        if not isinstance(output, Tensor) or not output.is_floating_point():
            raise ArgumentError(
                f"rule: LRP rules apply to modules that return one floating-point tensor; "
                f"{type(module).__name__} returned {describe(output)}"
            )
        if not output.requires_grad:
            return None
        if rule.identity:
            a = args[0] if args else None
            if not isinstance(a, Tensor) or a.shape != output.shape:
                raise ArgumentError(
                    f"rule: IdentityRule needs a module whose input and output have the same shape; "
                    f"{type(module).__name__} maps {describe(a)} to {describe(output)}"
                )
            return _PassThrough.apply(output, a) if a.requires_grad else None
        if rule.parameters is None:
            return _Ruled.apply(output, output, rule.epsilon) if rule.epsilon else None
        if module not in cache:
            cache[module] = rule.parameters(module, args, output)
        ruled: Tensor = _Ruled.apply(output, _forward_with(module, cache[module], args, kwargs), rule.epsilon)
        return ruled

    return hook


@dataclass
class _Tap:
    """What a layer's tap saw in one forward: the activations, and zero leaves added to them."""

    activations: tuple[Tensor, ...] = ()
    zeros: tuple[Tensor, ...] = ()
    was_tuple: bool = False
    calls: int = 0
    grad_off: bool = False  # the layer ran without autograd (no_grad, reentrant checkpointing) in the forward


def _tapped(values: tuple[Any, ...], tap: _Tap, wanted: bool) -> tuple[Any, ...]:
    """``values`` with a zero leaf added to each floating tensor: its gradient is the ratio there.

    ``wanted``: gradients were on when the forward began; the sums join the graph then even where the
    model turned them off around the layer (what runs downstream outside that region still reaches them).
    """
    tap.calls += 1
    tap.grad_off |= _grad_switched_off(wanted)
    replaced: list[Any] = []
    activations: list[Tensor] = []
    zeros: list[Tensor] = []
    for v in values:
        if isinstance(v, Tensor) and v.is_floating_point():
            zero = torch.zeros_like(v, requires_grad=True)
            activations.append(v.detach().clone())  # in-place ops downstream must not change it
            zeros.append(zero)
            with torch.set_grad_enabled(wanted or torch.is_grad_enabled()):
                replaced.append(v + zero)
        else:
            replaced.append(v)
    tap.activations, tap.zeros = tuple(activations), tuple(zeros)
    return tuple(replaced)


def _register_tap(layer: nn.Module, use_input: bool, tap: _Tap) -> RemovableHandle:
    wanted = torch.is_grad_enabled()

    def on_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        replaced = _tapped(args, tap, wanted)
        tap.was_tuple = len(tap.zeros) > 1
        return replaced

    def on_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        tap.was_tuple = isinstance(output, tuple)
        replaced = _tapped(output if tap.was_tuple else (output,), tap, wanted)
        return replaced if tap.was_tuple else replaced[0]

    return layer.register_forward_pre_hook(on_input) if use_input else layer.register_forward_hook(on_output)


@contextmanager
def _propagating(
    rules: Mapping[nn.Module, LayerRule], model: nn.Module | None, taps: Sequence[tuple[nn.Module, bool, _Tap]] = ()
) -> Iterator[None]:
    """Within the block, forwards apply the rules (and fill the taps); everything is undone on exit."""
    cache: dict[nn.Module, Mapping[str, Tensor]] = {}
    with ExitStack() as stack:
        if model is not None:
            stack.enter_context(batch_norm_in_eval(model))
        for module, rule in rules.items():
            stack.callback(module.register_forward_hook(_rule_hook(rule, cache), with_kwargs=True).remove)
        for layer, use_input, tap in taps:  # after the rules: a tap sees a ruled output
            stack.callback(_register_tap(layer, use_input, tap).remove)
        stack.enter_context(_ActivationsPassRelevance())
        yield


def _with_rules(
    objective: Objective,
    rules: Mapping[nn.Module, LayerRule],
    model: nn.Module | None,
    taps: Sequence[tuple[nn.Module, bool, _Tap]] = (),
) -> Objective:
    """The objective whose forward (only: the backward runs the rules' own code) propagates relevance."""
    forward_func = objective.forward_func

    def forward(*args: Any) -> Tensor:
        with _propagating(rules, model, taps):
            return forward_func(*args)

    return dataclasses.replace(objective, forward_func=forward)


# ---------------------------------------------------------------- the methods


def lrp(
    objective: Objective, inputs: tuple[Tensor, ...], rules: Mapping[nn.Module, LayerRule], model: nn.Module | None
) -> tuple[tuple[Tensor, ...], Tensor]:
    """Relevance of every input feature for the target output.

    Args:
        rules: the rule of each module that has one (modules without a rule are linear or activations).
        model: the module whose batch norms run on running statistics (None: a plain function).

    Returns:
        ``(relevances, outputs)``: relevances shaped like ``inputs``, and the target output per example,
        which they sum to where relevance is conserved.
    """
    ratios, outputs = gradients(_with_rules(objective, rules, model), inputs)
    return tuple(x.detach() * r for x, r in zip(inputs, ratios)), outputs


@dataclass
class LayerRelevance:
    """Relevance at each layer: per layer, one tensor per floating input (or output) of the layer."""

    outputs: Tensor
    relevances: list[tuple[Tensor, ...]] = field(default_factory=list)
    was_tuple: list[bool] = field(default_factory=list)


def layer_lrp(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    rules: Mapping[nn.Module, LayerRule],
    model: nn.Module | None,
    layers: Sequence[nn.Module],
    attribute_to_layer_input: bool = False,
) -> LayerRelevance:
    """Relevance at the outputs (or inputs) of ``layers``, all from one forward and one backward.

    Raises:
        ValueError: a layer that runs more than once per forward, or never, or without autograd.
    """
    taps = [(layer, attribute_to_layer_input, _Tap()) for layer in layers]
    with grad_enabled():
        detached = tuple(x.clone() if x.is_inference() else x.detach() for x in inputs)
        outputs = _with_rules(objective, rules, model, taps)(detached)
        for layer, _, tap in taps:
            _check_single_run(layer, tap.calls)
            if not tap.zeros:
                raise ArgumentError(f"layer: {type(layer).__name__} has no floating-point tensor to attribute to")
        zeros = tuple(z for _, _, tap in taps for z in tap.zeros)
        off = [layer for layer, _, tap in taps if tap.grad_off]
        unreached = no_gradient_error(off[0], attribute_to_layer_input) if off else None
        ratios = iter(grad(outputs, zeros, torch.ones_like(outputs), unreached=unreached))
    result = LayerRelevance(outputs=outputs.detach())
    for _, _, tap in taps:
        result.relevances.append(tuple(a * next(ratios) for a in tap.activations))
        result.was_tuple.append(tap.was_tuple)
    return result


def relevance_delta(relevances: Sequence[Tensor], outputs: Tensor) -> Tensor:
    """Per example: the output minus the relevances' total (Captum's sign), 0 where relevance is conserved."""
    total = functools.reduce(operator.add, (r.reshape(r.shape[0], -1).sum(1) for r in relevances))
    return outputs.flatten() - total.flatten()
