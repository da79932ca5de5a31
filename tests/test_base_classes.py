"""Captum's base classes: every method is an instance of the same ones as in Captum (code checks
``isinstance(method, GradientAttribution)`` or subclasses them), and the traits follow from them."""

import inspect

import pytest

import attribution
from attribution import (
    Attribution,
    GradientAttribution,
    LayerAttribution,
    NeuronAttribution,
    PerturbationAttribution,
    registry,
)

BASES = ("GradientAttribution", "PerturbationAttribution", "LayerAttribution", "NeuronAttribution")


def _methods() -> list[str]:
    return sorted(
        name
        for name in attribution.__all__
        if inspect.isclass(getattr(attribution, name))
        and issubclass(getattr(attribution, name), Attribution)
        and name not in {"Attribution", *BASES}
    )


@pytest.mark.parametrize("name", _methods())
def test_each_method_has_captums_base_classes(name):
    captum = pytest.importorskip("captum.attr")
    theirs = getattr(captum, name, None)
    if theirs is None:
        pytest.skip(f"Captum has no {name}")
    ours = getattr(attribution, name)
    for base in BASES:
        assert issubclass(ours, getattr(attribution, base)) == issubclass(theirs, getattr(captum, base)), base


def test_traits_follow_the_base_classes():
    for name in registry.available():
        record = registry.record(name)
        if issubclass(record.cls, PerturbationAttribution):
            assert record.multiplies_by_inputs and not record.needs_float_inputs, name
        if issubclass(record.cls, NeuronAttribution):
            assert record.takes_neuron_selector and record.needs_layer and not record.attributes_to_layer, name
        if issubclass(record.cls, LayerAttribution):
            assert record.needs_layer and record.attributes_to_layer, name
        assert not (issubclass(record.cls, GradientAttribution) and issubclass(record.cls, PerturbationAttribution))
