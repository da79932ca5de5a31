"""Backpropagation rules: nonlinear ops whose backward pass is replaced.

Rule-based methods (DeepLift, guided backprop, deconvolution) differ from
the gradient only at nonlinearities.  Instead of hooking ``nn.ReLU``
modules (which misses ``F.relu`` in ``forward``, mixes up a module used
twice and trips over in-place activations), a ``TorchFunctionMode``
intercepts the nonlinear torch functions themselves wherever they are called
and routes them through an autograd function with the rule's backward.  The
forward values are unchanged; in-place variants are computed out of place
(their result is returned, as ``nn.ReLU(inplace=True)`` callers use it).

DeepLift runs the model on ``[inputs; references]`` stacked on dim 0, so each
intercepted op sees every activation next to its reference activation (the
other half of the batch).  Its rule is the secant ("rescale") multiplier:
for an op ``y = f(x)`` on a group of elements (one element for
activations, a softmax row, a pooling window) the backward uses
``M = J + (dy - J dx) dx^T / |dx|^2``, which satisfies ``M dx = dy`` exactly,
so attributions sum to ``f(input) - f(reference)`` through any chain of such
ops and linear layers.  For activations it reduces to DeepLift's Rescale rule
``dy / dx`` (the gradient where ``dx`` is ~0).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

EPS = 1e-10

RELU = {F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu_}
ACTIVATIONS = {
    **dict.fromkeys(RELU, F.relu),
    **dict.fromkeys((torch.sigmoid, Tensor.sigmoid, F.sigmoid), torch.sigmoid),
    **dict.fromkeys((torch.tanh, Tensor.tanh, F.tanh), torch.tanh),
    F.elu: F.elu,
    F.leaky_relu: F.leaky_relu,
    F.gelu: F.gelu,
    F.silu: F.silu,
    F.softplus: F.softplus,
    F.relu6: F.relu6,
    F.hardtanh: F.hardtanh,
    F.hardswish: F.hardswish,
    F.mish: F.mish,
    F.selu: F.selu,
    F.celu: F.celu,
}
"""Elementwise nonlinearities, each mapped to an out-of-place function with the same values."""
SOFTMAX = {F.softmax, torch.softmax, Tensor.softmax, F.log_softmax, torch.log_softmax, Tensor.log_softmax}
MAX_POOL = {F.max_pool2d, torch.max_pool2d}
ADAPTIVE_MAX_POOL = {F.adaptive_max_pool2d}


def _halves_swapped(t: Tensor) -> Tensor:
    """Each row's counterpart: the reference for an input row, the input for a reference row."""
    first, second = t.chunk(2)
    return torch.cat([second, first])


