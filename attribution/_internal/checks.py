"""Argument checks shared by the public classes: real exceptions, named arguments."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor


def describe(value: Any) -> str:
    """A short description of a value for error messages."""
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:120]


class ArgumentError(ValueError, AssertionError):
    """A bad argument value, named in the message.

    A ``ValueError``, and also an ``AssertionError`` because Captum checks its arguments with ``assert``:
    code and tests written against Captum that expect ``AssertionError`` keep working.
    """


class ArgumentTypeError(TypeError, AssertionError):
    """An argument of the wrong type, named in the message; a ``TypeError`` and, as for
    :class:`ArgumentError`, an ``AssertionError``."""


def check_int(value: Any, name: str, *, minimum: int = 1, allow_none: bool = False) -> None:
    """Raise unless ``value`` is an int >= ``minimum`` (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        expected = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ArgumentError(f"{name}: expected {expected}, got {value!r}")


def check_choice(value: Any, name: str, choices: Iterable[str]) -> None:
    """Raise unless ``value`` is one of ``choices``; the message lists them and close matches."""
    choices = list(choices)
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), choices, n=3)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise ArgumentError(f"{name}: unknown value {value!r}{hint}; choose one of {choices}")


GRAD_CALL_ARGUMENTS = ("outputs", "inputs", "grad_outputs")
"""Arguments of ``torch.autograd.grad`` that the method itself sets."""


def check_grad_kwargs(grad_kwargs: Any) -> None:
    """Raise unless ``grad_kwargs`` is None or a mapping of further ``torch.autograd.grad`` options."""
    if grad_kwargs is None:
        return
    if not isinstance(grad_kwargs, Mapping) or not all(isinstance(k, str) for k in grad_kwargs):
        raise ArgumentTypeError(
            f"grad_kwargs: expected None or a dict of torch.autograd.grad options, got {grad_kwargs!r}"
        )
    taken = [k for k in grad_kwargs if k in GRAD_CALL_ARGUMENTS]
    if taken:
        raise ArgumentError(
            f"grad_kwargs: {taken} are set by the method itself; pass other options (e.g. materialize_grads)"
        )
