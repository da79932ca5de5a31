"""Attribution methods by snake_case name, each with a record of its traits.

>>> from attribution import registry
>>> registry.available()[:3]
['deconvolution', 'deep_lift', 'deep_lift_shap']
>>> registry.record("occlusion").perturbs_feature_groups
False
>>> import torch
>>> explainer = registry.build("integrated_gradients", torch.nn.Linear(4, 3))
>>> type(explainer).__name__
'IntegratedGradients'

Callers such as the Lightning callbacks ask a method's :class:`MethodRecord`
(does it need a layer, take a ``target`` or a ``neuron_selector``, return a
convergence delta, ...) instead of testing names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import Tensor, nn

from attribution._internal.checks import ArgumentError, check_choice
from attribution.methods.base import Attribution, InternalAttribution

ProbeOptions = Mapping[str, Any] | Callable[[Tensor], Mapping[str, Any]]
A = TypeVar("A", bound=type[Attribution])


@dataclass(frozen=True)
class MethodRecord:
    """The traits of a registered method, read from its class, and its options for small probe batches.

    Attributes:
        name: the registry name.
        cls: the class.
        needs_layer: the constructor takes a ``layer``.
        attributes_to_layer: attributions are shaped like the layer's activations, not like the inputs.
        takes_target: ``attribute`` takes ``target`` (a model output to explain).
        takes_neuron_selector: ``attribute`` needs ``neuron_selector`` (a hidden unit to explain).
        multiplies_by_inputs: attributions are multiplied by ``inputs - baselines`` with the default
            constructor arguments.
        returns_delta: ``attribute`` accepts ``return_convergence_delta=True``.
        perturbs_feature_groups: a coalition method over the groups of a ``feature_mask``.
        needs_float_inputs: gradients are taken with respect to the inputs (no token ids).
        draws_random_numbers: ``attribute`` draws from torch's global random generator (sampled baselines,
            noise, permutations, coalitions), so results depend on its seed and the call changes its state.
        needs_spatial_layer: the layer must give a spatial map ``(N, C, h, w)``, which the method pools per
            channel as GradCAM does (other layer outputs need a ``reshape_transform`` when the constructor
            takes one).
        takes_reshape_transform: the constructor takes ``reshape_transform``, which turns the layer's output
            into ``(N, C, *spatial)`` maps (e.g. :func:`attribution.utils.token_grid_reshape`).
    """

    name: str
    cls: type[Attribution]
    needs_layer: bool
    attributes_to_layer: bool
    takes_target: bool
    takes_neuron_selector: bool
    multiplies_by_inputs: bool
    returns_delta: bool
    perturbs_feature_groups: bool
    needs_float_inputs: bool
    draws_random_numbers: bool
    needs_spatial_layer: bool
    takes_reshape_transform: bool
    _probe_options: ProbeOptions = field(default_factory=dict, repr=False)

    @property
    def explains_output_at_inputs(self) -> bool:
        """Input-shaped attributions of a model output: what infidelity and sensitivity measure."""
        return self.takes_target and not self.takes_neuron_selector and not self.attributes_to_layer

    def probe_options(self, inputs: Tensor) -> dict[str, Any]:
        """``attribute`` options that keep a call on a small batch like ``inputs`` cheap and legible
        (fewer steps or samples, superpixels instead of pixels); callers' own options override them."""
        options = self._probe_options(inputs) if callable(self._probe_options) else self._probe_options
        return dict(options)


_RECORDS: dict[str, MethodRecord] = {}


def _default_multiplies_by_inputs(cls: type[Attribution]) -> bool:
    parameter = inspect.signature(cls).parameters.get("multiply_by_inputs")
    return cls._multiply_by_inputs if parameter is None else bool(parameter.default)


def _takes_reshape_transform(cls: type[Attribution]) -> bool:
    return "reshape_transform" in inspect.signature(cls).parameters


def register(name: str, probe_options: ProbeOptions | None = None) -> Callable[[A], A]:
    """Class decorator: make an attribution class available under ``name``.

    Args:
        name: the snake_case registry name.
        probe_options: options for small probe batches (see :meth:`MethodRecord.probe_options`): a dict,
            or a function of the input tensor returning one.
    """

    def add(cls: A) -> A:
        if name in _RECORDS and _RECORDS[name].cls is not cls:
            raise ArgumentError(f"name: {name!r} is already registered for {_RECORDS[name].cls.__name__}")
        layered = cls if issubclass(cls, InternalAttribution) else None
        _RECORDS[name] = MethodRecord(
            name=name,
            cls=cls,
            needs_layer=layered is not None,
            attributes_to_layer=layered is not None and layered.attributes_to_layer,
            takes_target=cls.takes_target,
            takes_neuron_selector=cls.takes_neuron_selector,
            multiplies_by_inputs=_default_multiplies_by_inputs(cls),
            returns_delta=cls.returns_delta,
            perturbs_feature_groups=cls.perturbs_feature_groups,
            needs_float_inputs=cls.needs_float_inputs,
            draws_random_numbers=cls.draws_random_numbers,
            needs_spatial_layer=layered is not None and layered.needs_spatial_layer,
            takes_reshape_transform=_takes_reshape_transform(cls),
            _probe_options=probe_options or {},
        )
        cls.registry_name = name
        return cls

    return add


def available() -> list[str]:
    """Names of every registered method, sorted."""
    return sorted(_RECORDS)


def record(name: str) -> MethodRecord:
    """The record of the method registered under ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
    """
    check_choice(name, "method", available())
    return _RECORDS[name]


def get(name: str) -> type[Attribution]:
    """The class registered under ``name`` (see :func:`record`)."""
    return record(name).cls


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
    method = record(name)
    make: Callable[..., Attribution] = method.cls  # constructors differ by family: the record says which takes a layer
    if method.needs_layer:
        if layer is None:
            raise ArgumentError(f"layer: method {name!r} attributes to a layer; pass layer=<module or dotted name>")
        return make(forward_func, layer, **kwargs)
    return make(forward_func, **kwargs)
