"""Backpropagation rules: nonlinear ops whose backward pass is replaced.

Rule-based methods (DeepLift, guided backprop, deconvolution) differ from
the gradient only at nonlinearities.  Instead of hooking ``nn.ReLU``
modules (which misses ``F.relu`` in ``forward``, mixes up a module used
twice and trips over in-place activations), a ``TorchFunctionMode``
intercepts the torch functions themselves wherever they are called and
routes the nonlinear ones through an autograd function with the rule's
backward.  Forward values are unchanged (up to float rounding where an op is
written out in smaller ones); in-place variants are computed out of place
(their result is returned, as ``nn.ReLU(inplace=True)`` callers use it).

DeepLift runs the model on ``[inputs; references]`` stacked on dim 0, so each
op sees every activation next to its reference activation (the other half of
the batch; models must keep the batch on dim 0, batch-major, as
``batch_first`` models do).  The mode tracks which tensors depend on the
inputs; ops on anything else (weights, masks, constants) run unchanged.
Every rule below is *exact*: the multipliers map the difference from the
reference onto the output difference, so attributions sum to
``f(input) - f(reference)`` through any chain of ruled ops and linear ones.

- Elementwise activations (ReLU family, sigmoid, tanh, GELU, SiLU,
  hardswish, hardsigmoid, ..., and ``exp``, ``log``, ``sqrt``, ``rsqrt``,
  reciprocals, powers, ``clamp``): DeepLift's Rescale rule ``dy / dx``, the
  gradient where ``dx`` is ~0.
- Softmax / log-softmax: the secant per row,
  ``M = J + (dy - J dx) dx^T / |dx|^2`` (``J`` the Jacobian at the input
  row), which satisfies ``M dx = dy``.
- Products of two input-dependent tensors (``a * b`` as in squeeze-and-excite
  gating, ``a @ b``, ``bmm``, two-operand ``einsum``, ``a / b``): the Shapley
  split of a bilinear map, ``d(ab) = mean(a) db + da mean(b)`` with means over
  the input and its reference, which is exact.  A product with a weight or a
  constant is linear and keeps its gradient.
- LayerNorm, GroupNorm, InstanceNorm, RMSNorm and ``F.normalize``: the same
  secant per normalised row (a token's features, a group's channels and
  positions), the affine weight and bias applied after it (linear).  ``J`` is
  taken at whichever of input and reference has the larger variance: the
  Jacobian grows like 1 / std, and a zero baseline through a net with zero
  biases has zero variance.  (Writing the norm out as ``c * rsqrt(var)`` with
  the product rule is exact too, but cancels terms ~1 / sqrt(eps) large
  there, which float32 cannot afford.)
- Attention: ``F.scaled_dot_product_attention`` is written out as
  ``softmax(q k^T * scale + mask) v``, so the product and softmax rules apply;
  ``F.multi_head_attention_forward`` is run with its inner ops visible.
- Max pooling (1-D, 2-D, 3-D, adaptive, overlapping windows): Captum's rule.
  Each window's output difference is routed to the winning position of
  whichever of input and reference has the larger maximum, and divided there
  by that position's difference.  The rule is exact: a winner's own
  difference is never zero unless the window's difference is.  Captum's maps
  are matched where Captum applies it; Captum's *results* are incomplete where
  its module hooks compose badly (a ReLU module right before the pool makes it
  backpropagate the pool's plain gradient; one right after also breaks it)
  and where windows overlap (unpooling overwrites shared winners instead of
  adding).  On ties (a constant reference) the input's winner is used when it
  also wins the reference's window, which is what Captum returns when a ReLU
  feeds the pool.  Average pooling and batch norm in eval mode are linear.

Ops that are neither ruled nor known to be linear (say ``torch.max`` over a
row, or ``F.max_unpool2d`` at the input's own indices) still run, with their
gradient; the mode records their names so that DeepLift can say which ops to
blame when attributions do not add up.

The file holds the rules themselves first (autograd functions whose backward
is a rule: the secant, the Shapley split of a product, Captum's max-pooling
rule, the guided and deconvolution ReLU rules with the mode that applies
them, and the tables of torch functions each applies to), then DeepLift's
mode that routes calls to them.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

# ---------------------------------------------------------------- the rules and the functions they apply to

EPS = 1e-10
_T = TypeVar("_T")
_Fn = Callable[..., Any]  # a torch function, as a mode or a table sees it

RELU: set[_Fn] = {F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu_}
ACTIVATIONS: dict[_Fn, _Fn] = {
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
SOFTMAX: set[_Fn] = {F.softmax, torch.softmax, Tensor.softmax, F.log_softmax, torch.log_softmax, Tensor.log_softmax}
LOG_SOFTMAX: set[_Fn] = {F.log_softmax, torch.log_softmax, Tensor.log_softmax}
MULTIPLY: set[_Fn] = {torch.mul, torch.multiply, Tensor.mul, Tensor.multiply, Tensor.mul_, Tensor.__mul__}
MULTIPLY.update((Tensor.__rmul__, Tensor.__imul__))
MATMUL: set[_Fn] = {torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.bmm, Tensor.bmm, torch.mm, Tensor.mm}
DIVIDE: set[_Fn] = {torch.div, torch.divide, torch.true_divide, Tensor.div, Tensor.divide, Tensor.true_divide}
DIVIDE.update((Tensor.div_, Tensor.__truediv__, Tensor.__itruediv__))
POWER: set[_Fn] = {torch.pow, Tensor.pow, Tensor.__pow__, Tensor.pow_, Tensor.__ipow__}
_POOL_WITH_INDICES: dict[tuple[str, int], _Fn] = {
    ("max", 1): F.max_pool1d_with_indices,
    ("max", 2): F.max_pool2d_with_indices,
    ("max", 3): F.max_pool3d_with_indices,
    ("adaptive", 1): F.adaptive_max_pool1d_with_indices,
    ("adaptive", 2): F.adaptive_max_pool2d_with_indices,
    ("adaptive", 3): F.adaptive_max_pool3d_with_indices,
}
"""Each max pooling's form that returns ``(out, indices)``, by kind and number of spatial dims."""
MAX_POOL: dict[_Fn, int] = {
    **dict.fromkeys((F.max_pool1d, torch.max_pool1d, F.max_pool1d_with_indices, torch.max_pool1d_with_indices), 1),
    **dict.fromkeys((F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices), 2),
    **dict.fromkeys((F.max_pool3d, torch.max_pool3d, F.max_pool3d_with_indices), 3),
}
ADAPTIVE_MAX_POOL: dict[_Fn, int] = {
    **dict.fromkeys((F.adaptive_max_pool1d, F.adaptive_max_pool1d_with_indices, torch.adaptive_max_pool1d), 1),
    **dict.fromkeys((F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices), 2),
    **dict.fromkeys((F.adaptive_max_pool3d, F.adaptive_max_pool3d_with_indices), 3),
}
_RETURNS_INDICES: set[_Fn] = {*_POOL_WITH_INDICES.values(), torch.max_pool1d_with_indices, torch.adaptive_max_pool1d}

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


