"""LayerDeepLift, LayerDeepLiftShap and LayerGradientShap: completeness, closed forms, oracles from other
methods, parity with Captum where Captum is right, and errors."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attribution import (
    ArgumentError,
    ArgumentTypeError,
    DeepLift,
    GradientShap,
    InternalInfluence,
    LayerActivation,
    LayerDeepLift,
    LayerDeepLiftShap,
    LayerGradientShap,
    LayerIntegratedGradients,
    registry,
)
from tests.models import SmallCNN, Text, seeded


class Mixed(nn.Module):
    """A ReLU module used twice in place, max pooling, functional SiLU and tanh: every op has an exact rule."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x):
        h = self.pool(self.relu(self.conv1(x)))
        h = F.silu(self.relu(self.conv2(h)))
        return torch.tanh(self.fc(h.flatten(1)))


class Split(nn.Module):
    def forward(self, x):
        return torch.relu(x), torch.sigmoid(x)


class TwoBranch(nn.Module):
    """A layer that returns a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.split = Split()
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        a, b = self.split(self.fc1(x))
        return self.fc2(a * 0.5 + b)


class AfterLayerLinear(nn.Module):
    """Nonlinear up to ``fc1``, linear after it: the layer gradient is the constant ``fc2.weight``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(4, 5)
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.fc1(torch.tanh(self.fc0(x))))


def _outputs(model, x, target):
    with torch.no_grad():
        return model(x)[:, target]


def _total(attrs):
    attrs = attrs if isinstance(attrs, tuple) else (attrs,)
    return sum(a.reshape(a.shape[0], -1).sum(1) for a in attrs)


