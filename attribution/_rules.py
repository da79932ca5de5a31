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
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from attribution._rule_ops import (
    _INPLACE_DUNDERS,
    ACTIVATIONS,
    ADAPTIVE_MAX_POOL,
    COMPOSITE,
    DIVIDE,
    EPS,
    LINEAR_OPS,
    MATMUL,
    MAX_POOL,
    MULTIPLY,
    POWER,
    SOFTMAX,
    _activation_call,
    _Bilinear,
    _bind,
    _body,
    _larger_spread,
    _pairable,
    _pool_call,
    _RoutedMax,
    _RowSecant,
    _Secant,
    _softmax_call,
)

# ---------------------------------------------------------------- the mode


def _on_input(handler: Callable) -> Callable:
    """For ops nonlinear in their first argument: calls where only other arguments depend on the input
    (a norm's weight, say) run unchanged."""

    @functools.wraps(handler)
    def checked(self: DeepLiftRules, func: Callable, args: tuple, kwargs: dict) -> Any:
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
        self._tracked: dict[int, weakref.ref] = {}  # by identity: a WeakSet would compare tensors with ==
        self._inside: set[Callable] = set()

    def track(self, *tensors: Any) -> None:
        """Mark tensors (and everything later computed from them) as input-dependent."""
        for t in tensors:
            if isinstance(t, Tensor):
                self._tracked[id(t)] = weakref.ref(t)

    def depends(self, t: Any) -> bool:
        """Whether ``t`` is a tensor computed from the tracked inputs."""
        ref = self._tracked.get(id(t)) if isinstance(t, Tensor) else None
        return ref is not None and ref() is t

    def _touches(self, args: tuple, kwargs: dict) -> bool:
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

    def _track_result(self, func: Callable, args: tuple, result: Any) -> None:
        self.track(*(result if isinstance(result, (tuple, list)) else (result,)))
        name = getattr(func, "__name__", "")
        if args and (name in _INPLACE_DUNDERS or (name.endswith("_") and not name.startswith("__"))):
            self.track(args[0])  # written in place: now it depends on the input too

    def _unruled(self, func: Callable, args: tuple, kwargs: dict, why: str | None = None) -> Any:
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

    def derived(self, result: Any, *sources: Any) -> Any:
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
        return self.derived(_Secant.apply(x, op, self.eps), x)

    def product(self, op: Callable[[Any, Any], Tensor], a: Any, b: Any) -> Tensor:
        """``op(a, b)`` for a bilinear ``op``: the Shapley split when both factors depend on the input."""
        if not (self.depends(a) and self.depends(b)):
            return self.derived(op(a, b), a, b)  # linear in the one input-dependent factor
        if not (_pairable(a) and _pairable(b) and a.dim() == b.dim() and a.shape[0] == b.shape[0]):
            self.unruled.add("product (no reference pair on dim 0)")
            return self.derived(op(a, b), a)
        return self.derived(_Bilinear.apply(a, b, op), a)

    def rows(self, op: Callable[[Tensor], Tensor], x: Tensor, dims: tuple[int, ...], spread: str = "") -> Tensor:
        """``op(x)`` for an op on rows along ``dims``, with the row secant.  ``spread`` ("variance" or
        "mean_square") names what a norm divides by: the Jacobian is then taken at the end where it is larger."""
        if not self.depends(x):
            return op(x)
        if not _pairable(x):
            self.unruled.add(f"{getattr(op, '__name__', 'row op')} (no reference pair on dim 0)")
            return self.derived(op(x), x)
        at_counterpart = _larger_spread(x.detach(), dims, spread == "variance") if spread else None
        return self.derived(_RowSecant.apply(x, op, dims, self.eps, at_counterpart), x)

    # -- handlers: (self, func, args, kwargs) -> result

    def _both_depend(self, args: tuple, kwargs: dict) -> bool:
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
    return numerator / x


def _raised(base: Any, x: Tensor) -> Tensor:
    return torch.pow(base, x)


def _per_channel(bound: dict, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """A norm's per-channel weight and bias, shaped to broadcast over ``(N, C, *spatial)``."""
    shape = (-1, *([1] * (x.dim() - 2)))
    return tuple(None if bound[k] is None else bound[k].reshape(shape) for k in ("weight", "bias"))


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


_MATMUL_OP = {torch.bmm: torch.bmm, Tensor.bmm: torch.bmm, torch.mm: torch.mm, Tensor.mm: torch.mm}
_HANDLERS: dict[Callable, Callable] = {
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
