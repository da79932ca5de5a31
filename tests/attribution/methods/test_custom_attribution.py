"""DeepLift's and DeepLiftShap's ``custom_attribution_func`` (Captum's argument)."""

import pytest
import torch

from attribution import ArgumentError, DeepLift, DeepLiftShap, NeuronDeepLift, NeuronDeepLiftShap
from tests.models import MLP, TwoInput, seeded

X = torch.rand(3, 6)


def _times_difference(multipliers, inputs, baselines):
    return tuple(m * (x - b) for m, x, b in zip(multipliers, inputs, baselines))


def test_the_default_rule_written_as_a_custom_function_gives_the_default_attributions_and_delta():
    dl = DeepLift(seeded(MLP))
    b = torch.rand(1, 6)
    expected, delta = dl.attribute(X, b, target=1, return_convergence_delta=True)
    got, got_delta = dl.attribute(
        X, b, target=1, return_convergence_delta=True, custom_attribution_func=_times_difference
    )
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_delta, delta)


def test_one_and_two_parameter_functions_get_the_multipliers_and_the_inputs():
    model = seeded(MLP)
    multipliers = DeepLift(model, multiply_by_inputs=False).attribute(X, target=0)
    ones = DeepLift(model).attribute(X, target=0, custom_attribution_func=lambda m: m)
    torch.testing.assert_close(ones, multipliers)
    squares = DeepLift(model).attribute(X, target=0, custom_attribution_func=lambda m, x: (m[0] * x[0] ** 2,))
    torch.testing.assert_close(squares, multipliers * X**2)


def test_the_delta_is_the_custom_attributions_delta():
    dl = DeepLift(seeded(MLP))
    attrs, delta = dl.attribute(
        X, target=2, return_convergence_delta=True, custom_attribution_func=lambda m, x, b: (2 * m[0] * (x[0] - b[0]),)
    )
    torch.testing.assert_close(delta, dl.compute_convergence_delta(attrs, 0.0, X, target=2))


def test_deep_lift_shap_applies_it_per_baseline_then_averages():
    model = seeded(TwoInput)
    inputs = (torch.rand(2, 1, 6, 6), torch.rand(2, 5))
    baselines = (torch.rand(4, 1, 6, 6), torch.rand(4, 5))
    dls = DeepLiftShap(model)
    expected = dls.attribute(inputs, baselines, target=0)
    got = dls.attribute(inputs, baselines, target=0, custom_attribution_func=_times_difference)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    halves = dls.attribute(
        inputs,
        baselines,
        target=0,
        custom_attribution_func=lambda m, x, b: tuple(0.5 * a for a in _times_difference(m, x, b)),
    )
    for h, e in zip(halves, expected):
        torch.testing.assert_close(h, 0.5 * e)


def test_a_result_not_shaped_like_the_inputs_is_an_argument_error():
    with pytest.raises(ArgumentError, match="custom_attribution_func"):
        DeepLift(seeded(MLP)).attribute(X, target=0, custom_attribution_func=lambda m: (m[0][:, :2],))
    with pytest.raises(ArgumentError, match="custom_attribution_func"):
        DeepLift(seeded(MLP)).attribute(X, target=0, custom_attribution_func=lambda m, x, b, extra: m)


def test_matches_captum():
    captum = pytest.importorskip("captum.attr")
    model = seeded(MLP)
    b = torch.rand(1, 6)

    def custom(m, x, b):
        return (m[0] * (x[0] - b[0]) ** 2,)

    ours = DeepLift(model).attribute(X, b, target=1, custom_attribution_func=custom)
    theirs = captum.DeepLift(model).attribute(X, b, target=1, custom_attribution_func=custom)
    torch.testing.assert_close(ours, theirs)


def test_neuron_deep_lift_and_shap_take_it_too():
    model = seeded(MLP)
    b = torch.rand(4, 6)
    for method in (NeuronDeepLift(model, "fc1"), NeuronDeepLiftShap(model, "fc1")):
        baselines = b[:1] if isinstance(method, NeuronDeepLift) else b
        expected = method.attribute(X, 2, baselines)
        got = method.attribute(X, 2, baselines, custom_attribution_func=_times_difference)
        torch.testing.assert_close(got, expected)
        doubled = method.attribute(X, 2, baselines, custom_attribution_func=lambda m, x, b: (2 * m[0] * (x[0] - b[0]),))
        torch.testing.assert_close(doubled, 2 * expected)
