"""The one boundary between a user's call and the functional core: inputs, baselines, targets, arguments.

Users pass inputs as a tensor or a tuple of tensors, baselines as scalars,
tensors or tuples of them, targets in half a dozen forms, and extra forward
arguments of any kind.  Everything is turned into one canonical form here,
once, and validated with errors that name the argument; the core only ever
sees tuples of tensors and an :class:`Objective` that maps a batch to one
scalar per row.

Batches that the core builds are *repeat-major*: ``repeats`` copies of the
``n`` examples stacked along dim 0 (row ``r * n + i`` belongs to example
``i``).  Per-example targets and tensor forward arguments are repeated the
same way.

Targets (the last section): which scalar of the model's output each example explains.  Users pass a
class index, a tuple index into a multi-dimensional output, a list or tensor with one entry per example, a
callable, or None (the output already holds one value per example); :func:`format_target` turns each into
a :class:`Target`.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union, overload

import torch
from torch import Tensor

from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution._internal.checks import describe as describe  # re-exported: the boundary's names, in one place

TensorOrTuple = Union[Tensor, tuple[Tensor, ...]]
ScalarOrTensor = Union[int, float, Tensor]
BaselineType = Union[
    None, ScalarOrTensor, tuple[ScalarOrTensor, ...], Callable[..., Union[ScalarOrTensor, tuple[ScalarOrTensor, ...]]]
]


# --------------------------------------------------------------------------- inputs


def format_inputs(
    inputs: TensorOrTuple, *, require_float: bool = False, allow_ragged: bool = False
) -> tuple[tuple[Tensor, ...], bool]:
    """Validate ``inputs`` and return ``(tuple_of_tensors, given_as_tensor)``.

    With ``allow_ragged`` (perturbation methods) inputs after the first may have other first dimensions
    (sparse index lists, offsets, empty tensors), which only a forward that returns values for the whole
    batch can take: :meth:`Objective.resolve` refuses them for any other.

    Raises:
        TypeError: not a tensor or a non-empty tuple of tensors, or (with ``require_float``) not floating-point.
        ValueError: no batch dimension, an empty batch, batch sizes that differ, or NaN / infinite values.
    """
    given_as_tensor = isinstance(inputs, Tensor)
    values: tuple[Tensor, ...] = (inputs,) if isinstance(inputs, Tensor) else inputs
    if not isinstance(values, (tuple, list)) or len(values) == 0:
        raise ArgumentTypeError(f"inputs: expected a tensor or a non-empty tuple of tensors, got {describe(inputs)}")
    for i, x in enumerate(values):
        if not isinstance(x, Tensor):
            raise ArgumentTypeError(f"inputs[{i}]: expected a tensor, got {describe(x)}")
        if x.dim() == 0:
            raise ArgumentError(f"inputs[{i}]: expected a batch dimension first, got a 0-dim tensor")
        if require_float and not x.is_floating_point():
            raise ArgumentTypeError(
                f"inputs[{i}]: gradient-based attribution needs a floating-point tensor, got dtype {x.dtype}"
            )
        check_finite(x, "inputs" if given_as_tensor else f"inputs[{i}]")
    if values[0].shape[0] == 0:
        raise ArgumentError("inputs: the batch is empty (first dimension is 0); pass at least one example")
    if not allow_ragged:
        check_same_batch(tuple(values))
    return tuple(values), given_as_tensor


def check_same_batch(inputs: tuple[Tensor, ...], reason: str = "") -> None:
    """Raise unless every input has the first input's batch size (``reason`` is added to the message)."""
    n = inputs[0].shape[0]
    for i, x in enumerate(inputs[1:], start=1):
        if x.shape[0] != n:
            raise ArgumentError(
                f"inputs[{i}]: every input needs the same batch size; inputs[0] has {n} examples, "
                f"inputs[{i}] has {x.shape[0]}{reason}"
            )


def check_finite(x: Tensor, name: str) -> None:
    """Raise unless every value of a floating-point tensor is finite (integer and bool tensors always are).

    NaN or infinity in an input or baseline turns every perturbed copy and path point that touches it
    into NaN, so it is refused where the user can still tell which argument it came from.
    """
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ArgumentError(
            f"{name}: expected finite values, got {bad} NaN or infinite value(s) in a {describe(x)}; "
            f"replace them (e.g. torch.nan_to_num) before attributing"
        )