def _bind(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any], **defaults: Any) -> dict[str, Any]:
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
    def forward(
        ctx, x: Tensor, op: Callable[[Tensor], Tensor], dims: tuple[int, ...], eps: float, at_counterpart: Tensor | None
    ) -> Tensor:
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


def _softmax_call(func: _Fn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, partial[Tensor]]:
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


def _call_with(fn: Callable[..., Tensor], rest: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor) -> Tensor:
    return fn(x, *rest, **kwargs)


def _activation_call(
    func: _Fn, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
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
    def forward(
        ctx, x: Tensor, pool: Callable[[Tensor], tuple[Tensor, Tensor]], spatial: int, eps: float
    ) -> tuple[Tensor, Tensor]:
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


def _pool_call(
    func: _Fn, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, Tensor]], int, bool]:
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


COMPOSITE: set[_Fn] = {F.multi_head_attention_forward}


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


# ---------------------------------------------------------------- the mode


def _on_input(handler: _Fn) -> _Fn:
    """For ops nonlinear in their first argument: calls where only other arguments depend on the input
    (a norm's weight, say) run unchanged."""

    @functools.wraps(handler)
    def checked(self: DeepLiftRules, func: _Fn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.depends(args[0] if args else kwargs.get("input")):
            return self._unruled(func, args, kwargs)
        return handler(self, func, args, kwargs)

    return checked


class DeepLiftRules(TorchFunctionMode):
    """DeepLift's rules at every nonlinearity, for a batch of ``[inputs; references]``.

    Call :meth:`track` on the stacked inputs inside the mode; ops on tensors
    computed from them meet the rules, everything else runs unchanged.

    Args:
        eps: below this difference from the reference (squared norm for
            rows), the gradient is used instead of the secant.

    Attributes:
        unruled: names of ops that saw input-dependent tensors but have no
            rule and are not known to be linear (to name in a warning).
    """

    def __init__(self, eps: float = EPS) -> None:
        super().__init__()
        self.eps = eps
        self.unruled: set[str] = set()
        self._tracked: dict[int, weakref.ref[Tensor]] = {}  # by identity: a WeakSet would compare tensors with ==
        self._inside: set[_Fn] = set()

    def track(self, *tensors: Any) -> None:
        """Mark tensors (and everything later computed from them) as input-dependent."""
        for t in tensors:
            if isinstance(t, Tensor):
                self._tracked[id(t)] = weakref.ref(t)

    def depends(self, t: Any) -> bool:
        """Whether ``t`` is a tensor computed from the tracked inputs."""
        ref = self._tracked.get(id(t)) if isinstance(t, Tensor) else None
        return ref is not None and ref() is t

    def _touches(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        for a in (*args, *kwargs.values()):
            if isinstance(a, (list, tuple)):
                if any(self.depends(b) for b in a):
                    return True
            elif self.depends(a):
                return True
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._touches(args, kwargs):
            return func(*args, **kwargs)
        handler = _HANDLERS.get(func)
        result = handler(self, func, args, kwargs) if handler is not None else self._unruled(func, args, kwargs)
        self._track_result(func, args, result)
        return result

    def _track_result(self, func: _Fn, args: tuple[Any, ...], result: Any) -> None:
        self.track(*(result if isinstance(result, (tuple, list)) else (result,)))
        name = getattr(func, "__name__", "")
        if args and (name in _INPLACE_DUNDERS or (name.endswith("_") and not name.startswith("__"))):
            self.track(args[0])  # written in place: now it depends on the input too

    def _unruled(self, func: _Fn, args: tuple[Any, ...], kwargs: dict[str, Any], why: str | None = None) -> Any:
        """Run ``func`` with its gradient; remember it if it may be nonlinear."""
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", repr(func))
        outputs = result if isinstance(result, (tuple, list)) else (result,)
        if why is not None or (
            name not in LINEAR_OPS and any(isinstance(t, Tensor) and t.is_floating_point() for t in outputs)
        ):
            self.unruled.add(name if why is None else f"{name} ({why})")
        return result

    # -- primitives the handlers compose.  Each tracks what it returns, so that a handler's
    # intermediate results (computed while the mode is paused) meet the rules too.

    def derived(self, result: _T, *sources: Any) -> _T:
        """``result``, tracked if any of ``sources`` depends on the input (for linear steps)."""
        if any(self.depends(s) for s in sources):
            self.track(result)
        return result

    def secant(self, op: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``op(x)`` for an elementwise ``op``, with the Rescale rule."""
        if not self.depends(x):
            return op(x)
        if not _pairable(x):
            self.unruled.add(f"{getattr(op, '__name__', 'elementwise op')} (no reference pair on dim 0)")
            return self.derived(op(x), x)
        y: Tensor = _Secant.apply(x, op, self.eps)
        return self.derived(y, x)

    def product(self, op: Callable[[Any, Any], Tensor], a: Any, b: Any) -> Tensor:
        """``op(a, b)`` for a bilinear ``op``: the Shapley split when both factors depend on the input."""
        if not (self.depends(a) and self.depends(b)):
            return self.derived(op(a, b), a, b)  # linear in the one input-dependent factor
        if not (_pairable(a) and _pairable(b) and a.dim() == b.dim() and a.shape[0] == b.shape[0]):
            self.unruled.add("product (no reference pair on dim 0)")
            return self.derived(op(a, b), a)
        y: Tensor = _Bilinear.apply(a, b, op)
        return self.derived(y, a)

    def rows(self, op: Callable[[Tensor], Tensor], x: Tensor, dims: tuple[int, ...], spread: str = "") -> Tensor:
        """``op(x)`` for an op on rows along ``dims``, with the row secant.  ``spread`` ("variance" or
        "mean_square") names what a norm divides by: the Jacobian is then taken at the end where it is larger."""
        if not self.depends(x):
            return op(x)
        if not _pairable(x):
            self.unruled.add(f"{getattr(op, '__name__', 'row op')} (no reference pair on dim 0)")
            return self.derived(op(x), x)
        at_counterpart = _larger_spread(x.detach(), dims, spread == "variance") if spread else None
        y: Tensor = _RowSecant.apply(x, op, dims, self.eps, at_counterpart)
        return self.derived(y, x)

    # -- handlers: (self, func, args, kwargs) -> result

    def _both_depend(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return len(args) == 2 and not kwargs and self.depends(args[0]) and self.depends(args[1])

    @_on_input
    def _activation(self, func, args, kwargs):
        x, op = _activation_call(func, args, kwargs)
        return self.secant(op, x)

    @_on_input
    def _softmax(self, func, args, kwargs):
        x, op = _softmax_call(func, args, kwargs)
        return self.rows(op, x, (op.keywords["dim"],))

    def _multiply(self, func, args, kwargs):
        if not self._both_depend(args, kwargs):
            return func(*args, **kwargs)  # linear: a weight or a constant times the input
        return self.product(torch.mul, *args)

    def _matmul(self, func, args, kwargs):
        if not self._both_depend(args, kwargs):
            return func(*args, **kwargs)
        return self.product(_MATMUL_OP.get(func, torch.matmul), *args)

    def _rmatmul(self, func, args, kwargs):  # other @ self
        if not self._both_depend(args, kwargs):
            return func(*args, **kwargs)
        return self.product(torch.matmul, args[1], args[0])

    def _einsum(self, func, args, kwargs):
        equation, *operands = args
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
        dependent = sum(self.depends(t) for t in operands)
        if dependent < 2 or kwargs:
            return func(*args, **kwargs)
        if len(operands) != 2:
            return self._unruled(func, args, kwargs, why="more than two input-dependent operands")
        return self.product(partial(torch.einsum, equation), *operands)

    def _baddbmm(self, func, args, kwargs):
        bound = _bind(("input", "batch1", "batch2"), args, kwargs, beta=1, alpha=1)
        product = self.product(torch.bmm, bound["batch1"], bound["batch2"])
        return bound["beta"] * bound["input"] + bound["alpha"] * product  # tracked by the caller

    def _divide(self, func, args, kwargs):
        bound = _bind(("input", "other"), args, kwargs, rounding_mode=None)
        a, b = bound["input"], bound["other"]
        if bound["rounding_mode"] is not None:
            return self._unruled(func, args, kwargs, why="rounding division")
        if not self.depends(b):
            return func(*args, **kwargs)  # linear in the numerator
        return self.product(torch.mul, a, self.secant(torch.reciprocal, b))

    def _rdivide(self, func, args, kwargs):  # other / self
        if not self.depends(args[0]):
            return self._unruled(func, args, kwargs)
        return self.secant(partial(_divided_into, args[1]), args[0])

    def _power(self, func, args, kwargs):
        bound = _bind(("input", "exponent"), args, kwargs)
        base, exponent = bound["input"], bound["exponent"]
        if self.depends(base) and self.depends(exponent):
            return self._unruled(func, args, kwargs, why="input-dependent exponent")
        if self.depends(exponent):
            return self.secant(partial(_raised, base), exponent)
        return self.secant(partial(torch.pow, exponent=exponent), base)

    def _rpower(self, func, args, kwargs):  # other ** self
        if not self.depends(args[0]):
            return self._unruled(func, args, kwargs)
        return self.secant(partial(_raised, args[1]), args[0])

    @_on_input
    def _glu(self, func, args, kwargs):
        bound = _bind(("input", "dim"), args, kwargs, dim=-1)
        a, b = (self.derived(t, bound["input"]) for t in bound["input"].chunk(2, dim=bound["dim"]))
        return self.product(torch.mul, a, self.secant(torch.sigmoid, b))

    @_on_input
    def _layer_norm(self, func, args, kwargs):
        names = ("input", "normalized_shape", "weight", "bias", "eps")
        bound = _bind(names, args, kwargs, weight=None, bias=None, eps=1e-5)
        shape = bound["normalized_shape"]
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        op = partial(F.layer_norm, normalized_shape=shape, eps=bound["eps"])
        y = self.rows(op, bound["input"], tuple(range(-len(shape), 0)), spread="variance")
        return _affine(y, bound["weight"], bound["bias"])

    @_on_input
    def _rms_norm(self, func, args, kwargs):
        bound = _bind(("input", "normalized_shape", "weight", "eps"), args, kwargs, weight=None, eps=None)
        shape = bound["normalized_shape"]
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        op = partial(F.rms_norm, normalized_shape=shape, eps=bound["eps"])
        return _affine(
            self.rows(op, bound["input"], tuple(range(-len(shape), 0)), spread="mean_square"), bound["weight"], None
        )

    @_on_input
    def _group_norm(self, func, args, kwargs):
        bound = _bind(("input", "num_groups", "weight", "bias", "eps"), args, kwargs, weight=None, bias=None, eps=1e-5)
        x = bound["input"]
        return _affine(self._grouped_norm(x, bound["num_groups"], bound["eps"]), *_per_channel(bound, x))

    @_on_input
    def _instance_norm(self, func, args, kwargs):
        names = ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps")
        bound = _bind(names, args, kwargs, weight=None, bias=None, use_input_stats=True, eps=1e-5)
        if not bound["use_input_stats"]:
            return func(*args, **kwargs)  # running statistics: affine
        x = bound["input"]
        return _affine(self._grouped_norm(x, x.shape[1], bound["eps"]), *_per_channel(bound, x))

    def _grouped_norm(self, x: Tensor, groups: int, eps: float) -> Tensor:
        """Each example's channels in ``groups`` groups, each group standardised over its channels and positions."""
        grouped = self.derived(x.reshape(x.shape[0], groups, -1), x)
        op = partial(F.layer_norm, normalized_shape=grouped.shape[-1:], eps=eps)
        return self.derived(self.rows(op, grouped, (-1,), spread="variance").reshape(x.shape), x)

    @_on_input
    def _normalize(self, func, args, kwargs):
        bound = _bind(("input", "p", "dim", "eps", "out"), args, kwargs, p=2.0, dim=1, eps=1e-12, out=None)
        if bound["out"] is not None:
            return self._unruled(func, args, kwargs, why="out=")
        op = partial(F.normalize, p=bound["p"], dim=bound["dim"], eps=bound["eps"])
        return self.rows(op, bound["input"], (bound["dim"],), spread="mean_square")

    def _attention(self, func, args, kwargs):
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        defaults = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
        bound = _bind(names, args, kwargs, **defaults)
        q, k, v, mask = bound["query"], bound["key"], bound["value"], bound["attn_mask"]
        if bound["enable_gqa"] and k.shape[-3] != q.shape[-3]:
            k, v = (self.derived(t.repeat_interleave(q.shape[-3] // t.shape[-3], dim=-3), t) for t in (k, v))
        scale = 1 / math.sqrt(q.shape[-1]) if bound["scale"] is None else bound["scale"]
        q, k = self.derived(q * scale, q), self.derived(k.transpose(-2, -1), k)
        scores = self.product(torch.matmul, q, k)
        if bound["is_causal"]:
            causal = torch.ones(q.shape[-2], k.shape[-1], dtype=torch.bool, device=q.device).tril()
            scores = self.derived(scores.masked_fill(~causal, -math.inf), scores)
        if mask is not None:
            masked = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
            scores = self.derived(masked, scores)
        weights = self.rows(partial(torch.softmax, dim=-1), scores, (-1,))
        if bound["dropout_p"] > 0:
            weights = self.derived(F.dropout(weights, bound["dropout_p"]), weights)
        return self.product(torch.matmul, weights, v)

    @_on_input
    def _max_pool(self, func, args, kwargs):
        x, pool, spatial, returns_indices = _pool_call(func, args, kwargs)
        if not _pairable(x):
            return self._unruled(func, args, kwargs, why="no reference pair on dim 0")
        out, index = _RoutedMax.apply(x, pool, spatial, self.eps)
        return (out, index) if returns_indices else out

    def _look_inside(self, func, args, kwargs):
        if func in self._inside:  # the copy did not skip the check: run it whole
            return self._unruled(func, args, kwargs)
        self._inside.add(func)
        try:
            with self:
                return _body(func)(*args, **kwargs)
        finally:
            self._inside.discard(func)


def _divided_into(numerator: Any, x: Tensor) -> Tensor:
    quotient: Tensor = numerator / x
    return quotient


def _raised(base: Any, x: Tensor) -> Tensor:
    raised: Tensor = torch.pow(base, x)
    return raised


def _per_channel(bound: dict[str, Any], x: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """A norm's per-channel weight and bias, shaped to broadcast over ``(N, C, *spatial)``."""
    shape = (-1, *([1] * (x.dim() - 2)))
    weight, bias = (None if bound[k] is None else bound[k].reshape(shape) for k in ("weight", "bias"))
    return weight, bias


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


_MATMUL_OP: dict[_Fn, _Fn] = {torch.bmm: torch.bmm, Tensor.bmm: torch.bmm, torch.mm: torch.mm, Tensor.mm: torch.mm}
_HANDLERS: dict[_Fn, _Fn] = {
    **dict.fromkeys(ACTIVATIONS, DeepLiftRules._activation),
    **dict.fromkeys(SOFTMAX, DeepLiftRules._softmax),
    **dict.fromkeys(MULTIPLY, DeepLiftRules._multiply),
    **dict.fromkeys(MATMUL, DeepLiftRules._matmul),
    Tensor.__rmatmul__: DeepLiftRules._rmatmul,
    torch.einsum: DeepLiftRules._einsum,
    **dict.fromkeys((torch.baddbmm, Tensor.baddbmm), DeepLiftRules._baddbmm),
    **dict.fromkeys(DIVIDE, DeepLiftRules._divide),
    **dict.fromkeys((Tensor.__rtruediv__, Tensor.__rdiv__), DeepLiftRules._rdivide),
    **dict.fromkeys(POWER, DeepLiftRules._power),
    Tensor.__rpow__: DeepLiftRules._rpower,
    F.glu: DeepLiftRules._glu,
    **dict.fromkeys((F.layer_norm, torch.layer_norm), DeepLiftRules._layer_norm),
    **dict.fromkeys((F.rms_norm, torch.rms_norm), DeepLiftRules._rms_norm),
    **dict.fromkeys((F.group_norm, torch.group_norm), DeepLiftRules._group_norm),
    F.instance_norm: DeepLiftRules._instance_norm,
    F.normalize: DeepLiftRules._normalize,
    F.scaled_dot_product_attention: DeepLiftRules._attention,
    **dict.fromkeys((*MAX_POOL, *ADAPTIVE_MAX_POOL), DeepLiftRules._max_pool),
    **dict.fromkeys(COMPOSITE, DeepLiftRules._look_inside),
}
"""Which handler of :class:`DeepLiftRules` each intercepted torch function goes to."""
