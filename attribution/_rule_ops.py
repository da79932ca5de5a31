"""The rules themselves: autograd functions whose backward is a rule (the secant, the Shapley split of a
product, Captum's max-pooling rule, the guided/deconvolution ReLU rules, with the mode that applies the
latter) and the tables of torch functions they apply to.  :mod:`attribution._rules` holds DeepLift's mode
that routes calls here; its docstring says why each rule is exact."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

EPS = 1e-10

RELU = {F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu_}
ACTIVATIONS = {
    **dict.fromkeys(RELU, F.relu),
    **dict.fromkeys((torch.sigmoid, Tensor.sigmoid, Tensor.sigmoid_, F.sigmoid), torch.sigmoid),
    **dict.fromkeys((torch.tanh, Tensor.tanh, Tensor.tanh_, F.tanh), torch.tanh),
    F.elu: F.elu,
    F.leaky_relu: F.leaky_relu,
    F.rrelu: F.rrelu,
    F.gelu: F.gelu,
    F.silu: F.silu,
    F.softplus: F.softplus,
    F.relu6: F.relu6,
    F.hardtanh: F.hardtanh,
    F.hardswish: F.hardswish,
    F.hardsigmoid: F.hardsigmoid,
    F.mish: F.mish,
    F.selu: F.selu,
    F.celu: F.celu,
    F.logsigmoid: F.logsigmoid,
    F.softsign: F.softsign,
    F.tanhshrink: F.tanhshrink,
    F.softshrink: F.softshrink,
    F.hardshrink: F.hardshrink,
    F.threshold: F.threshold,
    F.prelu: F.prelu,
    **dict.fromkeys((torch.exp, Tensor.exp, Tensor.exp_), torch.exp),
    **dict.fromkeys((torch.log, Tensor.log, Tensor.log_), torch.log),
    **dict.fromkeys((torch.sqrt, Tensor.sqrt, Tensor.sqrt_), torch.sqrt),
    **dict.fromkeys((torch.rsqrt, Tensor.rsqrt, Tensor.rsqrt_), torch.rsqrt),
    **dict.fromkeys((torch.reciprocal, Tensor.reciprocal, Tensor.reciprocal_), torch.reciprocal),
    **dict.fromkeys((torch.square, Tensor.square, Tensor.square_), torch.square),
    **dict.fromkeys((torch.erf, Tensor.erf, Tensor.erf_), torch.erf),
    **dict.fromkeys((torch.abs, Tensor.abs, Tensor.abs_, Tensor.__abs__), torch.abs),
    **dict.fromkeys((torch.clamp, torch.clip, Tensor.clamp, Tensor.clip, Tensor.clamp_, Tensor.clip_), torch.clamp),
    **dict.fromkeys((torch.clamp_min, Tensor.clamp_min, Tensor.clamp_min_), torch.clamp_min),
    **dict.fromkeys((torch.clamp_max, Tensor.clamp_max, Tensor.clamp_max_), torch.clamp_max),
}
"""Elementwise nonlinearities of their first argument, each mapped to an out-of-place function with the same values."""
SOFTMAX = {F.softmax, torch.softmax, Tensor.softmax, F.log_softmax, torch.log_softmax, Tensor.log_softmax}
LOG_SOFTMAX = {F.log_softmax, torch.log_softmax, Tensor.log_softmax}
MULTIPLY = {torch.mul, torch.multiply, Tensor.mul, Tensor.multiply, Tensor.mul_, Tensor.__mul__, Tensor.__rmul__}
MULTIPLY.add(Tensor.__imul__)
MATMUL = {torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.bmm, Tensor.bmm, torch.mm, Tensor.mm}
DIVIDE = {torch.div, torch.divide, torch.true_divide, Tensor.div, Tensor.divide, Tensor.true_divide, Tensor.div_}
DIVIDE.update((Tensor.__truediv__, Tensor.__itruediv__))
POWER = {torch.pow, Tensor.pow, Tensor.__pow__, Tensor.pow_, Tensor.__ipow__}
_POOL_WITH_INDICES = {
    ("max", 1): F.max_pool1d_with_indices,
    ("max", 2): F.max_pool2d_with_indices,
    ("max", 3): F.max_pool3d_with_indices,
    ("adaptive", 1): F.adaptive_max_pool1d_with_indices,
    ("adaptive", 2): F.adaptive_max_pool2d_with_indices,
    ("adaptive", 3): F.adaptive_max_pool3d_with_indices,
}
"""Each max pooling's form that returns ``(out, indices)``, by kind and number of spatial dims."""
MAX_POOL = {
    **dict.fromkeys((F.max_pool1d, torch.max_pool1d, F.max_pool1d_with_indices, torch.max_pool1d_with_indices), 1),
    **dict.fromkeys((F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices), 2),
    **dict.fromkeys((F.max_pool3d, torch.max_pool3d, F.max_pool3d_with_indices), 3),
}
ADAPTIVE_MAX_POOL = {
    **dict.fromkeys((F.adaptive_max_pool1d, F.adaptive_max_pool1d_with_indices, torch.adaptive_max_pool1d), 1),
    **dict.fromkeys((F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices), 2),
    **dict.fromkeys((F.adaptive_max_pool3d, F.adaptive_max_pool3d_with_indices), 3),
}
_RETURNS_INDICES = {*_POOL_WITH_INDICES.values(), torch.max_pool1d_with_indices, torch.adaptive_max_pool1d}

