"""Evaluate a conv net on copies of an image that differ only inside a small box.

Occlusion runs the model once per window, yet each occluded copy differs
from the image only inside the window.  A convolution's output can only
change where its receptive field meets the changed box, so the box is
propagated layer by layer and each layer is recomputed only there; the rest
of every activation is the unoccluded image's, computed once.  Early layers,
where most of a conv net's work is, shrink to a few percent of their cost.

The model is traced with ``torch.fx``.  Only ops whose locality is known are
evaluated on boxes (exact module types, so subclasses with their own forward
are not mistaken for them): ``Conv2d`` and ``MaxPool2d`` with numeric
padding, pointwise activations, ``BatchNorm2d`` in eval mode, ``Dropout`` in
eval mode and additions.  Any other op gets full tensors (the box pasted into
the base activation) and runs as usual, so results are those of the plain
forward up to float rounding.

Values of the perturbed pass are plain tensors (full batch, or independent of
the input) or :class:`_Box` (a patch per row plus where it sits).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from attribution._internal.checks import ArgumentError

_POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
)
_POINTWISE_FUNCTIONS = {F.relu, torch.relu, torch.sigmoid, torch.tanh, F.gelu, F.silu}
_ADD_FUNCTIONS = {operator.add, torch.add, operator.iadd}


@dataclass
class _Box:
    """A spatial patch per row of the batch; outside it the value equals the base activation."""

    patch: Tensor  # (R, C, h, w)
    starts: Tensor  # (R, 2) top-left corner (y, x) in the activation's coordinates

    @property
    def size(self) -> tuple[int, int]:
        return self.patch.shape[-2], self.patch.shape[-1]


def gather_window(source: Tensor, rows: Tensor, starts: Tensor, size: tuple[int, int]) -> Tensor:
    """``source[rows[r], :, y_r : y_r + h, x_r : x_r + w]`` for every r, as ``(R, C, h, w)``."""
    ys = starts[:, :1] + torch.arange(size[0], device=starts.device)
    xs = starts[:, 1:] + torch.arange(size[1], device=starts.device)
    picked = source[rows[:, None, None], :, ys[:, :, None], xs[:, None, :]]  # (R, h, w, C)
    return picked.permute(0, 3, 1, 2)


def _read(
    value: _Box, base: Tensor, starts: Tensor, size: tuple[int, int], pad: tuple[int, int], fill: float
) -> Tensor:
    """The perturbed activation on a window per row (``starts`` in padded coordinates)."""
    rows = torch.arange(value.patch.shape[0], device=starts.device)
    padded = F.pad(base, (pad[1], pad[1], pad[0], pad[0]), value=fill) if any(pad) else base
    from_base = gather_window(padded, rows % base.shape[0], starts, size)
    # Where the window meets the patch, take the patch instead.
    offset = starts - torch.tensor(pad, device=starts.device) - value.starts
    ys = offset[:, :1] + torch.arange(size[0], device=starts.device)
    xs = offset[:, 1:] + torch.arange(size[1], device=starts.device)
    h, w = value.size
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    from_patch = value.patch[rows[:, None, None], :, ys.clamp(0, h - 1)[:, :, None], xs.clamp(0, w - 1)[:, None, :]]
    return torch.where(inside[:, None], from_patch.permute(0, 3, 1, 2), from_base)


def _spatial_size(t: Tensor) -> tuple[int, int]:
    """``(height, width)`` of an activation."""
    height, width = t.shape[-2:]
    return height, width


def _full(value: Any, base: Any) -> Any:
    """A box value as the full activation of every row."""
    if not isinstance(value, _Box):
        return value
    zero = torch.zeros_like(value.starts)
    # Contiguous, as a plain forward would give: models may .view() it.
    return _read(value, base, zero, _spatial_size(base), (0, 0), 0.0).contiguous()


def _uniform_boxes(lo: Tensor, hi: Tensor, limit: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
    """One box size for all rows covering ``[lo, hi]`` per row, shifted to stay inside the map."""
    lo = lo.clamp_min(0)
    height, width = (int(v) for v in (hi - lo + 1).amax(0).clamp_min(1).tolist())
    size = (min(height, limit[0]), min(width, limit[1]))
    bound = torch.tensor([limit[0] - size[0], limit[1] - size[1]], device=lo.device)
    return torch.minimum(lo, bound), size


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    """A module's ``kernel_size``, ``stride``, ... as a pair."""
    if isinstance(v, int):
        return v, v
    first, second = v
    return first, second


