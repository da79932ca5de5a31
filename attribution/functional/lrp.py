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
import math
import operator
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from attribution._internal.autograd import (
    _check_single_run,
    _grad_switched_off,
    fresh_leaf,
    grad,
    grad_enabled,
    gradients,
    no_gradient_error,
)
from attribution._internal.canonical import Objective, describe
from attribution._internal.checks import ArgumentError
from attribution._internal.rules import ACTIVATIONS, COMPOSITE, LINEAR_OPS, _activation_call, _bind, _body, _vjp
from attribution.functional.backprop import batch_norm_in_eval
from attribution.functional.lrp_rules import LayerCall, LayerRule, ParameterRule, can_fold, folding_scale

__all__ = [
    "LayerRelevance",
    "LayerRule",
    "ParameterRule",
    "gamma_parameters",
    "layer_lrp",
    "lrp",
    "manipulated_parameters",
    "positive_parameters",
    "relevance_delta",
]

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


# ---------------------------------------------------------------- published rules


@dataclass
class _Published:
    """One forward under published rules: the calls by the tensor they returned (so that a batch norm right
    after one is folded into it), relevance the rules hand to inputs that are 0, and what was approximated."""

    calls: dict[int, tuple[Tensor, LayerCall | _EpsilonCall]] = field(default_factory=dict)
    deposits: list[tuple[LayerCall, Tensor]] = field(default_factory=list)
    notes: dict[str, None] = field(default_factory=dict)  # an ordered set

    def warn(self) -> None:
        if self.notes:
            warnings.warn("LRP: " + "; ".join(self.notes), stacklevel=4)

    def settle(self, relevances: tuple[Tensor, ...], leaves: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``relevances`` plus what rules gave to zero-valued inputs, where those inputs are (views of) the
        model's inputs; elsewhere that relevance has no way down, which a note says."""
        settled = list(relevances)
        for call, residual in self.deposits:
            i = next((i for i, x in enumerate(leaves) if _same_storage(call.source, x)), None)
            if i is None:
                self.notes[
                    f"{type(call.module).__name__} has a rule (flat, w-square, z-box) that gives relevance to "
                    f"inputs that are 0, but its input is computed in the model, so relevance "
                    f"{float(residual.sum()):.3g} there is dropped (the convergence delta shows it): give these "
                    f"rules to the first layer"
                ] = None
                continue
            settled[i] = settled[i] + _onto(residual, call.source, leaves[i])
        return tuple(settled)


def _same_storage(view: Tensor, x: Tensor) -> bool:
    return view is x or (view.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() and view.dtype == x.dtype)


def _onto(values: Tensor, view: Tensor, x: Tensor) -> Tensor:
    """``values`` (shaped like ``view``, a view of ``x``'s storage) summed onto the elements of ``x`` they sit on."""
    span = x.untyped_storage().nbytes() // x.element_size()
    positions = torch.arange(span, device=x.device)
    flat = torch.zeros(span, dtype=values.dtype, device=x.device)
    flat.index_add_(
        0, positions.as_strided(view.shape, view.stride(), view.storage_offset()).flatten(), values.flatten()
    )
    return flat[positions.as_strided(x.shape, x.stride(), x.storage_offset())]


class _Propagated(torch.autograd.Function):
    """Returns ``z``; backward runs the published rule: relevance ``R = z * grad`` at the output, the rule's
    relevance at the input, handed down as its ratio to the input (0 where the input is 0: see deposits)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, a: Tensor, call: LayerCall, rule: LayerRule, state: _Published) -> Tensor:
        ctx.call, ctx.rule, ctx.state = call, rule, state
        return z.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[None, Tensor, None, None, None]:
        call, rule = ctx.call, ctx.rule
        assert rule.propagate is not None
        relevance = rule.propagate(call, grad_output * call.output)
        a = call.input
        zero = a == 0
        if rule.reaches_zero_inputs:
            ctx.state.deposits.append((call, torch.where(zero, relevance, 0.0)))
        return None, torch.where(zero, 0.0, relevance / torch.where(zero, 1.0, a)), None, None, None


@dataclass(eq=False)
class _EpsilonCall:
    """A call under the published epsilon rule in its forward form (:class:`_Ruled`, no re-forward)."""

    module: nn.Module
    node: Any  # the _Ruled backward node: a batch norm folded in rescales its ratio
    output: Tensor
    epsilon: float
    folded: nn.Module | None = None


def _folded_ratio(call: _EpsilonCall, norm: _BatchNorm, normed: Tensor) -> Tensor:
    """``scale * z / s(z_norm)``: through the module's own graph, the epsilon rule of module and norm as one
    (the folded weight is the weight times the norm's scale per output channel)."""
    z = call.output
    scale = folding_scale(norm).reshape(1, -1, *(1,) * (z.dim() - 2))
    denominator = _stabilized(normed, call.epsilon)
    ratio = scale * z / denominator
    return ratio if call.epsilon > 0 else torch.where(denominator == 0, 0.0, ratio)


def _fold_hook(state: _Published) -> Callable[..., Tensor | None]:
    """A batch norm right after a module under a published rule folds into it and passes relevance on."""

    def hook(norm: nn.Module, args: tuple[Any, ...], output: Any) -> Tensor | None:
        x = args[0] if args else None
        entry = state.calls.get(id(x))
        if entry is None or entry[0] is not x or not isinstance(output, Tensor):
            return None
        call = entry[1]
        if call.folded is not None or not isinstance(norm, _BatchNorm) or not can_fold(call.module, norm):
            return None
        call.folded = norm
        if isinstance(call, _EpsilonCall):  # the rule's denominator becomes the norm's output
            call.node.ratio = _folded_ratio(call, norm, output.detach())
        passed: Tensor = _PassThrough.apply(output, x)
        return passed

    return hook


_NORMS = {
    F.layer_norm,
    F.group_norm,
    F.rms_norm,
    F.instance_norm,
    torch.layer_norm,
    torch.group_norm,
    torch.rms_norm,
    torch.instance_norm,
}
_SOFTMAX = {F.softmax, torch.softmax, Tensor.softmax}
_PRODUCTS = {
    torch.mul,
    Tensor.mul,
    Tensor.__mul__,
    Tensor.__rmul__,
    torch.matmul,
    Tensor.matmul,
    Tensor.__matmul__,
    Tensor.__rmatmul__,
    torch.bmm,
    Tensor.bmm,
    torch.einsum,
}
_SUMS = {
    torch.add,
    Tensor.add,
    Tensor.add_,
    Tensor.__add__,
    Tensor.__radd__,
    Tensor.__iadd__,
    torch.sub,
    Tensor.sub,
    Tensor.sub_,
    Tensor.__sub__,
    Tensor.__rsub__,
    Tensor.__isub__,
}
SUM_STABILIZER = 1e-6
"""The stabiliser of sums of two activations (residual connections), Zennit's ``Norm`` default."""
_KEEPS_ATTENTION = {"dropout", "contiguous", "to", "type_as", "clone", "view", "reshape", "transpose", "permute"}
"""Ops after which attention weights are still attention weights (by ``__name__``)."""
_MOVES_ONLY = {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "adaptive_max_pool2d_with_indices",
    "max",
    "amax",
    "__getitem__",
}
"""Ops whose gradient routes each output's relevance to the input it came from."""


class _HalfGradient(torch.autograd.Function):
    """Identity; backward halves the gradient (each factor of a product gets half the relevance)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        return grad_output * 0.5


def _on_path(t: Any) -> bool:
    """A tensor relevance flows through: floating, in the graph, not a parameter."""
    return isinstance(t, Tensor) and t.is_floating_point() and t.requires_grad and not isinstance(t, nn.Parameter)


def _replaced(values: Any, change: Callable[[Tensor], Tensor], which: Callable[[Any], bool]) -> Any:
    """``values`` (arguments, also lists of tensors one level down) with ``change`` applied where ``which``."""
    if isinstance(values, (tuple, list)):
        return type(values)(
            _replaced(v, change, which) if isinstance(v, (tuple, list)) else change(v) if which(v) else v
            for v in values
        )
    return change(values) if which(values) else values


def _tensors(values: Any) -> list[Tensor]:
    found: list[Tensor] = []
    for v in values:
        if isinstance(v, (tuple, list)):
            found += _tensors(v)
        elif isinstance(v, Tensor):
            found.append(v)
    return found


_ELEMENTWISE_PRODUCTS = {torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__}


def _gate(func: Callable[..., Any], factors: list[Tensor]) -> Tensor | None:
    """The factor of an elementwise product of two that is broadcast over the other (fewer elements)."""
    if func not in _ELEMENTWISE_PRODUCTS or len(factors) != 2 or factors[0].numel() == factors[1].numel():
        return None
    return min(factors, key=Tensor.numel)


def _divided_by_a_constant(name: str, args: tuple[Any, ...], on_path: list[Tensor]) -> bool:
    return name in ("div", "__truediv__", "true_divide", "divide") and len(on_path) == 1 and args[0] is on_path[0]


def _unruled(func: Callable[..., Any], name: str, result: Any) -> bool:
    """A non-linear op that made a floating tensor on the relevance path, with nothing but its gradient."""
    return (
        isinstance(result, Tensor)
        and result.is_floating_point()
        and result.requires_grad
        and func not in ACTIVATIONS
        and func not in _PRODUCTS
        and name not in LINEAR_OPS
        and name not in _MOVES_ONLY
    )


class _PublishedTreatments(_ActivationsPassRelevance):
    """The ops that published rules do not cover, in transformers and gated blocks, each with a documented
    treatment, noted for the warning:

    - a sum of two activations (a residual connection) shares relevance in proportion to the summands, the
      total stabilised by :data:`SUM_STABILIZER` (Zennit's ``Norm`` on its canonizers' ``Sum``);
    - layer, group, RMS and instance norms pass relevance unchanged (AttnLRP, Achtibat et al., 2024);
    - attention weights (softmax outputs multiplied into the values) are held constant, so all relevance
      goes to the values (CP-LRP, Ali et al., 2022); ``scaled_dot_product_attention`` likewise;
    - a gate, the factor of an elementwise product broadcast over the other (squeeze-and-excitation), is
      held constant, so all relevance goes to the signal (signal-take-all, Arras et al., 2017);
    - any other product of two tensors on the relevance path gives each factor half (AttnLRP's uniform rule);
    - other non-linear ops that have a tensor on the path use their gradient, which need not conserve.
    """

    def __init__(self, state: _Published) -> None:
        super().__init__()
        self.state = state
        self.attention: dict[int, Tensor] = {}
        self._inside: set[Callable[..., Any]] = set()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in COMPOSITE and func not in self._inside:  # multi-head attention: see its matmuls and softmax
            self._inside.add(func)
            try:
                with self:
                    return _body(func)(*args, **kwargs)
            finally:
                self._inside.discard(func)
        if func is F.scaled_dot_product_attention:
            return self._attention(args, kwargs)
        tensors = _tensors((*args, *kwargs.values()))
        on_path = [t for t in tensors if _on_path(t)]
        if not on_path or func in PASS_RELEVANCE:
            return super().__torch_function__(func, types, args, kwargs)
        name = getattr(func, "__name__", "")
        if func in _NORMS:
            self.state.notes["layer, group and RMS norms pass relevance unchanged (AttnLRP)"] = None
            return _PassThrough.apply(func(*args, **kwargs), on_path[0])
        if func in _SUMS and len(on_path) >= 2:  # a residual sum: each summand its share, stabilised
            total = func(*args, **kwargs)
            return _Ruled.apply(total, total, SUM_STABILIZER)
        if func in _SOFTMAX:
            result = func(*args, **kwargs)
            self.attention[id(result)] = result
            return result
        if func in _PRODUCTS and len(on_path) >= 2:
            held = [t for t in on_path if self.attention.get(id(t)) is t]
            if held:
                self.state.notes["attention weights are held constant, all relevance goes to the values (CP-LRP)"] = (
                    None
                )
                return func(*_replaced(args, Tensor.detach, lambda v: any(v is h for h in held)), **kwargs)
            gate = _gate(func, on_path)
            if gate is not None:
                self.state.notes[
                    "a gate (a factor broadcast over the other, as in squeeze-and-excitation) is held constant, "
                    "all relevance goes to the signal (signal-take-all, Arras et al.)"
                ] = None
                return func(*_replaced(args, Tensor.detach, lambda v: v is gate), **kwargs)
            self.state.notes["each factor of a product of two activations gets half the relevance (AttnLRP)"] = None
            return func(*_replaced(args, _HalfGradient.apply, _on_path), **kwargs)
        result = func(*args, **kwargs)
        if name in _KEEPS_ATTENTION and any(self.attention.get(id(t)) is t for t in on_path):
            for r in _tensors((result,)):
                self.attention[id(r)] = r
        elif _unruled(func, name, result) and not _divided_by_a_constant(name, args, on_path):
            self.state.notes[f"{name or func} has no LRP rule, its gradient is used (see the convergence delta)"] = None
        return result

    def _attention(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        defaults = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
        bound = _bind(names, args, kwargs, **defaults)
        q, k, v, mask = bound["query"], bound["key"], bound["value"], bound["attn_mask"]
        if bound["enable_gqa"] and k.shape[-3] != q.shape[-3]:
            k, v = (t.repeat_interleave(q.shape[-3] // t.shape[-3], dim=-3) for t in (k, v))
        scale = 1 / math.sqrt(q.shape[-1]) if bound["scale"] is None else bound["scale"]
        with torch.no_grad():
            scores = (q * scale) @ k.transpose(-2, -1)
            if bound["is_causal"]:
                causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
                scores = scores.masked_fill(~causal, -math.inf)
            if mask is not None:
                scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
            weights = (
                F.dropout(torch.softmax(scores, dim=-1), bound["dropout_p"])
                if bound["dropout_p"]
                else scores.softmax(-1)
            )
        if _on_path(q) or _on_path(k):
            self.state.notes["attention weights are held constant, all relevance goes to the values (CP-LRP)"] = None
        attended: Tensor = weights @ v
        return attended


# ---------------------------------------------------------------- hooks for one forward


def _rule_hook(
    rule: LayerRule, cache: dict[nn.Module, Mapping[str, Tensor]], state: _Published | None
) -> Callable[..., Tensor | None]:
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
        if rule.propagate is not None and state is not None:
            return _published_call(module, args, kwargs, output, rule, state)
        if rule.published and rule.parameters is None and state is not None:
            return _published_epsilon(module, output, rule.epsilon, state)
        if rule.parameters is None:
            return _Ruled.apply(output, output, rule.epsilon) if rule.epsilon else None
        if module not in cache:
            cache[module] = rule.parameters(module, args, output)
        ruled: Tensor = _Ruled.apply(output, _forward_with(module, cache[module], args, kwargs), rule.epsilon)
        return ruled

    return hook


def _published_epsilon(module: nn.Module, output: Tensor, epsilon: float, state: _Published) -> Tensor:
    """The published epsilon rule in its forward form, registered so that a batch norm after it can fold in."""
    ruled: Tensor = _Ruled.apply(output, output, epsilon)
    state.calls[id(ruled)] = (ruled, _EpsilonCall(module, ruled.grad_fn, output.detach(), epsilon))
    return ruled


def _published_call(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Tensor, rule: LayerRule, state: _Published
) -> Tensor | None:
    a = args[0] if args else None
    if not isinstance(a, Tensor) or not a.is_floating_point():
        raise ArgumentError(
            f"rule: LRP rules apply to modules whose first argument is a floating-point tensor; "
            f"{type(module).__name__} got {describe(a)}"
        )
    if not a.requires_grad:
        return None
    call = LayerCall(module, a.detach().clone(), args[1:], kwargs, output.detach(), a)
    ruled: Tensor = _Propagated.apply(output, a, call, rule, state)
    state.calls[id(ruled)] = (ruled, call)
    return ruled


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
    rules: Mapping[nn.Module, LayerRule],
    model: nn.Module | None,
    taps: Sequence[tuple[nn.Module, bool, _Tap]] = (),
    state: _Published | None = None,
) -> Iterator[None]:
    """Within the block, forwards apply the rules (and fill the taps); everything is undone on exit.

    ``state``: published rules are in use; batch norms fold into the module before them, and the ops
    without rules get their documented treatments.
    """
    cache: dict[nn.Module, Mapping[str, Tensor]] = {}
    with ExitStack() as stack:
        if model is not None:
            stack.enter_context(batch_norm_in_eval(model))
        for module, rule in rules.items():
            stack.callback(module.register_forward_hook(_rule_hook(rule, cache, state), with_kwargs=True).remove)
        if state is not None and model is not None:  # after the rules: a folded norm's own rule is bypassed
            for norm in model.modules():
                if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                    stack.callback(norm.register_forward_hook(_fold_hook(state)).remove)
        for layer, use_input, tap in taps:  # after the rules: a tap sees a ruled output
            stack.callback(_register_tap(layer, use_input, tap).remove)
        stack.enter_context(_ActivationsPassRelevance() if state is None else _PublishedTreatments(state))
        yield


def _with_rules(
    objective: Objective,
    rules: Mapping[nn.Module, LayerRule],
    model: nn.Module | None,
    taps: Sequence[tuple[nn.Module, bool, _Tap]] = (),
    state: _Published | None = None,
) -> Objective:
    """The objective whose forward (only: the backward runs the rules' own code) propagates relevance."""
    forward_func = objective.forward_func

    def forward(*args: Any) -> Tensor:
        with _propagating(rules, model, taps, state):
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
    if not _published(rules):
        ratios, outputs = gradients(_with_rules(objective, rules, model), inputs)
        return tuple(x.detach() * r for x, r in zip(inputs, ratios)), outputs
    state = _Published()
    with grad_enabled():
        leaves = tuple(fresh_leaf(x) for x in inputs)
        target = _with_rules(objective, rules, model, state=state)(leaves)
        ratios = grad(target, leaves, torch.ones_like(target))
    relevances = state.settle(tuple(x.detach() * r for x, r in zip(leaves, ratios)), leaves)
    state.warn()
    return relevances, target.detach()


def _published(rules: Mapping[nn.Module, LayerRule]) -> bool:
    return any(rule.published for rule in rules.values())


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
    state = _Published() if _published(rules) else None
    with grad_enabled():
        detached = tuple(x.clone() if x.is_inference() else x.detach() for x in inputs)
        outputs = _with_rules(objective, rules, model, taps, state)(detached)
        for layer, _, tap in taps:
            _check_single_run(layer, tap.calls)
            if not tap.zeros:
                raise ArgumentError(f"layer: {type(layer).__name__} has no floating-point tensor to attribute to")
        zeros = tuple(z for _, _, tap in taps for z in tap.zeros)
        off = [layer for layer, _, tap in taps if tap.grad_off]
        unreached = no_gradient_error(off[0], attribute_to_layer_input) if off else None
        ratios = iter(grad(outputs, zeros, torch.ones_like(outputs), unreached=unreached))
    if state is not None:
        state.warn()
    result = LayerRelevance(outputs=outputs.detach())
    for _, _, tap in taps:
        result.relevances.append(tuple(a * next(ratios) for a in tap.activations))
        result.was_tuple.append(tap.was_tuple)
    return result


def relevance_delta(relevances: Sequence[Tensor], outputs: Tensor) -> Tensor:
    """Per example: the output minus the relevances' total (Captum's sign), 0 where relevance is conserved."""
    total = functools.reduce(operator.add, (r.reshape(r.shape[0], -1).sum(1) for r in relevances))
    return outputs.flatten() - total.flatten()