# --------------------------------------------------------------------------- LayerDeepLift


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("layer", ["conv1", "pool", "conv2", "fc"])
def test_layer_deep_lift_is_complete(layer, to_input):
    model = seeded(Mixed)
    x, b = torch.randn(3, 3, 8, 8), 0.3 * torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact rules everywhere: no incompleteness warning
        attrs, delta = LayerDeepLift(model, layer).attribute(
            x, b, target=1, attribute_to_layer_input=to_input, return_convergence_delta=True
        )
    expected = _outputs(model, x, 1) - _outputs(model, b, 1)
    torch.testing.assert_close(_total(attrs), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(delta, _total(attrs) - expected, atol=1e-6, rtol=0)
    activation = LayerActivation(model, layer).attribute(x, attribute_to_layer_input=to_input)
    assert attrs.shape == activation.shape


def test_layer_deep_lift_at_the_first_layer_input_is_deep_lift():
    model, x, b = seeded(Mixed), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    layer_attrs = LayerDeepLift(model, model.conv1).attribute(x, b, target=2, attribute_to_layer_input=True)
    torch.testing.assert_close(layer_attrs, DeepLift(model).attribute(x, b, target=2))


def test_multipliers_and_custom_attribution_func_see_the_layer_activations():
    model, x, b = seeded(Mixed), torch.randn(2, 3, 8, 8), torch.randn(1, 3, 8, 8)
    ends = LayerActivation(model, "conv2").attribute(x)
    starts = LayerActivation(model, "conv2").attribute(b)
    global_attrs = LayerDeepLift(model, "conv2").attribute(x, b, target=0)
    multipliers = LayerDeepLift(model, "conv2", multiply_by_inputs=False).attribute(x, b, target=0)
    torch.testing.assert_close(global_attrs, multipliers * (ends - starts))
    seen = {}

    def custom(m, inputs, baselines):
        seen.update(m=m[0], inputs=inputs[0], baselines=baselines[0])
        return tuple(2 * t for t in m)

    attrs, delta = LayerDeepLift(model, "conv2").attribute(
        x, b, target=0, custom_attribution_func=custom, return_convergence_delta=True
    )
    torch.testing.assert_close(seen["m"], multipliers)
    torch.testing.assert_close(seen["inputs"], ends)
    torch.testing.assert_close(seen["baselines"], starts.expand_as(ends))
    torch.testing.assert_close(attrs, 2 * multipliers)
    expected = _outputs(model, x, 0) - _outputs(model, b, 0)
    torch.testing.assert_close(delta, _total(attrs) - expected, atol=1e-5, rtol=1e-5)


def test_a_layer_returning_a_tuple_gets_a_tuple_and_is_complete():
    model, x = seeded(TwoBranch), torch.randn(4, 4)
    attrs, delta = LayerDeepLift(model, model.split).attribute(x, target=1, return_convergence_delta=True)
    assert isinstance(attrs, tuple) and [a.shape for a in attrs] == [(4, 6), (4, 6)]
    assert delta.abs().max() < 1e-5


def test_token_ids_reach_the_embedding_and_the_embeddings_get_the_attributions():
    model = seeded(Text, dim=5, n_out=2)
    tokens = torch.randint(1, 12, (3, 7))
    attrs, delta = LayerDeepLift(model, model.embedding).attribute(tokens, 0, target=1, return_convergence_delta=True)
    assert attrs.shape == (3, 7, 5) and delta.abs().max() < 1e-5


def test_layer_deep_lift_shap_averages_layer_deep_lift_over_the_baselines():
    model, x, dist = seeded(Mixed), torch.randn(2, 3, 8, 8), torch.randn(3, 3, 8, 8)
    shap, delta = LayerDeepLiftShap(model, "pool").attribute(x, dist, target=1, return_convergence_delta=True)
    single = [LayerDeepLift(model, "pool").attribute(x, dist[j : j + 1], target=1) for j in range(3)]
    torch.testing.assert_close(shap, torch.stack(single).mean(0), atol=1e-6, rtol=1e-5)
    assert delta.shape == (2 * 3,) and delta.abs().max() < 1e-5  # example-major: delta.view(N, k)
    by_callable = LayerDeepLiftShap(model, "pool").attribute(x, lambda inputs: dist, target=1)
    torch.testing.assert_close(by_callable, shap)


def test_ops_without_an_exact_rule_after_the_layer_are_named_in_one_warning_at_the_callers_line():
    class RowMax(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)

        def forward(self, x):
            return self.fc(x).max(dim=1, keepdim=True).values.exp()

    model, x = seeded(RowMax), torch.randn(3, 4)
    for explainer, baselines in [(LayerDeepLift(model, "fc"), x.flip(0)), (LayerDeepLiftShap(model, "fc"), x[:2])]:
        with pytest.warns(UserWarning, match=r"unexplained .*\(max\)") as caught:
            explainer.attribute(x, baselines)
        assert len(caught) == 1 and caught[0].filename == __file__


def test_works_inside_no_grad_and_inference_mode():
    model, x = seeded(Mixed), torch.randn(2, 3, 8, 8)
    reference = LayerDeepLift(model, "conv2").attribute(x, target=0)
    with torch.inference_mode():
        frozen = torch.randn(2, 3, 8, 8)
        LayerDeepLift(model, "conv2").attribute(frozen, target=0)
    with torch.no_grad():
        torch.testing.assert_close(LayerDeepLift(model, "conv2").attribute(x, target=0), reference)


# --------------------------------------------------------------------------- LayerGradientShap


def test_layer_gradient_shap_is_exact_when_the_model_is_linear_after_the_layer():
    model, x, b = seeded(AfterLayerLinear), torch.randn(3, 4), torch.randn(1, 4)
    attrs, delta = LayerGradientShap(model, "fc1").attribute(x, b, n_samples=3, target=1, return_convergence_delta=True)
    # Every sample gives fc2.weight * (a(x) - a(b)): layer IG's closed form.
    lig = LayerIntegratedGradients(model, "fc1").attribute(x, b, target=1, n_steps=4)
    torch.testing.assert_close(attrs, lig, atol=1e-6, rtol=1e-5)
    assert delta.shape == (3 * 3,) and delta.abs().max() < 1e-5


def test_layer_gradient_shap_expectation_over_a_baseline_distribution():
    model, x, dist = seeded(AfterLayerLinear), torch.randn(2, 4), torch.randn(4, 4)
    attrs = LayerGradientShap(model, "fc1").attribute(x, dist, n_samples=4000, target=0)
    ends, starts = (LayerActivation(model, "fc1").attribute(t) for t in (x, dist))
    expected = model.fc2.weight.detach()[0] * (ends - starts.mean(0))
    torch.testing.assert_close(attrs, expected, atol=0.05 * float(expected.abs().max()), rtol=0)


@pytest.mark.parametrize("multiply", [False, True])
def test_layer_gradient_shap_expectation_is_internal_influence(multiply):
    """One baseline, no noise: E_t[grad_a f(b + t (x - b))] is internal influence (times a(x) - a(b))."""
    model, x, b = seeded(Mixed), torch.randn(2, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    attrs = LayerGradientShap(model, "conv2", multiply_by_inputs=multiply).attribute(x, b, n_samples=1500, target=1)
    oracle = InternalInfluence(model, "conv2").attribute(x, b, target=1, n_steps=64)
    if multiply:
        oracle = oracle * (LayerActivation(model, "conv2").attribute(x) - LayerActivation(model, "conv2").attribute(b))
    assert (attrs - oracle).abs().sum() < 0.05 * oracle.abs().sum()


def test_layer_gradient_shap_at_the_inputs_draws_what_gradient_shap_draws():
    model, x, dist = seeded(Mixed), torch.randn(2, 3, 8, 8), torch.randn(3, 3, 8, 8)
    torch.manual_seed(3)
    ours = LayerGradientShap(model, "conv1").attribute(x, dist, n_samples=4, stdevs=0.1, target=0,
                                                       attribute_to_layer_input=True)  # fmt: skip
    torch.manual_seed(3)
    torch.testing.assert_close(ours, GradientShap(model).attribute(x, dist, n_samples=4, stdevs=0.1, target=0))


def test_the_same_seed_draws_the_same_baselines_and_points_whatever_the_noise():
    """Noise is drawn after the baselines and points, so a tiny ``stdevs`` changes the result only a little."""
    model, x, dist = seeded(AfterLayerLinear), torch.randn(2, 4), torch.randn(6, 4)
    model.fc2 = nn.Sequential(nn.Tanh(), model.fc2)  # nonlinear after the layer: deltas are not zero
    kwargs = {"n_samples": 3, "target": 0, "return_convergence_delta": True}
    torch.manual_seed(5)
    plain, plain_delta = LayerGradientShap(model, "fc1").attribute(x, dist, **kwargs)
    torch.manual_seed(5)
    noisy, noisy_delta = LayerGradientShap(model, "fc1").attribute(x, dist, stdevs=1e-4, **kwargs)
    torch.testing.assert_close(noisy, plain, atol=1e-3, rtol=0)
    torch.testing.assert_close(noisy_delta, plain_delta, atol=1e-3, rtol=0)
    assert plain_delta.abs().max() > 1e-3


def test_layer_gradient_shap_tuple_layers_and_callable_baselines():
    model, x = seeded(TwoBranch), torch.randn(3, 4)
    torch.manual_seed(0)
    attrs = LayerGradientShap(model, model.split).attribute(x, lambda: torch.zeros(2, 4), n_samples=2, target=0)
    assert isinstance(attrs, tuple) and [a.shape for a in attrs] == [(3, 6), (3, 6)]


# --------------------------------------------------------------------------- parity with Captum


def _captum_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 3),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("to_input", [False, True])
def test_layer_deep_lift_parity_with_captum(to_input):
    captum = pytest.importorskip("captum.attr")
    model, x, b = _captum_net(), torch.randn(3, 3, 8, 8), 0.2 * torch.randn(1, 3, 8, 8)
    kwargs = {"target": 2, "attribute_to_layer_input": to_input, "return_convergence_delta": True}
    ours, our_delta = LayerDeepLift(model, model[3]).attribute(x, b, **kwargs)
    theirs, their_delta = captum.LayerDeepLift(model, model[3]).attribute(x.clone(), b.clone(), **kwargs)
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(our_delta, their_delta.detach(), atol=1e-5, rtol=0)
    dist = torch.randn(3, 3, 8, 8)
    ours = LayerDeepLiftShap(model, model[3]).attribute(x, dist, target=1, attribute_to_layer_input=to_input)
    theirs = captum.LayerDeepLiftShap(model, model[3]).attribute(x, dist, target=1, attribute_to_layer_input=to_input)
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-5, rtol=1e-4)