def _vjp(op: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> Tensor:
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        (result,) = torch.autograd.grad(op(leaf), leaf, grad)
    return result


class _Secant(torch.autograd.Function):
    """``y = op(x)`` whose backward uses the secant multiplier between the two halves of the batch."""

    @staticmethod
    def forward(ctx, x: Tensor, op: Callable[[Tensor], Tensor], spread: Callable) -> Tensor:
        y = op(x)
        ctx.op, ctx.spread = op, spread
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y = ctx.saved_tensors
        dx, dy = x - _halves_swapped(x), y - _halves_swapped(y)
        gradient = _vjp(ctx.op, x, grad)
        return ctx.spread(ctx.op, x, dx, dy, grad, gradient), None, None


def _spread_elementwise(op, x, dx, dy, grad, gradient, eps: float = EPS) -> Tensor:
    """Rescale: ``grad * dy / dx``, the gradient where ``dx`` is ~0."""
    safe = dx.abs() > eps
    return torch.where(safe, grad * dy / torch.where(safe, dx, torch.ones_like(dx)), gradient)


def _residual(op, x, dx, dy) -> Tensor:
    """``dy - J dx``: what the gradient alone would miss.

    ``J dx`` comes from two reverse passes (the vjp's own derivative in its
    cotangent), which every op here supports, instead of forward-mode AD.
    """
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        y = op(leaf)
        cotangent = torch.zeros_like(y, requires_grad=True)
        (vjp,) = torch.autograd.grad(y, leaf, cotangent, create_graph=True)
        (j_dx,) = torch.autograd.grad(vjp, cotangent, dx)
    return dy - j_dx


def _spread_along(dim: int, op, x, dx, dy, grad, gradient, eps: float = EPS) -> Tensor:
    """Secant correction for ops whose outputs each depend on a whole row along ``dim`` (softmax)."""
    weight = (grad * _residual(op, x, dx, dy)).sum(dim, keepdim=True)
    norm = (dx * dx).sum(dim, keepdim=True)
    return gradient + dx * torch.where(norm > eps, weight / norm.clamp_min(eps), torch.zeros_like(norm))


def _spread_windows(geometry: dict, op, x, dx, dy, grad, gradient, eps: float = EPS) -> Tensor:
    """Secant correction for max pooling: each output's residual goes back over its window."""
    n, c, h, w = x.shape
    kernel, dilation, padding, stride = (geometry[k] for k in ("kernel_size", "dilation", "padding", "stride"))
    windows = F.unfold((dx * dx).reshape(n * c, 1, h, w), kernel, dilation, padding, stride)  # (nc, k*k, L)
    norm = windows.sum(1, keepdim=True)
    weight = (grad * _residual(op, x, dx, dy)).reshape(n * c, 1, -1)
    share = torch.where(norm > eps, weight / norm.clamp_min(eps), torch.zeros_like(norm))
    spread = F.fold(share.expand_as(windows), (h, w), kernel, dilation, padding, stride).reshape(n, c, h, w)
    return gradient + dx * spread


def _adaptive_windows(size: int, out: int, like: Tensor) -> Tensor:
    """``(out, size)`` 0/1 matrix: which input positions adaptive pooling gives each output."""
    index = torch.arange(size, device=like.device)
    starts = torch.arange(out, device=like.device) * size // out
    ends = -(-(torch.arange(out, device=like.device) + 1) * size // out)  # ceil
    return ((index >= starts[:, None]) & (index < ends[:, None])).to(like.dtype)


def _spread_adaptive(output_size, op, x, dx, dy, grad, gradient, eps: float = EPS) -> Tensor:
    """Secant correction for adaptive max pooling: windows given by membership matrices."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    rows = _adaptive_windows(x.shape[-2], out_h or x.shape[-2], x)
    cols = _adaptive_windows(x.shape[-1], out_w or x.shape[-1], x)
    norm = torch.einsum("ih,nchw,jw->ncij", rows, dx * dx, cols)
    weight = grad * _residual(op, x, dx, dy)
    share = torch.where(norm > eps, weight / norm.clamp_min(eps), torch.zeros_like(norm))
    return gradient + dx * torch.einsum("ih,ncij,jw->nchw", rows, share, cols)


def _out_of_place(func: Callable, args: tuple, kwargs: dict) -> tuple[Tensor, dict]:
    """The input and the keyword options of an activation call, without ``inplace``."""
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):  # builtins such as torch.sigmoid take only the input
        return args[0], {}
    options = dict(bound.arguments)
    options.pop("inplace", None)
    return options.pop(next(iter(options))), options


def _pool_geometry(args: tuple, kwargs: dict) -> dict | None:
    """Keyword form of F.max_pool2d's window arguments, or None for cases the rule does not cover."""
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    bound = dict(zip(names, args), **kwargs)
    if bound.get("ceil_mode") or bound.get("return_indices") or bound["input"].dim() != 4:
        return None
    kernel = bound["kernel_size"]
    return {
        "kernel_size": kernel,
        "stride": bound.get("stride") or kernel,
        "padding": bound.get("padding", 0),
        "dilation": bound.get("dilation", 1),
    }


class DeepLiftRules(TorchFunctionMode):
    """Secant (rescale) multipliers at every nonlinearity, for a batch of ``[inputs; references]``.

    Args:
        eps: below this difference from the reference (squared norm for
            groups), the gradient is used instead of the secant.
    """

    def __init__(self, eps: float = EPS) -> None:
        super().__init__()
        self.eps = eps

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in ACTIVATIONS:
            x, options = _out_of_place(func, args, kwargs)
            return _Secant.apply(x, partial(ACTIVATIONS[func], **options), partial(_spread_elementwise, eps=self.eps))
        if func in SOFTMAX:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            log = func in (F.log_softmax, torch.log_softmax, Tensor.log_softmax)
            op = partial(torch.log_softmax if log else torch.softmax, dim=dim)
            return _Secant.apply(args[0], op, partial(_spread_along, dim, eps=self.eps))
        if func in MAX_POOL and (geometry := _pool_geometry(args, kwargs)) is not None:
            op = partial(F.max_pool2d, **geometry)
            return _Secant.apply(args[0], op, partial(_spread_windows, geometry, eps=self.eps))
        if func in ADAPTIVE_MAX_POOL:
            bound = dict(zip(("input", "output_size", "return_indices"), args), **kwargs)
            if not bound.get("return_indices") and bound["input"].dim() == 4:
                op = partial(F.adaptive_max_pool2d, output_size=bound["output_size"])
                return _Secant.apply(args[0], op, partial(_spread_adaptive, bound["output_size"], eps=self.eps))
        return func(*args, **kwargs)


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