LINEAR_OPS = frozenset(
    """
    add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ rsub neg neg_ __neg__ negative __pos__
    sum mean cumsum nansum trace diagonal diag_embed tril triu view view_as reshape reshape_as permute transpose
    transpose_ t swapaxes swapdims movedim moveaxis contiguous flatten unflatten squeeze squeeze_ unsqueeze
    unsqueeze_ expand expand_as repeat repeat_interleave tile broadcast_to __getitem__ __setitem__ narrow select
    index_select gather take_along_dim masked_fill masked_fill_ masked_scatter where cat concat concatenate stack
    hstack vstack split split_with_sizes chunk tensor_split unbind roll flip fliplr flipud rot90 pad interpolate
    upsample conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d linear batch_norm embedding
    dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout avg_pool1d avg_pool2d
    avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d pixel_shuffle pixel_unshuffle
    channel_shuffle unfold fold to type type_as float double half bfloat16 clone detach detach_ copy_ fill_ zero_
    new_zeros new_ones new_empty new_full new_tensor zeros_like ones_like empty_like full_like rand_like
    randn_like dim size numel __get__ __len__ __iter__ __format__ __repr__ __contains__ stride storage_offset
    is_contiguous data_ptr element_size requires_grad_ retain_grad register_hook __reduce_ex__ __deepcopy__
    diff index_add index_copy index_put scatter scatter_add take put layer_norm group_norm rms_norm instance_norm
    """.split()
)
"""Ops (by ``__name__``) that are linear in their input-dependent arguments, or only move values (norms
appear here for calls where only their weights depend on the input)."""

_INPLACE_DUNDERS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__"}


def _halves_swapped(t: Tensor) -> Tensor:
    """Each row's counterpart: the reference for an input row, the input for a reference row."""
    first, second = t.chunk(2)
    return torch.cat([second, first])


def _difference(t: Tensor) -> Tensor:
    """``t`` minus its counterpart, 0 where both are equal (also both ``-inf``, as in masked attention)."""
    other = _halves_swapped(t)
    return torch.where(t == other, torch.zeros_like(t), t - other)


def _pair_mean(t: Tensor) -> Tensor:
    """The mean of each row and its counterpart (the same for both)."""
    other = _halves_swapped(t)
    return torch.where(t == other, t, (t + other) / 2)


def _pairable(t: Any) -> bool:
    """Whether ``t`` is a floating tensor with ``[inputs; references]`` on dim 0."""
    return isinstance(t, Tensor) and t.is_floating_point() and t.dim() > 0 and t.shape[0] % 2 == 0


def _bind(names: tuple[str, ...], args: tuple, kwargs: dict, **defaults: Any) -> dict:
    """Arguments by name, whether given by position or keyword."""
    return {**defaults, **dict(zip(names, args)), **kwargs}