def test_captum_layer_deep_lift_is_incomplete_with_a_functional_relu_and_ours_is_not():
    captum = pytest.importorskip("captum.attr")

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    torch.manual_seed(2)
    model, x, b = Functional().eval(), torch.randn(6, 4), torch.randn(1, 4)
    _, ours = LayerDeepLift(model, model.fc1).attribute(x, b, target=0, return_convergence_delta=True)
    _, theirs = captum.LayerDeepLift(model, model.fc1).attribute(x, b, target=0, return_convergence_delta=True)
    assert ours.abs().max() < 1e-5
    assert theirs.abs().max() > 1e-2  # F.relu keeps its plain gradient there


def test_layer_gradient_shap_statistics_agree_with_captum():
    captum = pytest.importorskip("captum.attr")
    model, x, b = seeded(Mixed), torch.randn(2, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    ours = LayerGradientShap(model, "conv2").attribute(x, b, n_samples=1500, target=0)
    theirs = captum.LayerGradientShap(model, model.conv2).attribute(x, b, n_samples=1500, target=0)
    assert (ours - theirs).abs().sum() < 0.05 * theirs.abs().sum()


# --------------------------------------------------------------------------- registry and errors


def test_registered_with_their_traits():
    for name, cls in [
        ("layer_deep_lift", LayerDeepLift),
        ("layer_deep_lift_shap", LayerDeepLiftShap),
        ("layer_gradient_shap", LayerGradientShap),
    ]:
        record = registry.record(name)
        assert record.cls is cls and record.needs_layer and record.attributes_to_layer and record.takes_target
        assert record.returns_delta and record.multiplies_by_inputs and not record.takes_neuron_selector
    assert not registry.record("layer_deep_lift").needs_float_inputs  # token ids into an embedding are fine
    assert registry.record("layer_gradient_shap").needs_float_inputs


BAD_CALLS = {
    "layer used twice": (lambda m, x: LayerDeepLift(m, m.relu).attribute(x, target=0), ArgumentError, "layer"),
    "baselines of another shape": (
        lambda m, x: LayerDeepLift(m, "conv2").attribute(x, torch.zeros(2, 3, 4, 4), target=0),
        ArgumentError,
        "baselines",
    ),
    "custom function of the wrong shape": (
        lambda m, x: LayerDeepLift(m, "conv2").attribute(x, target=0, custom_attribution_func=lambda mult: x),
        ArgumentError,
        "custom_attribution_func",
    ),
    "grad_kwargs not a dict": (
        lambda m, x: LayerDeepLiftShap(m, "conv2").attribute(x, target=0, grad_kwargs=3),
        ArgumentTypeError,
        "grad_kwargs",
    ),
    "target out of range": (lambda m, x: LayerDeepLiftShap(m, "conv2").attribute(x, target=9), ArgumentError, "target"),
    "n_samples zero": (
        lambda m, x: LayerGradientShap(m, "conv2").attribute(x, n_samples=0, target=0),
        ArgumentError,
        "n_samples",
    ),
    "negative stdevs": (
        lambda m, x: LayerGradientShap(m, "conv2").attribute(x, stdevs=-1.0, target=0),
        ArgumentError,
        "stdevs",
    ),
    "integer inputs": (
        lambda m, x: LayerGradientShap(m, "conv2").attribute(x.long(), target=0),
        ArgumentTypeError,
        "inputs",
    ),
    "unknown layer name": (lambda m, x: LayerGradientShap(m, "conv3"), ArgumentError, "layer"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_arguments_name_the_argument(case):
    call, kind, name = BAD_CALLS[case]
    model = seeded(SmallCNN)
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    with pytest.raises(kind, match=name):
        call(model, torch.randn(2, 3, 8, 8))
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == hooks
