"""NeuronGuidedBackprop and NeuronDeconvolution: the full-model method on the model cut at the unit,
selector forms, parity with Captum where Captum is right, and errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attribution import (
    ArgumentError,
    ArgumentTypeError,
    Deconvolution,
    GuidedBackprop,
    NeuronDeconvolution,
    NeuronGuidedBackprop,
    registry,
)

NEURON_METHODS = {
    "guided_backprop": (NeuronGuidedBackprop, GuidedBackprop),
    "deconv": (NeuronDeconvolution, Deconvolution),
}


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 6), nn.ReLU(), nn.Linear(6, 3),
    ).eval()  # fmt: skip


class Functional(nn.Module):
    """ReLUs called as functions in ``forward``, one of them in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 8 * 8, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = F.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu_(self.fc1(h)))


class Twin(nn.Module):
    """``Functional`` with ReLU modules instead (the same weights)."""

    def __init__(self, functional: Functional) -> None:
        super().__init__()
        self.conv, self.fc1, self.fc2 = functional.conv, functional.fc1, functional.fc2
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.fc2(self.relu2(self.fc1(self.relu1(self.conv(x)).flatten(1))))


def _cases():
    """(layer index, unit at its output, unit at its input) in ``_net``."""
    return [(0, (1, 2, 3), (2, 5, 5)), (1, (3, 0, 7), (1, 4, 4)), (3, (4, 1, 2), (0, 3, 1)), (6, 5, 17), (7, 2, 4)]


@pytest.mark.parametrize("method", sorted(NEURON_METHODS))
@pytest.mark.parametrize("index, output_unit, input_unit", _cases())
def test_the_unit_is_the_full_model_method_on_the_model_cut_there(method, index, output_unit, input_unit):
    neuron_cls, full_cls = NEURON_METHODS[method]
    model, x = _net(), torch.randn(3, 3, 8, 8)
    cut = model[: index + 1]  # its output is the layer's output
    ours = neuron_cls(model, model[index]).attribute(x, output_unit)
    torch.testing.assert_close(ours, full_cls(cut).attribute(x, target=output_unit))
    before = model[:index]  # its output is the layer's input
    ours = neuron_cls(model, model[index]).attribute(x, input_unit, attribute_to_neuron_input=True)
    expected = full_cls(before).attribute(x, target=input_unit) if index else _rule_free_input(x, input_unit)
    torch.testing.assert_close(ours, expected)


def _rule_free_input(x, unit):
    """The layer's input is the model's input: the map is 1 at the unit."""
    expected = torch.zeros_like(x)
    expected[(slice(None), *unit)] = 1.0
    return expected


@pytest.mark.parametrize("method", sorted(NEURON_METHODS))
def test_selector_forms(method):
    neuron_cls, full_cls = NEURON_METHODS[method]
    model, x = _net(), torch.randn(2, 3, 8, 8)
    explainer = neuron_cls(model, "3")
    # Slices sum the units they cover (the rules are not linear in the seed: the sum is backpropagated).
    summed = full_cls(model[:4]).attribute(x, target=lambda out: out[:, 2:4, 1, 2].sum(1))
    torch.testing.assert_close(explainer.attribute(x, (slice(2, 4), 1, 2)), summed)
    torch.testing.assert_close(explainer.attribute(x, lambda out: out[:, 2, 1, 2]), explainer.attribute(x, (2, 1, 2)))
    torch.testing.assert_close(neuron_cls(model, model[8]).attribute(x, 1), full_cls(model).attribute(x, target=1))


@pytest.mark.parametrize("method", sorted(NEURON_METHODS))
def test_a_batch_is_its_examples_side_by_side(method):
    neuron_cls, _ = NEURON_METHODS[method]
    model, x = _net(), torch.randn(3, 3, 8, 8)
    whole = neuron_cls(model, model[3]).attribute(x, (1, 2, 2))
    alone = torch.cat([neuron_cls(model, model[3]).attribute(x[i : i + 1], (1, 2, 2)) for i in range(3)])
    torch.testing.assert_close(whole, alone)


