"""The smallest attack parameter that changes a model's prediction (Captum's ``MinParamPerturbation``).

An attack parametrized by one number (a noise level, a rotation angle, the number of features dropped) is
tried on the grid ``arg_min, arg_min + arg_step, ...`` below ``arg_max``: in order (``mode="linear"``) or by
bisection of the grid (``mode="binary"``, for a prediction that stays wrong once it is wrong).  The first
grid value at which ``correct_fn`` says the model is no longer correct is returned with its perturbed input.
Several perturbed copies go through one forward with ``perturbations_per_eval``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from enum import Enum
from typing import Any

import torch
from torch import Tensor

from attribution._internal.canonical import describe, format_additional_args
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice, check_int
from attribution.robust._batching import batch_size, concat, repeat_args, split_rows
from attribution.robust.perturbation import Perturbation


class MinParamPerturbationMode(Enum):
    """How the grid of parameter values is searched."""

    LINEAR = 0
    BINARY = 1


def default_correct_fn(model_out: Tensor, target: Any = None) -> bool:
    """True when the model's top class is ``target`` for every example of a ``(N, C)`` output.

    Raises:
        ValueError: the output is not ``(N, C)``, or no ``target`` was given.
    """
    if not isinstance(model_out, Tensor) or model_out.dim() != 2:
        raise ArgumentError(
            f"correct_fn: the default needs a model output of shape (N, C), got {describe(model_out)}; "
            f"pass correct_fn(model_out, **kwargs) -> bool"
        )
    if target is None:
        raise ArgumentError("target: the default correct_fn compares the top class with target; pass target")
    labels = target if isinstance(target, Tensor) else torch.tensor(target)
    return bool((model_out.argmax(dim=1) == labels.to(model_out.device)).all())


def _check_real(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ArgumentTypeError(f"{name}: expected a finite int or float, got {describe(value)}")


class MinParamPerturbation:
    """The minimal value of an attack's parameter that makes the model's prediction incorrect.

    Args:
        forward_func: the model, or any function of the (preprocessed) inputs and further arguments.
        attack: a :class:`Perturbation` or any function that takes the inputs and ``arg_name`` as keyword.
        arg_name: the keyword of ``attack`` to search over (e.g. ``"epsilon"``, ``"std"``).
        arg_min: the first value tried.
        arg_max: the end of the grid (not tried).
        arg_step: the grid's spacing; ``arg_max`` must be above ``arg_min + arg_step``.
        mode: ``"linear"`` (every value in order) or ``"binary"`` (bisection; assumes that once the model is
            wrong it stays wrong for larger values).
        num_attempts: attacks per value (for random attacks); a value succeeds if any attempt does.
        preproc_fn: applied to the inputs before the model.
        apply_before_preproc: attack the raw inputs (True) or the output of ``preproc_fn`` (False).
        correct_fn: ``correct_fn(model_out, **kwargs) -> bool``, True while the model is right; default: the
            top class equals ``target`` for every example of a ``(N, C)`` output.

    Example:
        >>> import torch
        >>> from attribution.robust import MinParamPerturbation
        >>> model = torch.nn.Linear(1, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[0.0], [1.0]])); _ = model.bias.copy_(torch.tensor([0.5, 0.0]))
        >>> shift = lambda x, amount: x + amount
        >>> search = MinParamPerturbation(model, shift, "amount", arg_min=0, arg_max=2, arg_step=0.25)
        >>> _, amount = search.evaluate(torch.zeros(1, 1), target=0)
        >>> amount
        0.75
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        attack: Perturbation | Callable[..., Any],
        arg_name: str,
        arg_min: int | float,
        arg_max: int | float,
        arg_step: int | float,
        mode: str = "linear",
        num_attempts: int = 1,
        preproc_fn: Callable[[Any], Any] | None = None,
        apply_before_preproc: bool = False,
        correct_fn: Callable[..., Any] | None = None,
    ) -> None:
        for function, name in ((forward_func, "forward_func"), (attack, "attack")):
            if not callable(function):
                raise ArgumentTypeError(f"{name}: expected a callable, got {describe(function)}")
        for optional, name in ((preproc_fn, "preproc_fn"), (correct_fn, "correct_fn")):
            if optional is not None and not callable(optional):
                raise ArgumentTypeError(f"{name}: expected None or a callable, got {describe(optional)}")
        if not isinstance(arg_name, str):
            raise ArgumentTypeError(f"arg_name: expected the attack's keyword as a str, got {describe(arg_name)}")
        for number, name in ((arg_min, "arg_min"), (arg_max, "arg_max"), (arg_step, "arg_step")):
            _check_real(number, name)
        if arg_step <= 0:
            raise ArgumentError(f"arg_step: expected a positive step, got {arg_step!r}")
        if not arg_max > arg_min + arg_step:
            raise ArgumentError(
                f"arg_max: expected above arg_min + arg_step = {arg_min + arg_step!r} (at least two values to "
                f"search), got {arg_max!r}"
            )
        if not isinstance(mode, str):
            raise ArgumentTypeError(f"mode: expected 'linear' or 'binary', got {describe(mode)}")
        check_choice(mode.lower(), "mode", ("linear", "binary"))
        check_int(num_attempts, "num_attempts")
        self.forward_func = forward_func
        self.attack = attack
        self.arg_name = arg_name
        self.arg_min = arg_min
        self.arg_max = arg_max
        self.arg_step = arg_step
        self.mode = MinParamPerturbationMode[mode.upper()]
        self.num_attempts = num_attempts
        self.preproc_fn = preproc_fn
        self.apply_before_preproc = apply_before_preproc
        self.correct_fn: Callable[..., Any] = correct_fn if correct_fn is not None else default_correct_fn

    def _grid_size(self) -> int:
        """How many values ``arg_min + i * arg_step`` lie below ``arg_max``."""
        count = math.ceil((self.arg_max - self.arg_min) / self.arg_step)
        # guard against rounding: the last value must lie below arg_max, the next one not
        while count > 0 and self._value(count - 1) >= self.arg_max:
            count -= 1
        while self._value(count) < self.arg_max:
            count += 1
        return count

    def _value(self, index: int) -> int | float:
        """The ``index``-th grid value (computed from the index, so the grid does not drift)."""
        return self.arg_min + index * self.arg_step

    def _attacked(self, inputs: Any, preprocessed: Any, attack_kwargs: dict[str, Any], value: Any) -> tuple[Any, Any]:
        """``(model input, attacked input)`` of one attack at parameter ``value``."""
        kwargs = {**attack_kwargs, self.arg_name: value}
        if self.apply_before_preproc:
            attacked = self.attack(inputs, **kwargs)
            return (self.preproc_fn(attacked) if self.preproc_fn is not None else attacked), attacked
        attacked = self.attack(preprocessed, **kwargs)
        return attacked, attacked

    def _first_incorrect(
        self, model_inputs: list[Any], args: tuple[Any, ...], correct_kwargs: dict[str, Any]
    ) -> int | None:
        """The position of the first copy on which the model is not correct, from one forward; or None."""
        if len(model_inputs) == 1:
            outputs = [self.forward_func(model_inputs[0], *args)]
        else:
            joined = self.forward_func(concat(model_inputs), *repeat_args(args, len(model_inputs)))
            outputs = split_rows(joined, [batch_size(m) for m in model_inputs])
        for position, output in enumerate(outputs):
            if not self.correct_fn(output, **correct_kwargs):
                return position
        return None

    def _try_value(
        self,
        index: int,
        inputs: Any,
        preprocessed: Any,
        attack_kwargs: dict[str, Any],
        args: tuple[Any, ...],
        correct_kwargs: dict[str, Any],
        per_eval: int,
    ) -> Any:
        """The attacked input of the first attempt at grid value ``index`` that fools the model, or None."""
        value = self._value(index)
        pending: list[tuple[Any, Any]] = []
        for attempt in range(self.num_attempts):
            pending.append(self._attacked(inputs, preprocessed, attack_kwargs, value))
            if len(pending) == per_eval or attempt == self.num_attempts - 1:
                position = self._first_incorrect([m for m, _ in pending], args, correct_kwargs)
                if position is not None:
                    return pending[position][1]
                pending = []
        return None

    def evaluate(
        self,
        inputs: Any,
        additional_forward_args: Any = None,
        target: Any = None,
        perturbations_per_eval: int = 1,
        attack_kwargs: dict[str, Any] | None = None,
        correct_fn_kwargs: dict[str, Any] | None = None,
    ) -> tuple[Any, int | float | None]:
        """The smallest grid value at which the attacked input makes the model incorrect, and that input.

        A batch of several examples counts as incorrect (with the default ``correct_fn``) as soon as one
        example is; pass one example to find its own minimal perturbation.

        Args:
            inputs: the input, in any form ``preproc_fn`` (or the model) and the attack take.
            additional_forward_args: further arguments of ``forward_func``; tensors among them are repeated
                along their first dimension when several copies go through one forward.
            target: given to ``correct_fn`` as ``target`` (needed by the default one).
            perturbations_per_eval: how many attacked copies go through one forward; more than 1 needs a
                tensor or tuple of tensors after ``preproc_fn``.
            attack_kwargs: further keyword arguments of the attack.
            correct_fn_kwargs: further keyword arguments of ``correct_fn``.

        Returns:
            ``(perturbed input, parameter value)``, or ``(None, None)`` when no value of the grid fools the
            model.

        Raises:
            ValueError: ``perturbations_per_eval`` is not a positive int.
        """
        check_int(perturbations_per_eval, "perturbations_per_eval")
        args = format_additional_args(additional_forward_args)
        preprocessed = self.preproc_fn(inputs) if self.preproc_fn is not None else inputs
        correct_kwargs = {**({"target": target} if target is not None else {}), **(correct_fn_kwargs or {})}
        context = (inputs, preprocessed, dict(attack_kwargs or {}), args, correct_kwargs)
        if self.mode is MinParamPerturbationMode.LINEAR:
            return self._linear(context, perturbations_per_eval)
        return self._binary(context, perturbations_per_eval)

    def _linear(self, context: tuple[Any, ...], per_eval: int) -> tuple[Any, int | float | None]:
        """Every grid value in order, ``per_eval`` attacked copies per forward; stops at the first success."""
        inputs, preprocessed, attack_kwargs, args, correct_kwargs = context
        pending: list[tuple[int, Any, Any]] = []
        count = self._grid_size()
        for index in range(count):
            for attempt in range(self.num_attempts):
                model_input, attacked = self._attacked(inputs, preprocessed, attack_kwargs, self._value(index))
                pending.append((index, model_input, attacked))
                last = index == count - 1 and attempt == self.num_attempts - 1
                if len(pending) == per_eval or last:
                    position = self._first_incorrect([queued for _, queued, _ in pending], args, correct_kwargs)
                    if position is not None:
                        found_index, _, found = pending[position]
                        return found, self._value(found_index)
                    pending = []
        return None, None

    def _binary(self, context: tuple[Any, ...], per_eval: int) -> tuple[Any, int | float | None]:
        """Bisection of the grid for the first value that fools the model (attempts batched per value)."""
        inputs, preprocessed, attack_kwargs, args, correct_kwargs = context
        low, high = 0, self._grid_size()  # the answer's index lies in [low, high); high: none found yet
        best: tuple[Any, int | None] = (None, None)
        while low < high:
            middle = (low + high) // 2
            attacked = self._try_value(middle, inputs, preprocessed, attack_kwargs, args, correct_kwargs, per_eval)
            if attacked is not None:
                best, high = (attacked, middle), middle
            else:
                low = middle + 1
        found, index = best
        return (found, self._value(index)) if index is not None else (None, None)
