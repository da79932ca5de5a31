"""Attribution methods by snake_case name, so callbacks and configs can pick them.

>>> from attribution import registry
>>> registry.available()[:3]
['gradient_shap', 'input_x_gradient', 'integrated_gradients']
>>> explainer = registry.build("integrated_gradients", model)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor, nn

from attribution._base import Attribution, LayerAttribution
from attribution._checks import check_choice

_METHODS: dict[str, type[Attribution]] = {}
A = TypeVar("A", bound=type[Attribution])


def register(name: str) -> Callable[[A], A]:
    """Class decorator: make an attribution class available under ``name``."""

    def add(cls: A) -> A:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"name: {name!r} is already registered for {_METHODS[name].__name__}")
        _METHODS[name] = cls
        cls.registry_name = name
        return cls

    return add


def available() -> list[str]:
    """Names of every registered method, sorted."""
    return sorted(_METHODS)


def get(name: str) -> type[Attribution]:
    """The class registered under ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
    """
    check_choice(name, "method", available())
    return _METHODS[name]


def needs_layer(name: str) -> bool:
    """Whether the method attributes to a layer (and so needs one to be built)."""
    return issubclass(get(name), LayerAttribution)


def build(
    name: str, forward_func: Callable[..., Tensor], *, layer: nn.Module | str | None = None, **kwargs: Any
) -> Attribution:
    """Construct the method ``name`` for ``forward_func``.

    Args:
        name: a registered name, see :func:`available`.
        forward_func: the model.
        layer: module or dotted name; required by layer methods, ignored otherwise.
        **kwargs: further constructor arguments (e.g. ``multiply_by_inputs``).

    Raises:
        ValueError: unknown name, or a layer method without ``layer``.
    """
    cls = get(name)
    if issubclass(cls, LayerAttribution):
        if layer is None:
            raise ValueError(f"layer: method {name!r} attributes to a layer; pass layer=<module or dotted name>")
        return cls(forward_func, layer, **kwargs)
    return cls(forward_func, **kwargs)