@pytest.mark.parametrize("method", sorted(NEURON_METHODS))
def test_multiple_inputs_and_additional_arguments(method):
    neuron_cls, _ = NEURON_METHODS[method]

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 5)
            self.out = nn.Linear(5, 2)

        def forward(self, a, b, scale):
            return self.out(torch.relu(self.fc(a - b) * scale))

    torch.manual_seed(1)
    model, a, b = TwoInputs().eval(), torch.randn(16, 4), torch.randn(16, 4)
    ga, gb = neuron_cls(model, model.out).attribute(
        (a, b), 1, additional_forward_args=2.0, attribute_to_neuron_input=True
    )
    torch.testing.assert_close(ga, -gb)  # d(a - b): the same map with opposite signs
    assert ga.abs().sum() > 0


# --------------------------------------------------------------------------- parity with Captum


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("method", sorted(NEURON_METHODS))
def test_parity_with_captum(method, to_input):
    captum = pytest.importorskip("captum.attr")
    neuron_cls, _ = NEURON_METHODS[method]
    theirs_cls = getattr(captum, neuron_cls.__name__)
    model, x = _net(), torch.randn(3, 3, 8, 8)
    for layer, unit in [(model[3], (2, 1, 1)), (model[6], 4)]:
        kwargs = {"attribute_to_neuron_input": to_input}
        selector = unit if not to_input or isinstance(unit, int) else (2, 3, 3)
        ours = neuron_cls(model, layer).attribute(x, selector, **kwargs)
        with pytest.warns(UserWarning):  # Captum warns that it sets hooks on ReLU modules
            theirs = theirs_cls(model, layer).attribute(x.clone(), selector, **kwargs)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
        assert ours.abs().sum() > 0


@pytest.mark.parametrize("method", sorted(NEURON_METHODS))
def test_functional_relus_get_the_rule_where_captum_uses_the_plain_gradient(method):
    """Captum hooks ``nn.ReLU`` modules only: with ``F.relu`` in ``forward`` its map is the plain gradient."""
    captum = pytest.importorskip("captum.attr")
    neuron_cls, _ = NEURON_METHODS[method]
    torch.manual_seed(4)
    functional, x = Functional().eval(), torch.randn(3, 3, 8, 8)
    twin = Twin(functional).eval()
    ours = neuron_cls(functional, functional.fc2).attribute(x, 1, attribute_to_neuron_input=True)
    torch.testing.assert_close(ours, neuron_cls(twin, twin.fc2).attribute(x, 1, attribute_to_neuron_input=True))
    with pytest.warns(UserWarning):
        on_twin = getattr(captum, neuron_cls.__name__)(twin, twin.fc2).attribute(x, 1, attribute_to_neuron_input=True)
        theirs = getattr(captum, neuron_cls.__name__)(functional, functional.fc2).attribute(
            x, 1, attribute_to_neuron_input=True
        )
    torch.testing.assert_close(ours, on_twin, atol=1e-6, rtol=1e-5)
    assert (theirs - on_twin).abs().max() > 1e-3


# --------------------------------------------------------------------------- registry and errors


def test_registered_with_their_traits():
    for name, (cls, _) in [("neuron_guided_backprop", NEURON_METHODS["guided_backprop"]),
                           ("neuron_deconvolution", NEURON_METHODS["deconv"])]:  # fmt: skip
        record = registry.record(name)
        assert record.cls is cls and record.needs_layer and record.takes_neuron_selector
        assert not (record.takes_target or record.attributes_to_layer or record.returns_delta)
        assert not record.multiplies_by_inputs and record.needs_float_inputs


BAD_CALLS = {
    "selector of the wrong type": (lambda m, x: NeuronGuidedBackprop(m, m[3]).attribute(x, 1.5), ArgumentTypeError),
    "selector out of range": (lambda m, x: NeuronDeconvolution(m, m[3]).attribute(x, (9, 0, 0)), ArgumentError),
    "too many indices": (lambda m, x: NeuronGuidedBackprop(m, m[6]).attribute(x, (1, 2)), ArgumentError),
    "integer inputs": (lambda m, x: NeuronDeconvolution(m, m[3]).attribute(x.long(), (1, 0, 0)), ArgumentTypeError),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_arguments_name_the_argument(case):
    call, kind = BAD_CALLS[case]
    model = _net()
    with pytest.raises(kind, match="neuron_selector" if "selector" in case or "indices" in case else "inputs"):
        call(model, torch.randn(2, 3, 8, 8))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_a_layer_outside_the_forward_is_an_error():
    model = _net()
    with pytest.raises(ArgumentError, match="layer"):
        NeuronGuidedBackprop(model, nn.Linear(2, 2)).attribute(torch.randn(2, 3, 8, 8), 0)