def restore_structure(values: Sequence[Tensor], given_as_tensor: bool) -> TensorOrTuple:
    """Return ``values`` in the structure the user passed the inputs in."""
    return values[0] if given_as_tensor else tuple(values)


def _per_input(value: Any, n_inputs: int, name: str) -> tuple[Any, ...]:
    """Spread a single value over all inputs, or check a per-input tuple's length."""
    if isinstance(value, (tuple, list)):
        if len(value) != n_inputs:
            raise ArgumentError(f"{name}: expected one entry per input ({n_inputs}), got {len(value)}")
        return tuple(value)
    return (value,) * n_inputs


def _baseline_tensor(value: Any, x: Tensor, name: str) -> Tensor:
    """A number or tensor as a finite tensor on ``x``'s device, in the dtype perturbed copies of ``x`` take.

    Floating inputs convert the baseline to their dtype.  Integer and bool inputs (token ids, masks) keep
    their dtype where every baseline value is representable in it (a pad id, 0, True), so that embedding
    lookups still get integers; otherwise (0.2 for an integer input) the dtypes are promoted as in
    ``x * (1 - mask) + baseline * mask``, and the perturbed copies are floating-point.
    """
    if isinstance(value, Tensor):
        b = value.to(device=x.device)
    elif isinstance(value, numbers.Real):
        b = torch.tensor(value, device=x.device, dtype=x.dtype if x.is_floating_point() else None)
    else:
        raise ArgumentTypeError(f"{name}: expected a number or a tensor, got {describe(value)}")
    check_finite(b, name)
    if x.is_floating_point() or x.is_complex() or b.dtype == x.dtype:
        return b.to(x.dtype)
    if bool((b.to(x.dtype).to(b.dtype) == b).all()):  # representable: the copies keep the input's dtype
        return b.to(x.dtype)
    return b.to(torch.promote_types(x.dtype, b.dtype))


def _broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """``shape`` broadcasts to ``target`` without adding dimensions in front (numpy's rule, right-aligned)."""
    return len(shape) <= len(target) and all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


def format_baselines(baselines: BaselineType, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Baselines as tensors that broadcast against each input.

    Accepted per input: a number or any tensor that broadcasts to the input's
    shape: the input's shape, a leading dimension of 1 (one baseline shared
    by the batch), one example's shape without the batch dimension (``(3,)``
    for a ``(n, 3)`` input), a scalar tensor.  ``None`` means zeros; a function
    is called for the baselines (see :func:`_called`).  Returned
    tensors have the input's number of dimensions, each dimension 1 or the
    input's; their dtype is described in :func:`_baseline_tensor`.

    Raises:
        TypeError: a baseline that is neither a number nor a tensor.
        ValueError: a shape that does not broadcast to the input, the wrong number of baselines for tuple
            inputs, or NaN / infinite values.
    """
    baselines = _called(baselines, inputs)
    if baselines is None:
        return tuple(torch.zeros((1,) * x.dim(), device=x.device, dtype=x.dtype) for x in inputs)
    formatted = []
    for i, (b, x) in enumerate(zip(_per_input(baselines, len(inputs), "baselines"), inputs)):
        name = "baselines" if len(inputs) == 1 else f"baselines[{i}]"
        b = _baseline_tensor(b, x, name)
        if not _broadcasts_to(b.shape, x.shape):
            raise ArgumentError(
                f"{name}: expected a number or a tensor of shape {tuple(x.shape)} or one that broadcasts to it "
                f"(e.g. {(1, *x.shape[1:])} to share one baseline across the batch), got shape {tuple(b.shape)}"
            )
        formatted.append(b.reshape((1,) * (x.dim() - b.dim()) + tuple(b.shape)))
    return tuple(formatted)


def _called(baselines: BaselineType, inputs: tuple[Tensor, ...]) -> BaselineType:
    """Baselines given as a function (Captum's form): called with no arguments, or with the inputs (a
    tensor, or a tuple for several) when it takes any, for the baselines themselves."""
    if not callable(baselines):
        return baselines
    try:
        takes_inputs = bool(inspect.signature(baselines).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: give it the inputs
        takes_inputs = True
    return baselines(inputs[0] if len(inputs) == 1 else inputs) if takes_inputs else baselines()


def format_baseline_distribution(baselines: BaselineType, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Baselines to sample from: per input, ``k`` rows shaped like one example.

    A tensor with the input's number of dimensions holds ``k`` rows whose shape broadcasts to one
    example's; one with fewer dimensions (or a number) is a single row.  Rows are drawn jointly across
    inputs, so every input needs the same ``k``.
    """
    baselines = _called(baselines, inputs)
    if baselines is None:
        return tuple(torch.zeros((1, *x.shape[1:]), device=x.device, dtype=x.dtype) for x in inputs)
    formatted = []
    for i, (b, x) in enumerate(zip(_per_input(baselines, len(inputs), "baselines"), inputs)):
        name = "baselines" if len(inputs) == 1 else f"baselines[{i}]"
        b = _baseline_tensor(b, x, name)
        given = tuple(b.shape)
        if b.dim() < x.dim():
            b = b.unsqueeze(0)
        if b.shape[0] == 0 or not _broadcasts_to(b.shape[1:], x.shape[1:]):
            raise ArgumentError(
                f"{name}: expected a number or a tensor of shape (k, {', '.join(map(str, x.shape[1:]))}) "
                f"holding k >= 1 baselines (or one of shape {tuple(x.shape[1:])}), got shape {given}"
            )
        formatted.append(b.expand(b.shape[0], *x.shape[1:]))
    counts = {b.shape[0] for b in formatted}
    if len(counts) > 1:
        raise ArgumentError(f"baselines: every input needs the same number of baseline rows, got {sorted(counts)}")
    return tuple(formatted)


