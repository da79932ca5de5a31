"""Argument checks shared by the public classes: real exceptions, named arguments."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable
from typing import Any


def check_int(value: Any, name: str, *, minimum: int = 1, allow_none: bool = False) -> None:
    """Raise unless ``value`` is an int >= ``minimum`` (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        expected = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def check_choice(value: Any, name: str, choices: Iterable[str]) -> None:
    """Raise unless ``value`` is one of ``choices``; the message lists them and close matches."""
    choices = list(choices)
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), choices, n=3)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise ValueError(f"{name}: unknown value {value!r}{hint}; choose one of {choices}")