class _WindowOp:
    """A sliding-window op (convolution or max pooling) evaluated on boxes."""

    def __init__(self, module: nn.Conv2d | nn.MaxPool2d) -> None:
        if isinstance(module.padding, str):
            raise ArgumentError(f"{type(module).__name__}: padding={module.padding!r} is not supported (see supports)")
        self.module = module
        self.kernel = _pair(module.kernel_size)
        self.stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        self.padding = _pair(module.padding)
        self.dilation = _pair(module.dilation)
        self.fill = float("-inf") if isinstance(module, nn.MaxPool2d) else 0.0

    @staticmethod
    def supports(module: nn.Module) -> TypeGuard[nn.Conv2d | nn.MaxPool2d]:
        if type(module) is nn.Conv2d:
            return module.padding_mode == "zeros" and not isinstance(module.padding, str)
        return type(module) is nn.MaxPool2d and not module.ceil_mode and not module.return_indices

    def apply(self, crop: Tensor) -> Tensor:
        m = self.module
        if isinstance(m, nn.Conv2d):
            return F.conv2d(crop, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        return F.max_pool2d(crop, self.kernel, self.stride, 0, self.dilation)

    def __call__(self, value: _Box, base_in: Tensor, base_out: Tensor) -> _Box | Tensor:
        out_size = _spatial_size(base_out)
        k, s, p, d = (
            torch.tensor(v, device=value.starts.device) for v in (self.kernel, self.stride, self.padding, self.dilation)
        )
        first = value.starts + p - (k - 1) * d  # first output whose field reaches the box: ceil(first / s)
        lo = torch.div(first + s - 1, s, rounding_mode="floor")
        hi = torch.div(value.starts + torch.tensor(value.size, device=s.device) - 1 + p, s, rounding_mode="floor")
        starts, size = _uniform_boxes(lo, hi.clamp(max=torch.tensor(out_size, device=s.device) - 1), out_size)
        if size == out_size:
            full: Tensor = self.module(_full(value, base_in))
            return full
        crop_height, crop_width = (
            (n - 1) * st + (kk - 1) * dd + 1 for n, st, kk, dd in zip(size, self.stride, self.kernel, self.dilation)
        )
        crop_size = (crop_height, crop_width)
        crop = _read(value, base_in, starts * s, crop_size, self.padding, self.fill)
        return _Box(self.apply(crop), starts)


def _add(a: Any, b: Any, base_a: Any, base_b: Any) -> _Box | Tensor:
    """``a + b`` on the union of their boxes."""
    if not (isinstance(a, _Box) and isinstance(b, _Box)):
        total: Tensor = _full(a, base_a) + _full(b, base_b)
        return total
    size_a = torch.tensor(a.size, device=a.starts.device)
    size_b = torch.tensor(b.size, device=b.starts.device)
    lo = torch.minimum(a.starts, b.starts)
    hi = torch.maximum(a.starts + size_a, b.starts + size_b) - 1
    starts, size = _uniform_boxes(lo, hi, _spatial_size(base_a))
    return _Box(_read(a, base_a, starts, size, (0, 0), 0.0) + _read(b, base_b, starts, size, (0, 0), 0.0), starts)


class LocalForward(fx.Interpreter):
    """Run a traced conv net on an image batch whose copies differ from it only inside a box.

    Build it with :meth:`build`, which returns None when the model is not a
    candidate (not an ``nn.Module``, hooks registered, not traceable).
    """

    def __init__(self, module: nn.Module, graph: fx.GraphModule, image: Tensor) -> None:
        super().__init__(graph)
        self.modules_by_name = dict(module.named_modules())
        self.base: dict[fx.Node, Any] = {}
        self._node: fx.Node | None = None
        self.base_output = self._base_pass(image)

    @classmethod
    def build(cls, forward_func: Any, image: Tensor) -> LocalForward | None:
        if not isinstance(forward_func, nn.Module) or image.dim() != 4 or _has_hooks(forward_func):
            return None
        if not any(_WindowOp.supports(m) for m in forward_func.modules()):
            return None
        try:
            graph = fx.symbolic_trace(forward_func)
        except Exception:  # untraceable (data-dependent control flow, ...): use the plain forward
            return None
        if sum(node.op == "placeholder" for node in graph.graph.nodes) != 1:
            return None
        return cls(forward_func, graph, image)

    def _base_pass(self, image: Tensor) -> Tensor:
        self._recording = True
        try:
            output: Tensor = self.run(image)
            return output
        finally:
            self._recording = False

    def __call__(self, patch: Tensor, starts: Tensor) -> Tensor:
        """Model output for rows equal to the image except ``patch`` at ``starts`` (R rows)."""
        out = self.run(_Box(patch, starts))
        full: Tensor = _full(out, self.base_output)
        return full

    def run_node(self, node: fx.Node) -> Any:
        self._node = node
        result = super().run_node(node)
        if self._recording:
            # Clone: an in-place op later in the graph must not change the recorded base.
            self.base[node] = result.clone() if isinstance(result, Tensor) else result
        return result

    @property
    def _current(self) -> fx.Node:
        """The node being run: :meth:`run_node` sets it before any ``call_*`` method runs."""
        assert self._node is not None
        return self._node

    def _arg_bases(self) -> tuple[Any, ...]:
        """Base values of the current node's positional arguments."""
        return tuple(self.base[a] if isinstance(a, fx.Node) else a for a in self._current.args)

    def call_module(self, target: fx.node.Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        assert isinstance(target, str)  # fx: a call_module node's target is the module's qualified name
        module = self.modules_by_name[target]
        value = args[0] if args else None
        if self._recording or not isinstance(value, _Box) or kwargs or len(args) != 1:
            return super().call_module(target, self._materialize(args), self._materialize(kwargs))
        base_in = self._arg_bases()[0]
        if _WindowOp.supports(module):
            return _WindowOp(module)(value, base_in, self.base[self._current])
        if _is_pointwise(module):
            return _Box(module(value.patch.clone()), value.starts)
        return module(_full(value, base_in))

    def call_function(self, target: fx.node.Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._recording and any(isinstance(a, _Box) for a in args):
            if target in _ADD_FUNCTIONS and len(args) == 2 and not kwargs:
                return _add(*args, *self._arg_bases())
            if target in _POINTWISE_FUNCTIONS and len(args) == 1 and not kwargs:
                return _Box(target(args[0].patch.clone()), args[0].starts)
        return super().call_function(target, self._materialize(args), self._materialize(kwargs))

    def call_method(self, target: fx.node.Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return super().call_method(target, self._materialize(args), self._materialize(kwargs))

    def _materialize(self, values: Any) -> Any:
        """Replace box values by full tensors (for ops whose locality is unknown)."""
        if self._recording:
            return values
        nodes = self._current.kwargs if isinstance(values, dict) else self._current.args
        return self._materialize_nested(values, nodes)

    def _materialize_nested(self, value: Any, node: Any) -> Any:
        if isinstance(value, _Box):
            return _full(value, self.base[node])
        if isinstance(value, (tuple, list)) and isinstance(node, (tuple, list)):
            return type(value)(self._materialize_nested(v, n) for v, n in zip(value, node))
        if isinstance(value, dict) and isinstance(node, dict):
            return {k: self._materialize_nested(v, node[k]) for k, v in value.items()}
        return value


def _is_pointwise(module: nn.Module) -> bool:
    if type(module) in _POINTWISE_MODULES:
        return True
    if type(module) in (nn.BatchNorm2d,) and not module.training:
        return True
    return type(module) in (nn.Dropout, nn.Dropout2d) and not module.training


def _has_hooks(module: nn.Module) -> bool:
    """Hooks must see every call; the local pass skips module calls, so it is off for hooked models."""
    from torch.nn.modules import module as module_globals

    global_hooks = (
        module_globals._global_forward_hooks,
        module_globals._global_forward_pre_hooks,
    )
    if any(global_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
