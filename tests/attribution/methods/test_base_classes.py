"""Captum's base classes: every method is an instance of the same ones as in Captum (code checks
``isinstance(method, GradientAttribution)`` or subclasses them), and the traits follow from them."""

import inspect

import pytest
import torch

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


def _construct(cls, model):
    try:
        return cls(model)
    except TypeError:  # needs a layer
        return cls(model, model[0])


LLM_WRAPPERS = ("LLMAttribution", "LLMGradientAttribution", "RemoteLLMAttribution")
"""Built from another method and a tokenizer (or a remote provider), not from a model alone."""


@pytest.mark.parametrize("name", _methods())
def test_each_method_has_captums_base_classes_and_multiplies_by_inputs_as_captum(name):
    captum = pytest.importorskip("captum.attr")
    theirs = getattr(captum, name, None)
    if theirs is None:
        pytest.skip(f"Captum has no {name}")
    ours = getattr(attribution, name)
    for base in BASES:
        assert issubclass(ours, getattr(attribution, base)) == issubclass(theirs, getattr(captum, base)), base
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    if name in ("DataLoaderAttribution", "LimeBase", "NoiseTunnel", *LLM_WRAPPERS):
        return  # built from another method, or from the parts of a surrogate model
    mine, captums = _construct(ours, model), _construct(theirs, model)
    if hasattr(captums, "multiplies_by_inputs"):
        assert mine.multiplies_by_inputs == captums.multiplies_by_inputs


def test_traits_follow_the_base_classes():
    for name in registry.available():
        record = registry.record(name)
        if issubclass(record.cls, PerturbationAttribution):  # forward only: token ids are fine
            assert not record.needs_float_inputs, name
        if issubclass(record.cls, NeuronAttribution):
            assert record.takes_neuron_selector and record.needs_layer and not record.attributes_to_layer, name
        if issubclass(record.cls, LayerAttribution):
            assert record.needs_layer and record.attributes_to_layer, name
        assert not (issubclass(record.cls, GradientAttribution) and issubclass(record.cls, PerturbationAttribution))