def format_additional_args(args: Any) -> tuple[Any, ...]:
    """``additional_forward_args`` as a tuple appended to the inputs in each forward."""
    if args is None:
        return ()
    return tuple(args) if isinstance(args, tuple) else (args,)


@overload
def repeat_rows(value: Tensor, repeats: int) -> Tensor: ...
@overload
def repeat_rows(value: Any, repeats: int) -> Any: ...
def repeat_rows(value: Any, repeats: int) -> Any:
    """Repeat a batched tensor ``repeats`` times along dim 0 (repeat-major); leave other values."""
    if repeats == 1 or not isinstance(value, Tensor) or value.dim() == 0:
        return value
    return value.repeat(repeats, *([1] * (value.dim() - 1)))


# --------------------------------------------------------------------------- the objective


@dataclass(frozen=True, eq=False)
class Objective:
    """What an attribution explains: one scalar per row of a (repeated) batch.

    With ``aggregate`` the forward returns values for the whole batch (a
    loss, an accuracy, or several such; the reference's "aggregate output
    mode"): every copy of the batch then yields ``target.outputs`` values,
    and its ``n`` examples are explained together (attributions with a first
    dimension of 1, or one row per value).  Perturbation methods find this
    out with :meth:`resolve`.
    """

    forward_func: Callable[..., Tensor]
    target: Target
    additional_args: tuple[Any, ...] = ()
    aggregate: bool = False
    output_shape: tuple[int, ...] | None = None
    """The shape the forward gives one batch's values in, when there are several per example or per batch
    (set by :meth:`resolve`); :meth:`unflatten` lays attributions out by it."""

    @property
    def rows(self) -> int:
        """Values per copy of the batch: one per example (or per output element of each, see
        :meth:`resolve`), or the forward's values for the whole batch when aggregate."""
        return self.target.n * self.target.outputs

    def forward(self, inputs: tuple[Tensor, ...], repeats: int = 1) -> Tensor:
        """The model's raw output for a batch of ``repeats`` repeat-major copies."""
        extra = tuple(repeat_rows(a, repeats) for a in self.additional_args)
        output = self.forward_func(*inputs, *extra)
        if isinstance(output, torch.futures.Future):
            raise ArgumentError(
                "forward_func: returned a torch.futures.Future; FeatureAblation, FeaturePermutation and "
                "ShapleyValueSampling take such a forward in attribute_future"
            )
        return output

    def __call__(self, inputs: tuple[Tensor, ...], repeats: int = 1) -> Tensor:
        if not self.aggregate:
            return self.target.select(self.forward(inputs, repeats), repeats)
        # The model pools over whatever batch it gets, so each copy needs a forward of its own.  Inputs
        # may have batch sizes of their own (sparse index lists), so each is cut by its own size.
        sizes = [x.shape[0] // repeats for x in inputs]
        copies = (tuple(x[r * s : (r + 1) * s] for x, s in zip(inputs, sizes)) for r in range(repeats))
        device, count = inputs[0].device, self.target.outputs
        return torch.cat([_batch_values(self.forward(copy), device, count) for copy in copies])

    def unflatten(self, values: Tensor) -> Tensor:
        """``(rows, ...)`` values as ``(*output_shape, ...)``: attributions laid out like the forward's
        output (the Shapley classes' layout in the reference), ``(n, K, ...)`` for ``K`` outputs per example."""
        if self.output_shape is None:
            return values
        return values.reshape(*self.output_shape, *values.shape[1:])

    def resolve(self, inputs: tuple[Tensor, ...]) -> tuple[Objective, Tensor]:
        """Evaluate an unperturbed batch once and settle how the forward's outputs are read.

        The forward is aggregate when it returns a Python number, a 0-dim
        tensor, a single value for several examples, or (with ``target=None``)
        a tensor whose first dimension is not the batch: ``(1, K)`` or ``(K,)``
        values for the whole batch.  For one example, a ``(1, ...)`` output
        that could be either costs one more forward of two copies.  With
        ``target=None``, a forward with several values per example explains
        each of them (the reference's multi-output mode): ``n * K`` values,
        example-major.  Inputs of different batch sizes need an aggregate forward.

        Returns:
            The objective for the rest of the call (``self``, its aggregate or
            per-output version) and this batch's values, ``(n,)``, ``(n * K,)``
            or ``(K,)`` (aggregate).

        Raises:
            ValueError: an aggregate forward with a target other than None, or inputs of different batch
                sizes for a forward that returns values per example.
        """
        ragged = any(x.shape[0] != inputs[0].shape[0] for x in inputs)
        try:
            output = self.forward(inputs)
        except (RuntimeError, IndexError) as error:
            if ragged:  # a per-example model usually fails on such inputs before it could say what it returns
                reason = f" (only a forward that returns values for the whole batch takes that: {error})"
                check_same_batch(inputs, reason)
            raise
        n, free = inputs[0].shape[0], self.target.index is None and self.target.fn is None
        if not self._aggregate(output, inputs, free):
            if ragged:
                check_same_batch(inputs, "; only a forward that returns values for the whole batch takes that")
            target, shape = self.target, None
            if free and isinstance(output, Tensor) and output.dim() > 1 and output[0].numel() > 1:
                target, shape = Target(n, name=target.name, outputs=output[0].numel()), tuple(output.shape)
            if shape is None:
                return self, target.select(output)
            return Objective(self.forward_func, target, self.additional_args, False, shape), target.select(output)
        if not free:  # (a target makes only a single value aggregate)
            raise ArgumentError(
                f"{self.target.name}: forward_func returns one value for the whole batch of {n} "
                f"({describe(output)}), so there is nothing to select; pass {self.target.name}=None"
            )
        values = _batch_values(output, inputs[0].device)
        shape = tuple(output.shape) if values.numel() > 1 else None
        target = Target(1, name=self.target.name, outputs=values.numel())
        return Objective(self.forward_func, target, self.additional_args, True, shape), values

    def _aggregate(self, output: Any, inputs: tuple[Tensor, ...], free: bool) -> bool:
        """Whether ``output`` holds values for the whole batch rather than per example (``free``: no target)."""
        if isinstance(output, numbers.Real) and not isinstance(output, Tensor):
            return True
        if not isinstance(output, Tensor):
            return False  # Target.select says what it expected
        if output.dim() == 0:
            return True
        n = inputs[0].shape[0]
        if output.numel() > 1 and not free:
            return False  # a target picks from per-example rows (and says so when they are not)
        if output.shape[0] != n:
            return True
        if n > 1:
            return False
        # One example and a (1, ...) output: per example or for the batch?  A batch of two copies tells.
        twice = self.forward(tuple(repeat_rows(x, 2) for x in inputs), repeats=2)
        return not (isinstance(twice, Tensor) and tuple(twice.shape) == (2, *output.shape[1:]))


def _batch_values(output: Any, device: torch.device, count: int | None = None) -> Tensor:
    """An aggregate forward's output as a 1-D tensor of its values (Python floats are doubles).

    Raises:
        ValueError: an output of something else, no values, or other than ``count`` values (when given).
    """
    if isinstance(output, Tensor):
        values = output.reshape(-1)
    elif isinstance(output, numbers.Real):
        dtype = torch.int64 if isinstance(output, numbers.Integral) else torch.float64
        values = torch.tensor([output], dtype=dtype, device=device)
    else:
        raise ArgumentTypeError(
            f"forward_func: returned values for the whole batch, then {describe(output)}; expected a tensor or a number"
        )
    if values.numel() == 0:
        raise ArgumentError(f"forward_func: expected at least one value, got {describe(output)}")
    if count is not None and values.numel() != count:
        raise ArgumentError(
            f"forward_func: returned {count} value(s) for the whole batch, then {describe(output)}; "
            f"it must return as many for every batch (or one row per example)"
        )
    return values


def attribution_dtype(x: Tensor, values: Tensor) -> torch.dtype:
    """The dtype of attributions to input ``x`` computed from target values of dtype ``values.dtype``.

    Differences of outputs, so at the outputs' precision when that is higher than the input's (a forward
    returning Python floats, which are doubles, gives float64 as in Captum), else the input's dtype; integer
    and bool inputs (token ids, masks) get floating attributions: the values' dtype when it is floating and
    at least float32, else float32.
    """
    if x.is_floating_point():
        return torch.promote_types(x.dtype, values.dtype) if values.is_floating_point() else x.dtype
    return torch.promote_types(values.dtype, torch.float32) if values.is_floating_point() else torch.float32


def make_objective(
    forward_func: Callable[..., Tensor], target: TargetType, additional_forward_args: Any, n: int
) -> Objective:
    """The canonical objective of one ``attribute`` call on a batch of ``n``: what the functional core takes.

    Args:
        forward_func: the model.
        target: which output to explain, in any form the classes' ``target`` takes.
        additional_forward_args: further arguments of ``forward_func`` after the inputs (None: none).
        n: the batch size (rows of the inputs).

    Raises:
        TypeError: ``forward_func`` is not callable, or ``target`` has a type no target form takes.
        ValueError: ``target`` does not fit a batch of ``n`` (e.g. a list of another length).
    """
    if not callable(forward_func):
        raise ArgumentTypeError(f"forward_func: expected a callable (e.g. an nn.Module), got {describe(forward_func)}")
    return Objective(forward_func, format_target(target, n), format_additional_args(additional_forward_args))


@dataclass(frozen=True, eq=False)
class CanonicalCall:
    """One ``attribute`` call in canonical form."""

    inputs: tuple[Tensor, ...]
    given_as_tensor: bool
    objective: Objective

    def restore(self, attributions: Sequence[Tensor]) -> TensorOrTuple:
        """Attributions in the structure the inputs were given in."""
        return restore_structure(attributions, self.given_as_tensor)


def canonical_call(
    forward_func: Callable[..., Tensor],
    inputs: TensorOrTuple,
    target: TargetType,
    additional_forward_args: Any,
    *,
    require_float: bool = False,
    allow_ragged: bool = False,
) -> CanonicalCall:
    """Validate and normalise the arguments every ``attribute`` call shares (``allow_ragged``: see
    :func:`format_inputs`)."""
    values, given_as_tensor = format_inputs(inputs, require_float=require_float, allow_ragged=allow_ragged)
    objective = make_objective(forward_func, target, additional_forward_args, values[0].shape[0])
    return CanonicalCall(values, given_as_tensor, objective)


def format_stdevs(stdevs: float | Sequence[float], n_inputs: int) -> tuple[float, ...]:
    """Noise standard deviations, one per input, each a number >= 0."""
    values = _per_input(stdevs, n_inputs, "stdevs")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v < 0:
            raise ArgumentError(f"stdevs: expected a number >= 0 (or one per input), got {stdevs!r}")
    return tuple(float(v) for v in values)


# --------------------------------------------------------------------------- targets

TargetType = Union[
    None, int, tuple[int, ...], list[int], list[tuple[int, ...]], Tensor, Callable[[Tensor], Tensor], "Target"
]


@dataclass(frozen=True, eq=False)
class Target:
    """A canonical target: picks one scalar per row from the model's output.

    Exactly one of ``index`` and ``fn`` is set, or neither (the output
    already holds one scalar per row, or ``outputs`` of them).  ``index`` is an ``(n, k)`` long
    tensor: row ``i`` selects ``output[i, *index[i]]``.
    """

    n: int
    index: Tensor | None = None
    fn: Callable[[Any], Tensor] | None = None  # from the output; for a layer of several tensors, from the tuple
    name: str = "target"  # the argument's name in error messages (e.g. "neuron_selector")
    outputs: int = 1
    """Values per example: more than 1 explains every element of each example's output (``target=None`` on
    a multi-output forward, for perturbation methods, as Captum does); they come example-major.  For a
    forward that returns values for the whole batch (``n`` is then 1), how many it returns."""

    def repeat(self, repeats: int) -> Target:
        """The same target for a batch of ``repeats`` repeat-major copies."""
        index = None if self.index is None else self.index.repeat(repeats, 1)
        return Target(self.n * repeats, index, self.fn, self.name, self.outputs)

    def select(self, output: Tensor | tuple[Tensor, ...], repeats: int = 1) -> Tensor:
        """The target scalar of every row of ``output`` (``n * repeats`` rows)."""
        rows = self.n * repeats
        if self.fn is not None and isinstance(output, tuple) and all(isinstance(o, Tensor) for o in output):
            return self._picked(self.fn(output), rows)  # a layer of several tensors: the callable picks from all
        if isinstance(output, tuple) and self.name == "neuron_selector":
            raise ArgumentError(
                f"neuron_selector: the layer gives {len(output)} tensors; pick the unit with a callable, "
                f"e.g. lambda outputs: outputs[0][:, 3]"
            )
        if not isinstance(output, Tensor):
            raise ArgumentTypeError(_not_scores_message(output))
        if output.dim() == 0 or output.shape[0] != rows:
            # Values for the whole batch that happen to number its examples read as one per example at first.
            pooled = repeats > 1 and output.dim() > 0 and output.shape[0] == self.n
            hint = "; for a forward that returns values for the whole batch pass perturbations_per_eval=1"
            raise ArgumentError(
                f"forward_func: expected an output with one row per example ({rows} rows), "
                f"got shape {tuple(output.shape)}{hint if pooled else ''}"
            )
        if self.fn is not None:
            picked = self.fn(output)
            if isinstance(picked, Tensor) and picked.numel() == 1 and picked.shape != (rows,):
                # One value for the whole batch (Captum allows it, e.g. ``lambda x: x.sum()``): the callable
                # is applied to every row alone, so each example gets its own value and gradient.
                picked = torch.stack([self.fn(output[r : r + 1]).reshape(()) for r in range(rows)])
            return self._picked(picked, rows)
        if self.outputs > 1 and output[0].numel() == self.outputs:
            return output.reshape(rows * self.outputs)
        if self.index is None:
            if output[0].numel() != 1:
                raise ArgumentError(
                    f"{self.name}: None needs one output value per example, but the output has shape "
                    f"{tuple(output.shape)}; pass target=<class index> or a callable"
                )
            return output.reshape(rows)
        return self._gather(self.index, output, repeats)

    def _picked(self, picked: Any, rows: int) -> Tensor:
        if isinstance(picked, Tensor) and picked.dim() > 1 and picked.shape[0] == rows and picked[0].numel() == 1:
            picked = picked.reshape(rows)  # one value per row with trailing dimensions of size 1: x[:, 0:1]
        if not isinstance(picked, Tensor) or picked.shape != (rows,):
            raise ArgumentError(
                f"{self.name}: the callable must return a tensor of shape ({rows},), got {describe(picked)}"
            )
        return picked

    def _gather(self, index: Tensor, output: Tensor, repeats: int) -> Tensor:
        """Each row's value at ``index`` (this target's ``index``), for ``repeats`` copies of the batch."""
        k = index.shape[1]
        if output.dim() - 1 > k and all(size == 1 for size in output.shape[1 + k :]):
            output = output.reshape(output.shape[: 1 + k])  # trailing dimensions of size 1 (N, C, 1): as (N, C)
        dims = output.shape[1:]
        if len(dims) != k:
            raise ArgumentError(
                f"{self.name}: selects {k} output dimension(s) but the output has shape {tuple(output.shape)}; "
                f"a target must pick exactly one value per example (use a tuple index or a callable)"
            )
        upper = index.max(dim=0).values.tolist()
        for d, (largest, size) in enumerate(zip(upper, dims)):
            if largest >= size:
                raise ArgumentError(
                    f"{self.name}: index {largest} is out of range for output dimension {d + 1} of size {size} "
                    f"(output shape {tuple(output.shape)})"
                )
        index = index.to(output.device)
        strides = torch.tensor([math.prod(dims[d + 1 :]) for d in range(k)], device=output.device)
        flat_index = (index * strides).sum(dim=1).repeat(repeats)
        return output.reshape(output.shape[0], -1).gather(1, flat_index[:, None]).squeeze(1)


def _not_scores_message(output: Any) -> str:
    """Why a non-tensor output cannot be explained; for the structured outputs models return (a dict, a
    Hugging Face ``ModelOutput``, a tuple), how to turn it into class scores."""
    if isinstance(output, Mapping):  # ModelOutput is a dict too: name its keys, not its tensors
        given = f"a {type(output).__name__} with keys {list(output)[:8]}"
    elif isinstance(output, (tuple, list)) or hasattr(output, "logits"):
        given = f"a {type(output).__name__}"
    else:
        return f"forward_func: expected it to return a tensor, got {describe(output)}"
    return (
        f"forward_func: expected it to return a tensor of scores (N, C), got {given}; wrap the model in "
        f'attribution.outputs.ModelScores, which takes the scores from a dict ("logits", then "out"), a '
        f"Hugging Face ModelOutput (.logits) or a tuple (scores first), e.g. "
        f"IntegratedGradients(ModelScores(model)).attribute(x, target=1)"
    )


def format_target(target: TargetType, n: int, name: str = "target") -> Target:
    """Turn any accepted ``target`` form into a :class:`Target` for a batch of ``n``.

    ``name`` is the argument's name in error messages (neuron methods pass ``"neuron_selector"``).
    """
    if isinstance(target, Target):
        if target.n != n:
            raise ArgumentError(f"{name}: built for {target.n} examples, the batch has {n}")
        return target
    if target is None:
        return Target(n, name=name)
    if callable(target) and not isinstance(target, Tensor):
        return Target(n, fn=target, name=name)
    if isinstance(target, Tensor):
        if target.numel() == 1:
            target = int(target.item())
        elif target.dim() == 1:
            return Target(n, index=_index_rows(target.tolist(), n, name), name=name)
        else:
            raise ArgumentError(
                f"{name}: a tensor must be a scalar or have one entry per example, got shape {tuple(target.shape)}"
            )
    if isinstance(target, bool):
        raise ArgumentTypeError(f"{name}: expected an int, tuple, list, tensor or callable, got {describe(target)}")
    if isinstance(target, numbers.Integral):
        return Target(n, index=_index_rows([int(target)], n, name).expand(n, 1), name=name)
    if isinstance(target, tuple):
        return Target(n, index=_index_rows([target], n, name).expand(n, len(target)), name=name)
    if isinstance(target, list):
        if len(target) != n:
            raise ArgumentError(f"{name}: a list needs one entry per example ({n}), got {len(target)} entries")
        return Target(n, index=_index_rows(target, n, name), name=name)
    raise ArgumentTypeError(f"{name}: expected an int, tuple, list, tensor or callable, got {describe(target)}")


def _index_rows(entries: Sequence[int | tuple[int, ...]], n: int, name: str = "target") -> Tensor:
    """Per-example index rows from ints or tuples of ints, validated."""
    if len(entries) not in (1, n):
        raise ArgumentError(f"{name}: expected one entry per example ({n}), got {len(entries)}")
    rows = [tuple(e) if isinstance(e, (tuple, list)) else (e,) for e in entries]
    if len({len(r) for r in rows}) != 1:
        raise ArgumentError(f"{name}: every per-example entry must index the same number of output dimensions")
    for r in rows:
        for v in r:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ArgumentTypeError(f"{name}: indices must be ints, got {describe(v)}")
            if v < 0:
                raise ArgumentError(f"{name}: indices must be non-negative, got {v}")
    return torch.tensor(rows, dtype=torch.long)
