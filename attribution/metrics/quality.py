"""Metrics of explanation quality: ``infidelity`` and ``sensitivity_max`` (Yeh et al., 2019).

Names, signatures and defaults follow the reference implementation.  Both
functions draw every perturbation up front with one call of ``perturb_func``
on ``n_perturb_samples`` stacked copies of the batch (example-major, as the
reference stacks them: row ``i * S + s`` is sample ``s`` of example ``i``),
then evaluate the copies in as few calls as ``max_examples_per_batch``
allows, so that chunking never changes the result.  Random draws come from
torch's global generator: seed it with ``torch.manual_seed``, and the draws
are the reference's when it too draws everything in one call (its default
``max_examples_per_batch=None``; with a smaller one it calls ``perturb_func``
once per chunk, so its draws depend on the chunking and ours do not).

The public functions come first; below them, their core on canonical tuples: :func:`output_changes` and
:func:`infidelity_of`, :func:`sensitivity_of`.  The copies arrive stacked example-major, already drawn,
so the result does not depend on how the work is split into forwards: ``samples_per_forward`` only
bounds memory (and, on CPU, keeps each forward's tensors small enough to reuse freed memory).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, overload

import torch
from torch import Tensor

from attribution._internal import canonical as canon
from attribution._internal.canonical import BaselineType, Objective, TargetType, TensorOrTuple
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution._internal.chunking import (
    CPU_LARGEST_TENSOR_BYTES,
    balanced_chunks,
    known_width,
    largest_output,
    remember_width,
    watchable_modules,
)
from attribution.functional.perturbation import auto_perturbations_per_eval

PerturbFunc = Callable[..., Any]
PAIR = ("perturbations", "perturbed inputs")


def default_perturb_func(inputs: TensorOrTuple, perturb_radius: float = 0.02) -> TensorOrTuple:
    """``inputs`` plus noise drawn uniformly from the L-inf ball of ``perturb_radius``.

    The noise has each input's dtype and device (the reference draws float32
    on the CPU, which turns half-precision inputs into float32 ones).
    """
    values, given_as_tensor = canon.format_inputs(inputs)
    noisy = tuple(x + torch.empty_like(x).uniform_(-perturb_radius, perturb_radius) for x in values)
    return canon.restore_structure(noisy, given_as_tensor)


def default_infidelity_perturb_func(
    inputs: TensorOrTuple, baselines: BaselineType = None, *, stdev: float = 0.003
) -> tuple[TensorOrTuple, TensorOrTuple]:
    """Gaussian perturbations for :func:`infidelity`: ``(I, inputs - I)`` with ``I ~ N(0, stdev^2)``.

    The noise of the reference's documentation example, for local (gradient)
    attributions; ``baselines`` is ignored.  Use ``functools.partial`` to
    change ``stdev``.
    """
    values, given_as_tensor = canon.format_inputs(inputs)
    noise = tuple(stdev * torch.randn_like(x) for x in values)
    perturbed = tuple(x - i for x, i in zip(values, noise))
    return canon.restore_structure(noise, given_as_tensor), canon.restore_structure(perturbed, given_as_tensor)


def infidelity_perturb_func_decorator(multiply_by_inputs: bool = True) -> Callable[[PerturbFunc], PerturbFunc]:
    """Turn a ``perturb_func`` that returns only perturbed inputs into one that also returns ``I``.

    ``I = (x - x') / (x - baseline)`` (0 baselines when None; a zero divisor
    counts as 1) when ``multiply_by_inputs``, for global attributions such as
    InputXGradient or IntegratedGradients; ``I = x - x'`` otherwise, for local
    ones such as Saliency.

    Example:
        >>> import torch
        >>> from attribution.metrics import infidelity_perturb_func_decorator
        >>> @infidelity_perturb_func_decorator(multiply_by_inputs=False)
        ... def perturb(inputs):
        ...     return inputs - 0.003 * torch.randn_like(inputs)
        >>> x = torch.rand(2, 4)
        >>> perturbations, perturbed = perturb(x)
        >>> torch.allclose(perturbations, x - perturbed)  # I = x - x'
        True
    """

    def decorate(perturb_func: PerturbFunc) -> PerturbFunc:
        @functools.wraps(perturb_func)
        def with_perturbations(
            inputs: TensorOrTuple, baselines: BaselineType = None
        ) -> tuple[TensorOrTuple, TensorOrTuple]:
            perturbed = perturb_func(inputs) if baselines is None else perturb_func(inputs, baselines)
            values, given_as_tensor = canon.format_inputs(inputs)
            perturbed = _like(perturbed, values, "perturb_func (perturbed inputs)")
            diffs = tuple(x - p for x, p in zip(values, perturbed))
            if multiply_by_inputs:
                spans = tuple(x - b for x, b in zip(values, canon.format_baselines(baselines, values)))
                diffs = tuple(d / torch.where(s == 0, torch.ones_like(s), s) for d, s in zip(diffs, spans))
            return canon.restore_structure(diffs, given_as_tensor), canon.restore_structure(perturbed, given_as_tensor)

        return with_perturbations

    return decorate


@overload
def infidelity(
    forward_func: Callable[..., Tensor],
    perturb_func: PerturbFunc,
    inputs: TensorOrTuple,
    attributions: TensorOrTuple,
    baselines: BaselineType = ...,
    additional_forward_args: Any = ...,
    target: TargetType = ...,
    n_perturb_samples: int = ...,
    max_examples_per_batch: int | None = ...,
    normalize: bool = ...,
) -> Tensor: ...


@overload
def infidelity(
    forward_func: Callable[..., Tensor],
    perturb_func: PerturbFunc,
    inputs: TensorOrTuple,
    attributions: Mapping[str, TensorOrTuple],
    baselines: BaselineType = ...,
    additional_forward_args: Any = ...,
    target: TargetType = ...,
    n_perturb_samples: int = ...,
    max_examples_per_batch: int | None = ...,
    normalize: bool = ...,
) -> dict[str, Tensor]: ...


def infidelity(
    forward_func: Callable[..., Tensor],
    perturb_func: PerturbFunc,
    inputs: TensorOrTuple,
    attributions: TensorOrTuple | Mapping[str, TensorOrTuple],
    baselines: BaselineType = None,
    additional_forward_args: Any = None,
    target: TargetType = None,
    n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None,
    normalize: bool = False,
) -> Tensor | dict[str, Tensor]:
    """Explanation infidelity: ``E_I[(I·attr - (f(x) - f(x - I)))^2]`` per example.

    Args:
        forward_func: the model.
        perturb_func: ``perturb_func(inputs)``, or ``perturb_func(inputs,
            baselines)`` when baselines are given, returning ``(perturbations,
            perturbed_inputs)`` in the structure of ``inputs``.  It is called
            once, on ``n_perturb_samples`` copies of each example stacked
            example-major (per-example baselines are stacked the same way;
            others arrive as tensors that broadcast).  Decorate a function
            that returns only perturbed inputs with
            :func:`infidelity_perturb_func_decorator`.
        inputs: a tensor or tuple of tensors with the batch in dim 0.
        attributions: shaped like ``inputs``; or several explanations of the same inputs and target by
            name (``{"saliency": a, "occlusion": b}``), scored on the same perturbations with the forwards
            done once (a paired comparison, at the cost of one).
        baselines: passed on to ``perturb_func`` (see :class:`~attribution.IntegratedGradients`).
        additional_forward_args: extra arguments passed to the model.
        target: which output to explain (see :meth:`~attribution.Saliency.attribute`).
        n_perturb_samples: perturbations per example (>= 1).
        max_examples_per_batch: rows per forward (at least one copy of the
            batch); None sizes the forwards for the device.
        normalize: scale the attributions by the least-squares factor first,
            making the score invariant to scaling the attributions.

    Returns:
        A tensor of shape ``(N,)``; for a mapping of attributions, a dict of them by the same names.

    Raises:
        TypeError: a non-callable ``forward_func``/``perturb_func`` or a
            malformed ``perturb_func`` result.
        ValueError: bad counts, attributions or perturbations not shaped like
            the inputs, or a bad target.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import IntegratedGradients, Saliency
        >>> from attribution.metrics import default_infidelity_perturb_func, infidelity
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> x = torch.rand(2, 3, 8, 8)
        >>> attr = Saliency(model).attribute(x, target=2, abs=False)
        >>> infidelity(model, default_infidelity_perturb_func, x, attr, target=2).shape
        torch.Size([2])
        >>> both = {"saliency": attr, "ig": IntegratedGradients(model).attribute(x, target=2)}
        >>> scores = infidelity(model, default_infidelity_perturb_func, x, both, target=2)  # same perturbations
        >>> sorted(scores)
        ['ig', 'saliency']
    """
    check_int(n_perturb_samples, "n_perturb_samples")
    check_int(max_examples_per_batch, "max_examples_per_batch", allow_none=True)
    _check_callable(perturb_func, "perturb_func")
    call = canon.canonical_call(forward_func, inputs, target, additional_forward_args)
    named = isinstance(attributions, Mapping)
    given = attributions.items() if isinstance(attributions, Mapping) else [("", attributions)]
    explanations = {
        name: _like(value, call.inputs, f"attributions[{name!r}]" if named else "attributions") for name, value in given
    }
    with torch.no_grad():
        stacked = _stack(call.inputs, n_perturb_samples)
        args = [call.restore(stacked)]
        if baselines is not None:  # per-example baselines are stacked like the inputs, the others broadcast
            formatted = canon.format_baselines(baselines, call.inputs)
            args.append(call.restore([_stack((b,), n_perturb_samples)[0] if b.shape[0] > 1 else b for b in formatted]))
        perturbations, perturbed = _perturbations(perturb_func(*args), stacked)
        per_forward = _samples_per_forward(max_examples_per_batch, call.inputs[0].shape[0])
        inputs_now = tuple(x.detach() for x in call.inputs)
        changes = output_changes(call.objective, inputs_now, perturbed, n_perturb_samples, per_forward)
        scores = {
            name: infidelity_of(tuple(a.detach() for a in attrs), perturbations, changes, normalize)
            for name, attrs in explanations.items()
        }
    return scores if named else scores[""]


def sensitivity_max(
    explanation_func: Callable[..., TensorOrTuple],
    inputs: TensorOrTuple,
    perturb_func: PerturbFunc = default_perturb_func,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str | float = "fro",
    max_examples_per_batch: int | None = None,
    *,
    explanations: TensorOrTuple | None = None,
    **kwargs: Any,
) -> Tensor:
    """Max-sensitivity: ``max_s ||e(x + d_s) - e(x)|| / ||e(x)||`` per example.

    Args:
        explanation_func: returns explanations shaped like its inputs, usually
            a bound ``attribute`` method (e.g. ``Saliency(model).attribute``);
            called on ``inputs`` (unless ``explanations`` are given), then on
            the perturbed copies of them.
        inputs: a tensor or tuple of tensors with the batch in dim 0.
        perturb_func: returns perturbed inputs in the structure of ``inputs``;
            called once on ``n_perturb_samples`` copies of each example
            stacked example-major, with ``perturb_radius`` as second argument
            if it takes two or more.  The default adds uniform noise from the
            L-inf ball.
        perturb_radius: radius of the perturbation ball, a finite number > 0.
        n_perturb_samples: perturbations per example (>= 1).
        norm_ord: ``"fro"`` (the 2-norm of all inputs' explanations together)
            or a vector norm order such as ``1`` or ``float("inf")``.
        max_examples_per_batch: rows per ``explanation_func`` call (at least
            one copy of the batch); None explains every copy in one call.
        explanations: ``explanation_func(inputs, **kwargs)`` if you already
            have it (e.g. the attributions you are scoring): saves that call.
            Not passed to ``explanation_func``.
        **kwargs: passed to ``explanation_func``; per-example ``target``
            lists and tensors, ``baselines`` with one row per example and
            tensor ``additional_forward_args`` are stacked like the inputs.

    Returns:
        A tensor of shape ``(N,)``; an explanation of norm 0 gets the absolute change.

    Raises:
        TypeError: a non-callable function or a malformed result.
        ValueError: bad counts, a ``perturb_radius`` that is not a finite number > 0, an unknown
            ``norm_ord``, or perturbed inputs or explanations not shaped like the inputs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import Saliency
        >>> from attribution.metrics import sensitivity_max
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> x, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 2])
        >>> sensitivity_max(Saliency(model).attribute, x, target=labels).shape
        torch.Size([2])
        >>> linear = nn.Linear(4, 3)  # its saliency is the same everywhere
        >>> sensitivity_max(Saliency(linear).attribute, torch.rand(2, 4), target=0)
        tensor([0., 0.])
    """
    _check_callable(explanation_func, "explanation_func")
    _check_callable(perturb_func, "perturb_func")
    _check_radius(perturb_radius)
    check_int(n_perturb_samples, "n_perturb_samples")
    check_int(max_examples_per_batch, "max_examples_per_batch", allow_none=True)
    if isinstance(norm_ord, bool) or not (norm_ord == "fro" or isinstance(norm_ord, numbers.Real)):
        raise ArgumentError(
            f"norm_ord: expected 'fro' or a number (vector norm order such as 1, 2 or float('inf')), "
            f"got {norm_ord!r}; explanations are flattened per example, so matrix norms like 'nuc' do not apply"
        )
    values, given_as_tensor = canon.format_inputs(inputs)
    n = values[0].shape[0]
    explain = _Explainer(explanation_func, given_as_tensor, n, kwargs)
    # e(x) first, then the draws, in the reference's order: a random explanation_func (SmoothGrad) then gets
    # the same draws as there.
    reference = explain(values, 1) if explanations is None else explain.given(explanations)
    with torch.no_grad():
        stacked = _stack(values, n_perturb_samples)
        arg = canon.restore_structure(stacked, given_as_tensor)
        perturbed = perturb_func(arg, perturb_radius) if _takes_two(perturb_func) else perturb_func(arg)
    perturbed = _like(perturbed, stacked, "perturb_func (perturbed inputs)")
    return sensitivity_of(
        explain,
        values,
        perturbed,
        n_samples=n_perturb_samples,
        norm_ord=norm_ord,
        samples_per_forward=_samples_per_forward(max_examples_per_batch, n),
        explanations=reference,
    )


@dataclass
class _Explainer:
    """``explanation_func`` in canonical form: stacked copies in, a checked tuple out."""

    explanation_func: Callable[..., TensorOrTuple]
    given_as_tensor: bool
    n: int
    kwargs: dict[str, Any]
    row_shapes: list[torch.Size] | None = None
    expanded: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __call__(self, rows: tuple[Tensor, ...], repeats: int) -> tuple[Tensor, ...]:
        if repeats not in self.expanded:  # per-example arguments, stacked like the copies of the batch
            self.expanded[repeats] = {key: _stack_kwarg(key, v, self.n, repeats) for key, v in self.kwargs.items()}
        with torch.no_grad():
            out = self.explanation_func(canon.restore_structure(rows, self.given_as_tensor), **self.expanded[repeats])
        return self._checked(out, repeats, "explanation_func")

    def given(self, explanations: Any) -> tuple[Tensor, ...]:
        """The caller's explanations of the unperturbed inputs, checked like the function's own."""
        return self._checked(explanations, 1, "explanations")

    def _checked(self, out: Any, repeats: int, name: str) -> tuple[Tensor, ...]:
        out = (out,) if isinstance(out, Tensor) else out
        if not isinstance(out, (tuple, list)) or not all(isinstance(e, Tensor) for e in out):
            raise ArgumentTypeError(f"{name}: expected a tensor or a tuple of tensors, got {canon.describe(out)}")
        shapes = [e.shape[1:] for e in out]
        if any(e.dim() == 0 or e.shape[0] != repeats * self.n for e in out) or self.row_shapes not in (None, shapes):
            got = [tuple(e.shape) for e in out]
            raise ArgumentError(
                f"{name}: expected explanations with {repeats * self.n} rows each, shaped alike "
                f"for the inputs and their perturbed copies; got shapes {got}"
            )
        self.row_shapes = shapes
        return tuple(e.detach() for e in out)


def _stack_kwarg(key: str, value: Any, n: int, repeats: int) -> Any:
    """``value`` stacked example-major ``repeats`` times if it is per-example (as the reference does for these
    three keys)."""
    if key == "target":
        if isinstance(value, list):
            return [t for t in value for _ in range(repeats)]
        if isinstance(value, canon.Target):
            index = None if value.index is None else value.index.repeat_interleave(repeats, dim=0)
            return replace(value, n=value.n * repeats, index=index)
        if isinstance(value, Tensor) and value.numel() > 1:
            return _interleave(value, repeats)
    elif key == "additional_forward_args":
        if isinstance(value, tuple):
            return tuple(_interleave(v, repeats) for v in value)
        return _interleave(value, repeats)
    elif key == "baselines":
        if isinstance(value, tuple):
            return tuple(_stack_kwarg(key, v, n, repeats) for v in value)
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n > 1:
            return _interleave(value, repeats)
    return value


def _interleave(value: Any, repeats: int) -> Any:
    """A batched tensor with each row repeated ``repeats`` times in place (example-major); other values as
    they are."""
    if repeats == 1 or not isinstance(value, Tensor) or value.dim() == 0:
        return value
    return value.repeat_interleave(repeats, dim=0)


def _stack(values: tuple[Tensor, ...], copies: int) -> tuple[Tensor, ...]:
    """``copies`` detached copies of each example stacked example-major along dim 0 (the reference's order)."""
    return tuple(x.detach().repeat_interleave(copies, dim=0) for x in values)


def _perturbations(result: Any, stacked: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """An infidelity ``perturb_func``'s ``(perturbations, perturbed_inputs)``, checked against the copies."""
    pair = isinstance(result, (tuple, list)) and len(result) == 2
    if not pair or (len(stacked) > 1 and all(isinstance(r, Tensor) for r in result)):
        raise ArgumentTypeError(
            f"perturb_func: expected it to return (perturbations, perturbed_inputs), got {canon.describe(result)}; "
            "decorate a function that returns only perturbed inputs with infidelity_perturb_func_decorator"
        )
    perturbations, perturbed = (_like(r, stacked, f"perturb_func ({what})") for r, what in zip(result, PAIR))
    return perturbations, perturbed


def _like(value: Any, reference: tuple[Tensor, ...], name: str) -> tuple[Tensor, ...]:
    """``value`` as a tuple of tensors shaped like ``reference``, or an error naming ``name``."""
    values = (value,) if isinstance(value, Tensor) else value
    if not isinstance(values, (tuple, list)) or not all(isinstance(v, Tensor) for v in values):
        raise ArgumentTypeError(f"{name}: expected a tensor or a tuple of tensors, got {canon.describe(value)}")
    if len(values) != len(reference):
        raise ArgumentError(f"{name}: expected {len(reference)} tensor(s), one per input, got {len(values)}")
    for i, (v, r) in enumerate(zip(values, reference)):
        if v.shape != r.shape:
            raise ArgumentError(f"{name}: expected [{i}] of shape {tuple(r.shape)}, got {tuple(v.shape)}")
    return tuple(values)


def _check_radius(radius: Any) -> None:
    """Raise unless ``radius`` is a finite real number > 0, or a 0-dim tensor of one (checked before any draw:
    torch's ``uniform_`` would fail on it with a message that does not name the argument)."""
    number = radius
    if isinstance(radius, Tensor) and radius.dim() == 0 and radius.is_floating_point():
        number = float(radius)
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not 0 < float(number) < math.inf:
        raise ArgumentError(
            f"perturb_radius: expected a finite number > 0 (the radius of the perturbation ball), "
            f"got {canon.describe(radius)}{f' holding {number}' if number is not radius else ''}"
        )


def _check_callable(func: Any, name: str) -> None:
    if not callable(func):  # fail before any work, naming the argument
        raise ArgumentTypeError(f"{name}: expected a callable, got {canon.describe(func)}")


def _takes_two(func: Callable[..., Any]) -> bool:
    """Whether ``func`` declares a second parameter (the reference passes the radius then)."""
    try:
        return len(inspect.signature(func).parameters) > 1
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _samples_per_forward(max_examples_per_batch: int | None, n: int) -> int | None:
    return None if max_examples_per_batch is None else max(1, max_examples_per_batch // n)


INFIDELITY_BUDGET_SCALE = 0.5
"""Forwards of plain perturbed copies run fastest on CPU in batches of about half occlusion's budget (the
sizing when the model's own tensors cannot be watched, see ``attribution._internal.chunking``)."""


def _widest_per_row(objective: Objective, inputs: tuple[Tensor, ...], outputs: list[Tensor]) -> int | None:
    """The widest tensor per input row of the model on ``inputs``, measured on ``f(x)`` (appended to
    ``outputs``) unless known from an earlier call; None when the model cannot be watched."""
    modules = watchable_modules(objective.forward_func, inputs)
    if not modules:
        return None
    known = known_width(modules[0], inputs)
    if known is None:
        with largest_output(modules) as largest:
            outputs.append(objective(inputs))
        known = remember_width(modules[0], inputs, largest[0])
    return known


# --------------------------------------------------------------------------- the core, on canonical tuples

Explain = Callable[[tuple[Tensor, ...], int], tuple[Tensor, ...]]
"""``explain(rows, repeats)``: explanations of ``repeats`` copies of each example, stacked example-major."""


def _chunks(total: int, per_chunk: int | None) -> list[tuple[int, int]]:
    """Consecutive ``(lo, hi)`` ranges over ``range(total)`` of at most ``per_chunk`` items."""
    size = total if per_chunk is None else max(1, per_chunk)
    return [(lo, min(total, lo + size)) for lo in range(0, total, size)]


def _copies(rows: tuple[Tensor, ...], n: int, lo: int, hi: int) -> tuple[Tensor, ...]:
    """Copies ``lo`` to ``hi`` of each of ``n`` examples from an example-major stack, example-major
    (a view when they are all the copies)."""
    return tuple(_by_example(r, n)[:, lo:hi].reshape(n * (hi - lo), *r.shape[1:]) for r in rows)


def _repeat_major(rows: tuple[Tensor, ...], n: int, lo: int, hi: int) -> tuple[Tensor, ...]:
    """Copies ``lo`` to ``hi`` of each of ``n`` examples from an example-major stack, as the repeat-major
    batch that an :class:`~attribution.functional.Objective` evaluates."""
    return tuple(_by_example(r, n)[:, lo:hi].transpose(0, 1).reshape(n * (hi - lo), *r.shape[1:]) for r in rows)


def _by_example(rows: Tensor, n: int) -> Tensor:
    """An example-major stack seen as ``(n, copies, ...)``."""
    return rows.reshape(n, rows.shape[0] // n, *rows.shape[1:])


def output_changes(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    perturbed_inputs: tuple[Tensor, ...],
    n_samples: int,
    samples_per_forward: int | None = None,
) -> Tensor:
    """``f(x) - f(x - I)`` for every perturbed copy, ``(n, S)``: what infidelity compares the attributions
    with, the same for every explanation of one batch and target.

    The copies go in near-equal forwards of at most ``samples_per_forward`` (None: sized for the device).
    Sized for a model on CPU, the forwards keep its widest tensor under :data:`CPU_LARGEST_TENSOR_BYTES`:
    the first call on inputs of a kind measures it on ``f(x)``, in a forward of its own.  Otherwise the
    unperturbed batch is one more copy in front of the perturbed ones, so ``f(x)`` costs no forward of its own.
    """
    n = inputs[0].shape[0]
    outputs: list[Tensor] = []
    with torch.inference_mode():
        widest = None if samples_per_forward is not None else _widest_per_row(objective, inputs, outputs)
        if widest is not None:
            samples_per_forward = max(1, CPU_LARGEST_TENSOR_BYTES // (widest * n))
        first = 1 - len(outputs)  # 1 while f(x) is still to come, as a copy in front of the perturbed ones
        total = n_samples + first
        per_forward = samples_per_forward or auto_perturbations_per_eval(inputs, total, INFIDELITY_BUDGET_SCALE)
        for lo, hi in balanced_chunks(0, total, per_forward):
            perturbed = _repeat_major(perturbed_inputs, n, max(lo - first, 0), hi - first)
            rows = tuple(torch.cat([x, p]) for x, p in zip(inputs, perturbed)) if lo < first else perturbed
            outputs.append(objective(rows, hi - lo))
    values = torch.cat(outputs).view(n_samples + 1, n)
    return (values[0] - values[1:]).T


def infidelity_of(
    attributions: tuple[Tensor, ...], perturbations: tuple[Tensor, ...], changes: Tensor, normalize: bool = False
) -> Tensor:
    """Infidelity per example from the output ``changes`` (:func:`output_changes`) under ``perturbations``.

    With ``normalize`` the attributions are first scaled by the least-squares ``beta = E[ab] / E[a^2]`` per
    example; the error is then computed directly as ``E[(beta a - b)^2]``, which (unlike the expanded
    polynomial) can never come out negative.
    """
    n, n_samples = changes.shape
    dots = functools.reduce(
        operator.add,
        ((p.reshape(n, n_samples, -1) * a.reshape(n, 1, -1)).sum(-1) for p, a in zip(perturbations, attributions)),
    ).to(changes)
    if normalize:
        squares = (dots * dots).sum(1, keepdim=True)
        beta = (dots * changes).sum(1, keepdim=True) / torch.where(squares == 0, torch.ones_like(squares), squares)
        dots = beta * dots
    return (dots - changes).pow(2).mean(1)


def vector_norm(rows: Tensor, norm_ord: str | float) -> Tensor:
    """The norm of each row of a 2-D (or the last dim of any) tensor; ``"fro"`` is the 2-norm."""
    norms: Tensor = torch.linalg.vector_norm(rows, ord=2 if norm_ord == "fro" else norm_ord, dim=-1)
    return norms


def _flatten(explanations: tuple[Tensor, ...], rows: int) -> Tensor:
    """All inputs' explanations of each row side by side: ``(rows, features)``."""
    return torch.cat([e.reshape(rows, -1) for e in explanations], dim=1)


def sensitivity_of(
    explain: Explain,
    inputs: tuple[Tensor, ...],
    perturbed_inputs: tuple[Tensor, ...],
    *,
    n_samples: int,
    norm_ord: str | float = "fro",
    samples_per_forward: int | None = None,
    explanations: tuple[Tensor, ...] | None = None,
) -> Tensor:
    """Largest relative change of the explanation over the perturbed copies.

    ``max_s ||e(x_s) - e(x)|| / ||e(x)||`` per example, the norm taken over
    all inputs' explanations together; an explanation of norm 0 divides by 1
    (so its sensitivity is the absolute change).

    Args:
        explain: explanations of ``repeats`` copies of each example, stacked
            example-major, as a tuple with one tensor per input and
            ``n * repeats`` rows each.
        inputs: the unperturbed batch (``n`` rows per input).
        perturbed_inputs: ``n * n_samples`` rows per input, example-major.
        n_samples: ``S``, the number of perturbed copies.
        norm_ord: ``"fro"`` or a vector norm order (as ``torch.linalg.vector_norm``).
        samples_per_forward: copies per ``explain`` call (None: all in one call).
        explanations: ``e(x)``, the explanations of ``inputs`` when they are
            already known (``n`` rows per tensor); None explains them first.

    Returns:
        One sensitivity value per example, shape ``(n,)``.
    """
    n = inputs[0].shape[0]
    reference = _flatten(explain(inputs, 1) if explanations is None else explanations, n)
    scale = vector_norm(reference, norm_ord)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    largest: Tensor | None = None
    for lo, hi in _chunks(n_samples, samples_per_forward):
        copies = hi - lo
        explained = _flatten(explain(_copies(perturbed_inputs, n, lo, hi), copies), n * copies)
        change = vector_norm(explained.view(n, copies, -1) - reference.to(explained)[:, None], norm_ord).amax(1)
        largest = change if largest is None else torch.maximum(largest, change)
    assert largest is not None  # n_samples >= 1, checked where the arguments come in
    return largest / scale.to(largest)
