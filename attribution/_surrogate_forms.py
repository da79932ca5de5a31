"""The surrogate methods' user functions in their two forms: batched, or Captum's per-sample ones.

:func:`function_form` tells which form a function takes; the adapters below turn either into the batched
callables the core runs, on copies ``(P, *x.shape)`` and samples ``(P, rows, F)``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import numbers
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from attribution._canonical import TensorOrTuple, describe
from attribution._checks import ArgumentError, ArgumentTypeError

Weigh = Callable[[tuple[Tensor, ...], Tensor], Tensor]
"""``weigh(copies (each (P, *x.shape)), design (P, rows, F)) -> weights (P, rows)``."""

BATCHED = "batched"
PER_SAMPLE = "per_sample"
_FORM = "__surrogate_form__"


def _marked(func: Callable[..., Any], form: str) -> Callable[..., Any]:
    if not callable(func):
        raise ArgumentTypeError(f"func: expected a callable to mark as {form}, got {describe(func)}")

    @functools.wraps(func)
    def marked(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    setattr(marked, _FORM, form)  # on a wrapper: the caller's function stays as it was
    return marked


def batched(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` marked as taking the batched form: every copy of every example in one call."""
    return _marked(func, BATCHED)


def per_sample(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` marked as taking Captum's per-sample form: one copy of one example per call."""
    return _marked(func, PER_SAMPLE)


def function_form(func: Callable[..., Any], default: str) -> str:
    """Which form ``func`` takes: the one it was marked with (:func:`batched`, :func:`per_sample`); else
    per-sample for a generator function or one that accepts ``**kwargs`` (Captum passes keyword arguments
    to such functions, so a Captum-style one accepts them); else ``default``."""
    marked = getattr(func, _FORM, None)
    if marked is not None:
        return marked
    if inspect.isgeneratorfunction(inspect.unwrap(func)):
        return PER_SAMPLE
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return default
    return PER_SAMPLE if any(p.kind is p.VAR_KEYWORD for p in parameters) else default


@dataclass(frozen=True)
class Examples:
    """The examples of one ``attribute`` call as the user's functions see them.

    ``rows`` examples get a surrogate each: every example of the batch, or the whole batch as one for a
    forward that returns one value per batch (``aggregate``).  Batched functions see the inputs as given
    and ``batched_kwargs``; per-sample ones see example ``r`` (``x[r:r+1]``, the whole batch when aggregate)
    and ``sample_kwargs`` with tensors of ``n`` rows cut to row ``r``, as Captum's Lime cuts its arguments.
    """

    inputs: tuple[Tensor, ...]
    as_tensor: bool
    aggregate: bool
    batched_kwargs: dict[str, Any] = field(default_factory=dict)
    sample_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return 1 if self.aggregate else self.inputs[0].shape[0]

    @property
    def given(self) -> TensorOrTuple:  # the inputs as the user gave them
        return self.restore(self.inputs)

    def restore(self, values: Sequence[Tensor]) -> TensorOrTuple:
        return values[0] if self.as_tensor else tuple(values)

    def view(self, batch: tuple[Tensor, ...], dim: int) -> TensorOrTuple:
        """As batched functions see it: a batch explained as one example gets a dim of 1 at ``dim``."""
        return self.restore([b.unsqueeze(dim) if self.aggregate else b for b in batch])

    def example(self, r: int, batch: tuple[Tensor, ...] | None = None) -> TensorOrTuple:
        """Example ``r`` of ``batch`` (default: of the inputs)."""
        return self.restore([b if self.aggregate else b[r : r + 1] for b in batch or self.inputs])

    def kwargs(self, r: int) -> dict[str, Any]:
        """``sample_kwargs`` for example ``r``."""
        n = self.inputs[0].shape[0]

        def cut(value: Any) -> Any:
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
                return value[r : r + 1]
            return type(value)(cut(v) for v in value) if isinstance(value, (tuple, list)) else value

        return self.sample_kwargs if self.rows == 1 else {key: cut(v) for key, v in self.sample_kwargs.items()}

    def each(self, count: int, call: Callable[[int, int], Any]) -> list[list[Any]]:
        """``call(p, r)`` for copy ``p`` of every example ``r``, as ``[r][p]``."""
        return [[call(p, r) for p in range(count)] for r in range(self.rows)]

    def copy(self, value: Any, r: int, name: str) -> tuple[Tensor, ...]:
        """A per-sample function's copy of example ``r``, checked against the example's shapes."""
        parts = (value,) if isinstance(value, Tensor) else value
        wanted = [tuple(x.shape) if self.aggregate else (1, *x.shape[1:]) for x in self.inputs]
        if not isinstance(parts, (tuple, list)) or [tuple(getattr(p, "shape", ())) for p in parts] != wanted:
            raise ArgumentError(f"{name}: expected a copy of the example, shaped {wanted}, got {describe(value)}")
        return tuple(p.to(x.device) for p, x in zip(parts, self.inputs))

    def stacked(self, value: Any, count: int, name: str) -> tuple[Tensor, ...]:
        """A batched function's ``count`` copies of the batch as ``(count, *x.shape)`` tensors."""
        parts = (value,) if isinstance(value, Tensor) else value
        if (
            not isinstance(parts, (tuple, list))
            or len(parts) != len(self.inputs)
            or any(not isinstance(p, Tensor) or p.numel() != count * x.numel() for p, x in zip(parts, self.inputs))
        ):
            wanted = [(count, *x.shape) for x in self.inputs]
            raise ArgumentError(f"{name}: expected {count} copies of the inputs, {wanted}, got {describe(value)}")
        return tuple(p.reshape(count, *x.shape).to(x.device) for p, x in zip(parts, self.inputs))

    def assemble(self, per_row: list[list[tuple[Tensor, ...]]]) -> tuple[Tensor, ...]:
        """Copies of single examples (``[r][p]``) as copies of the batch, ``(P, *x.shape)``."""
        count = len(per_row[0])
        return tuple(
            torch.stack([torch.cat([row[p][i] for row in per_row]) for p in range(count)])
            if count
            else x.new_empty(0, *x.shape)
            for i, x in enumerate(self.inputs)
        )

    def design(self, per_row: list[list[Any]], count: int | None, name: str) -> Tensor:
        """Per-sample interpretable samples (``[r][p]``, each ``(1, F)``) as ``(P, rows, F)``; ``count`` is
        ``F`` when known."""
        for value in itertools.chain.from_iterable(per_row):
            count = _checked_design(value, (count,) if count is not None else None, name).numel()
        rows = [torch.stack([v.reshape(-1) for v in row]) if row else torch.zeros(0, count or 0) for row in per_row]
        return torch.stack(rows, dim=1).to(self.inputs[0].device)


def _checked_design(value: Any, shape: tuple[int, ...] | None, name: str) -> Tensor:
    """Interpretable samples: batched ``(P, rows, F)`` with ``shape`` its leading sizes; per-sample
    (``shape`` of one entry or None) one sample of ``F`` values."""
    if isinstance(value, Tensor):
        if shape is None or (len(shape) == 1 and value.numel() == shape[0]):
            return value
        if len(shape) > 1 and value.dim() == 3 and tuple(value.shape[: len(shape)]) == shape:
            return value
    if shape is None or len(shape) == 1:
        wanted = f"(1, {'num_interp_features' if shape is None else shape[0]})"
    else:
        wanted = f"({', '.join(map(str, shape))}, ...)"
    raise ArgumentError(f"{name}: expected interpretable samples of shape {wanted}, got {describe(value)}")


def _draws(func: Callable[..., Any], examples: Examples, n_samples: int) -> list[list[Any]]:
    """``n_samples`` per-sample draws for every example (``[r][p]``); a generator is drawn from (as in
    Captum), and when one ends early every example keeps as many draws as the shortest."""
    draws = []
    for r in range(examples.rows):
        example, kwargs = examples.example(r), examples.kwargs(r)
        first = func(example, **kwargs)
        if isinstance(first, Iterator):
            draws.append(list(itertools.islice(first, n_samples)))
        else:
            draws.append([first] + [func(example, **kwargs) for _ in range(n_samples - 1)])
    shortest = min(len(d) for d in draws)
    if shortest < n_samples:
        warnings.warn(f"perturb_func: the generator ended after {shortest} of n_samples={n_samples}", stacklevel=3)
    return [d[:shortest] for d in draws]


def draw_design(
    func: Callable[..., Any], form: str, examples: Examples, n_samples: int, count: int | None = None
) -> Tensor:
    """Interpretable samples ``(S, rows, F)`` from a perturbation function in the interpretable space:
    batched ``func(inputs, n_samples, **kwargs) -> (n_samples, rows, F)``, or per-sample ``func(example,
    **kwargs) -> (1, F)`` (or a generator of those).  ``count`` is ``F`` when known."""
    if form == BATCHED:
        value = func(examples.given, n_samples, **examples.batched_kwargs)
        shape = (n_samples, examples.rows) + (() if count is None else (count,))
        return _checked_design(value, shape, "perturb_func").to(examples.inputs[0].device)
    return examples.design(_draws(func, examples, n_samples), count, "perturb_func")


def draw_copies(func: Callable[..., Any], form: str, examples: Examples, n_samples: int) -> tuple[Tensor, ...]:
    """Copies of the batch, each ``(S, *x.shape)``, from a perturbation function in the input space: batched
    ``func(inputs, n_samples, **kwargs)``, or per-sample ``func(example, **kwargs)`` (or a generator)."""
    if form == BATCHED:
        return examples.stacked(func(examples.given, n_samples, **examples.batched_kwargs), n_samples, "perturb_func")
    draws = _draws(func, examples, n_samples)
    return examples.assemble([[examples.copy(d, r, "perturb_func") for d in row] for r, row in enumerate(draws)])


def from_interpretable(func: Callable[..., Any], form: str, examples: Examples) -> Callable[[Tensor], tuple]:
    """``design (P, rows, F) -> copies`` by ``from_interp_rep_transform``: batched ``func(design, inputs,
    **kwargs)``, or per-sample ``func(sample (1, F), example, **kwargs)`` giving one copy of the example."""
    name = "from_interp_rep_transform"

    def transform(design: Tensor) -> tuple[Tensor, ...]:
        if form == BATCHED:
            return examples.stacked(func(design, examples.given, **examples.batched_kwargs), design.shape[0], name)
        return examples.assemble(
            examples.each(
                design.shape[0],
                lambda p, r: examples.copy(
                    func(design[p, r][None], examples.example(r), **examples.kwargs(r)), r, name
                ),
            )
        )

    return transform


def to_interpretable(func: Callable[..., Any], form: str, examples: Examples) -> Callable[[tuple], Tensor]:
    """``copies -> design (P, rows, F)`` by ``to_interp_rep_transform``: batched ``func(copies, inputs,
    **kwargs)``, or per-sample ``func(copy of example r, example r, **kwargs) -> (1, F)``."""
    name = "to_interp_rep_transform"
    width: list[int] = []  # F, once the first chunk has told it

    def transform(copies: tuple[Tensor, ...]) -> Tensor:
        count = copies[0].shape[0]
        if form == BATCHED:
            value = func(examples.restore(copies), examples.given, **examples.batched_kwargs)
            design = _checked_design(value, (count, examples.rows, *width), name).to(examples.inputs[0].device)
        else:
            per_row = examples.each(
                count,
                lambda p, r: func(
                    examples.example(r, tuple(c[p] for c in copies)), examples.example(r), **examples.kwargs(r)
                ),
            )
            design = examples.design(per_row, width[0] if width else None, name)
        width[:] = [design.shape[-1]]
        return design

    return transform


def similarity_weights(func: Callable[..., Any], form: str, examples: Examples) -> Weigh:
    """Sample weights ``(P, rows)`` by ``similarity_func``: batched ``func(inputs, perturbed (P, ...),
    design (P, rows, F), **kwargs) -> (P, rows)``, or per-sample ``func(example, copy of the example,
    sample (1, F), **kwargs) -> a number``."""
    name = "similarity_func"

    def weigh(copies: tuple[Tensor, ...], design: Tensor) -> Tensor:
        count = design.shape[0]
        if form == BATCHED:
            weights = func(
                examples.view(examples.inputs, 0), examples.view(copies, 1), design, **examples.batched_kwargs
            )
            if not isinstance(weights, Tensor) or weights.shape != (count, examples.rows):
                raise ArgumentError(
                    f"{name}: expected weights of shape ({count}, {examples.rows}) (copies, examples), "
                    f"got {describe(weights)}"
                )
            return weights
        per_row = examples.each(
            count,
            lambda p, r: func(
                examples.example(r),
                examples.example(r, tuple(c[p] for c in copies)),
                design[p, r][None],
                **examples.kwargs(r),
            ),
        )
        for value in itertools.chain.from_iterable(per_row):
            if not isinstance(value, (numbers.Real, Tensor)) or (isinstance(value, Tensor) and value.numel() != 1):
                raise ArgumentError(f"{name}: expected a number (one weight per sample), got {describe(value)}")
        return torch.tensor([[float(v) for v in row] for row in per_row], device=examples.inputs[0].device).t()

    return weigh