def _vjp(op: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> Tensor:
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        (result,) = torch.autograd.grad(op(leaf), leaf, grad)
    return result


# ---------------------------------------------------------------- elementwise and row-wise ops: the secant


class _Secant(torch.autograd.Function):
    """``y = op(x)`` elementwise, whose backward is DeepLift's Rescale rule between the two halves of the batch."""

    @staticmethod
    def forward(ctx, x: Tensor, op: Callable[[Tensor], Tensor], eps: float) -> Tensor:
        y = op(x)
        ctx.op, ctx.eps = op, eps
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y = ctx.saved_tensors
        dx, dy = _difference(x), _difference(y)
        safe = dx.abs() > ctx.eps  # elsewhere the gradient, which is the limit of dy / dx
        rescaled = grad * dy / torch.where(safe, dx, torch.ones_like(dx))
        return torch.where(safe, rescaled, _vjp(ctx.op, x, grad)), None, None


def _vjp_and_jvp(op: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
    """``J^T grad`` and ``J dx`` at ``x``, by two reverse passes (the vjp is linear in its cotangent, so its
    derivative in the cotangent is ``J``) instead of forward-mode AD, which not every op supports."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        cotangent = grad.detach().clone().requires_grad_()
        (vjp,) = torch.autograd.grad(op(leaf), leaf, cotangent, create_graph=True)
        (jvp,) = torch.autograd.grad(vjp, cotangent, dx)
    return vjp.detach(), jvp


class _RowSecant(torch.autograd.Function):
    """``y = op(x)`` for an op on rows (the ``dims`` of each slice: softmax, a norm), with a secant multiplier.

    Per row, ``M = J + (dy - J dx) dx^T / |dx|^2``, so ``M dx = dy`` exactly.  ``J`` is the Jacobian at the
    input row, or at its counterpart where ``at_counterpart`` says so (the better-conditioned end).  The
    correction is formed from a row's scalar ``<grad, dy - J dx> / |dx|^2``, so it stays the residual's size.
    """

    @staticmethod
    def forward(ctx, x: Tensor, op: Callable, dims: tuple[int, ...], eps: float, at_counterpart: Tensor | None):
        y = op(x)
        ctx.op, ctx.dims, ctx.eps = op, dims, eps
        ctx.save_for_backward(x, y, at_counterpart)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y, at_counterpart = ctx.saved_tensors
        dx, dy = _difference(x), _difference(y)
        point = x if at_counterpart is None else torch.where(at_counterpart, _halves_swapped(x), x)
        gradient, j_dx = _vjp_and_jvp(ctx.op, point, grad, dx)
        weight = (grad * (dy - j_dx)).sum(ctx.dims, keepdim=True)
        norm = (dx * dx).sum(ctx.dims, keepdim=True)
        safe = norm > ctx.eps  # a squared norm: below it the gradient misses only ~eps
        correction = torch.where(safe, weight / torch.where(safe, norm, torch.ones_like(norm)), 0.0)
        return gradient + dx * correction, None, None, None, None


def _larger_spread(x: Tensor, dims: tuple[int, ...], center: bool) -> Tensor:
    """Rows whose counterpart is spread wider (variance, or mean square): a norm's Jacobian, ~1 / spread,
    is better conditioned there (a zero reference in a net with zero biases has zero variance)."""
    spread = (x - x.mean(dims, keepdim=True) if center else x).square().mean(dims, keepdim=True)
    return _halves_swapped(spread) > spread


def _softmax_call(func: Callable, args: tuple, kwargs: dict) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """The input of a softmax call and the softmax as a function of it (dim and dtype resolved)."""
    names = (
        ("input", "dim", "_stacklevel", "dtype") if func in (F.softmax, F.log_softmax) else ("input", "dim", "dtype")
    )
    bound = _bind(names, args, kwargs, dim=None, dtype=None)
    x, dim = bound["input"], bound["dim"]
    if dim is None:  # nn.Softmax() without dim: torch's legacy choice
        dim = 0 if x.dim() in (0, 1, 3) else 1
    if bound["dtype"] is not None:
        x = x.to(bound["dtype"])
    return x, partial(torch.log_softmax if func in LOG_SOFTMAX else torch.softmax, dim=dim)


def _call_with(fn: Callable, rest: tuple, kwargs: dict, x: Tensor) -> Tensor:
    return fn(x, *rest, **kwargs)


def _activation_call(func: Callable, args: tuple, kwargs: dict) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """The input of an activation call and an out-of-place function of it with the call's other arguments."""
    canonical = ACTIVATIONS[func]
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):  # builtins such as torch.sigmoid or F.gelu have no Python signature
        return args[0], partial(_call_with, canonical, tuple(args[1:]), dict(kwargs))
    options = dict(bound.arguments)
    options.pop("inplace", None)
    return options.pop(next(iter(options))), partial(canonical, **options)


# ---------------------------------------------------------------- products of two input-dependent tensors


class _Bilinear(torch.autograd.Function):
    """``op(a, b)`` bilinear, whose backward splits the difference between the factors (Shapley, exact).

    ``op(a, b) - op(a', b') = op(a - a', (b + b') / 2) + op((a + a') / 2, b - b')``,
    so each factor's multiplier is the gradient taken at the pair's means.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        ctx.op = op
        ctx.save_for_backward(a, b)
        return op(a, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b = ctx.saved_tensors
        with torch.enable_grad():
            a_mean, b_mean = (_pair_mean(t).detach().requires_grad_() for t in (a, b))
            grad_a, grad_b = torch.autograd.grad(ctx.op(a_mean, b_mean), (a_mean, b_mean), grad)
        return grad_a, grad_b, None


# ---------------------------------------------------------------- max pooling: Captum's rule


class _RoutedMax(torch.autograd.Function):
    """Max pooling whose backward routes each window's output difference through a winner (Captum's rule).

    The winner is the argmax of whichever of input and reference has the
    larger maximum: the difference goes back there, divided by that
    position's own difference (never 0 unless the window's difference is).
    """

    @staticmethod
    def forward(ctx, x: Tensor, pool: Callable, spatial: int, eps: float) -> tuple[Tensor, Tensor]:
        out, index = pool(x)
        ctx.spatial, ctx.eps = spatial, eps
        ctx.save_for_backward(x, out, index)
        ctx.mark_non_differentiable(index)
        return out, index

    @staticmethod
    def backward(ctx, grad: Tensor, _index_grad: Tensor | None):
        x, out, index = ctx.saved_tensors
        return _route_max(x, out, index, grad, ctx.spatial, ctx.eps), None, None, None


def _route_max(x: Tensor, out: Tensor, index: Tensor, grad: Tensor, spatial: int, eps: float) -> Tensor:
    """Multipliers of max pooling by Captum's rule; indices are flat over the last ``spatial`` dims.

    Ties: where this row's winner also wins the counterpart's window (a
    constant reference, say), the counterpart's share goes through it as well,
    so the window's multiplier is its gradient; Captum's hooks give the same
    there when a ReLU feeds the pool, its rule would pick the first tied position.
    """
    flat = partial(torch.flatten, start_dim=-spatial)
    x_flat, index, out, grad = flat(x), flat(index), flat(out), flat(grad)
    other_x, other_index, other_out = (_halves_swapped(t) for t in (x_flat, index, out))
    top = torch.maximum(out, other_out)
    shared = other_x.gather(-1, index) == other_out
    routed = torch.zeros_like(x_flat)
    routed.scatter_add_(-1, index, grad * (top - other_out))  # this row won: through its own winner
    routed.scatter_add_(-1, torch.where(shared, index, other_index), grad * (out - top))  # the counterpart won
    gradient = torch.zeros_like(x_flat).scatter_add_(-1, index, grad)
    dx = _difference(x_flat)
    safe = dx.abs() > eps
    return torch.where(safe, routed / torch.where(safe, dx, torch.ones_like(dx)), gradient).reshape(x.shape)


def _pool_call(func: Callable, args: tuple, kwargs: dict) -> tuple[Tensor, Callable, int, bool]:
    """``(input, pool returning (out, indices), spatial dims, whether the call returns indices)``."""
    if func in MAX_POOL:
        spatial = MAX_POOL[func]
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        bound = _bind(names, args, kwargs, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)
        options = {k: bound[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
        pool = partial(_POOL_WITH_INDICES["max", spatial], **options)
    else:
        spatial = ADAPTIVE_MAX_POOL[func]
        bound = _bind(("input", "output_size", "return_indices"), args, kwargs, return_indices=False)
        pool = partial(_POOL_WITH_INDICES["adaptive", spatial], output_size=bound["output_size"])
    return bound["input"], pool, spatial, bool(bound["return_indices"]) or func in _RETURNS_INDICES


# ---------------------------------------------------------------- looking inside composite functions


def _no_dispatch_check(*_: Any) -> bool:
    return False


@functools.cache
def _body(func: types.FunctionType) -> types.FunctionType:
    """``func`` without its own torch-function check, so that a mode sees the ops inside it.

    Torch hands a composite function such as ``F.multi_head_attention_forward``
    to the mode as one call; running this copy under the mode exposes its
    matmuls and softmax to the rules instead.
    """
    namespace = {**func.__globals__, "has_torch_function": _no_dispatch_check}
    body = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    body.__kwdefaults__ = func.__kwdefaults__
    return body


COMPOSITE = {F.multi_head_attention_forward}


# ---------------------------------------------------------------- guided backprop and deconvolution


class _ReLURule(torch.autograd.Function):
    """ReLU with a replaced backward: ``rule(grad, input)``."""

    @staticmethod
    def forward(ctx, x: Tensor, rule: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        ctx.rule = rule
        ctx.save_for_backward(x)
        return F.relu(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return ctx.rule(grad, x), None


def guided_rule(grad: Tensor, x: Tensor) -> Tensor:
    """Guided backprop: only positive gradients, only through units that were active."""
    return F.relu(grad) * (x > 0)


def deconvolution_rule(grad: Tensor, x: Tensor) -> Tensor:
    """Deconvolution: only positive gradients, whatever the unit's input."""
    return F.relu(grad)


class ReLURules(TorchFunctionMode):
    """Every ReLU, however it is called, backpropagates with ``rule``."""

    def __init__(self, rule: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELU:
            return _ReLURule.apply(args[0], self.rule)
        return func(*args, **(kwargs or {}))
