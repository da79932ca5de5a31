"""Layer activation, gradient x activation, internal influence, conductance and layer IG.

Oracles: modules run by hand, closed forms on linear heads, completeness
through the layer, layer IG on an identity layer equal to input IG, and
parity with Captum (skipped without it) where Captum is right.
"""

import copy

import pytest
import torch
from torch import nn

from attribution import (
    IntegratedGradients,
    InternalInfluence,
    LayerActivation,
    LayerConductance,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    registry,
)
from attribution.functional import integration_nodes
from tests.models import MLP, SmallCNN, Text, seeded

PATH_METHODS = (InternalInfluence, LayerConductance, LayerIntegratedGradients)
GRADIENT_METHODS = (LayerGradientXActivation, *PATH_METHODS)
ALL_METHODS = (LayerActivation, *GRADIENT_METHODS)


class Split(nn.Module):
    """A layer with a tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)

    def forward(self, x):
        h = self.fc(x)
        return h[:, :3], h[:, 3:]


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.split = Split()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(5, 2)

    def forward(self, x):
        u, v = self.split(x)
        return torch.tanh(self.a(u)) * torch.sigmoid(self.b(v))


class Identified(nn.Module):
    """The MLP behind an ``nn.Identity`` that sees the raw input first."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Identity()
        self.net = MLP()

    def forward(self, x):
        return self.net(self.pre(x))


def _call(cls, model, layer, x, **kwargs):
    if cls is LayerActivation:
        kwargs.pop("target", None)
    return cls(model, layer).attribute(x, **kwargs)


def _hooks(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


def _total(attr):
    parts = attr if isinstance(attr, tuple) else (attr,)
    return sum(a.flatten(1).sum(1) for a in parts)


# --------------------------------------------------------------------------- oracles


def test_layer_activation_is_what_the_module_computes(cnn):
    x = torch.randn(2, 3, 8, 8)
    hidden = torch.relu(cnn.conv1(x))
    expected = cnn.conv2(hidden).detach()
    # conv2 feeds an in-place ReLU: the activation is captured before it rectifies
    torch.testing.assert_close(LayerActivation(cnn, cnn.conv2).attribute(x), expected)
    assert (expected < 0).any()
    torch.testing.assert_close(LayerActivation(cnn, "conv2").attribute(x, attribute_to_layer_input=True), hidden)
    tuple_net, z = seeded(TupleNet), torch.randn(2, 6)
    h = tuple_net.split.fc(z).detach()
    torch.testing.assert_close(LayerActivation(tuple_net, "split").attribute(z), (h[:, :3], h[:, 3:]))


def test_layer_gradient_x_activation_before_a_linear_head_by_hand(mlp):
    x = torch.randn(3, 6)
    act = torch.tanh(mlp.fc1(x)).detach()
    w = mlp.fc2.weight.detach()  # the gradient with respect to the tanh output is the head's row
    torch.testing.assert_close(LayerGradientXActivation(mlp, mlp.act).attribute(x, target=2), w[2] * act)
    per_example = LayerGradientXActivation(mlp, "act", multiply_by_inputs=False).attribute(x, target=[0, 2, 1])
    torch.testing.assert_close(per_example, w[[0, 2, 1]])


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_trapezoid"])
def test_internal_influence_by_hand(method):
    # f = w2 . relu(W1 x); the layer is W1 x, whose gradient is w2 masked by the ReLU's gate
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5, bias=False), nn.ReLU(), nn.Linear(5, 1, bias=False))
    x, b = torch.randn(3, 4), torch.randn(3, 4)
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()[0]
    alphas, weights = integration_nodes(7, method)
    expected = sum(float(wt) * w2 * ((b + float(a) * (x - b)) @ w1.T > 0).float() for a, wt in zip(alphas, weights))
    attr = InternalInfluence(model, model[0]).attribute(x, baselines=b, n_steps=7, method=method)
    torch.testing.assert_close(attr, expected)
    assert not all(torch.equal(expected, w2 * g) for g in ((x @ w1.T > 0).float(), (b @ w1.T > 0).float()))


def test_conductance_telescopes_exactly_before_a_linear_head(mlp):
    # downstream of the tanh the gradient is constant, and the trapezoid rule's points include both ends
    x, b = torch.randn(3, 6), torch.randn(3, 6)
    cond = LayerConductance(mlp, mlp.act).attribute(x, baselines=b, target=1, n_steps=3, method="riemann_trapezoid")
    difference = torch.tanh(mlp.fc1(x)) - torch.tanh(mlp.fc1(b))
    torch.testing.assert_close(cond, (mlp.fc2.weight[1] * difference).detach())


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
@pytest.mark.parametrize("case", ["mlp", "cnn"])
def test_conductance_through_the_layer_is_complete_like_input_ig(case, method):
    model, layer, x = {
        "mlp": (seeded(MLP), "fc1", torch.randn(3, 6)),
        "cnn": (seeded(SmallCNN), "conv2", torch.randn(2, 3, 8, 8)),
    }[case]
    b = 0.2 * torch.randn_like(x)
    cond, delta = LayerConductance(model, layer).attribute(
        x, baselines=b, target=1, n_steps=300, method=method, return_convergence_delta=True
    )
    ig = IntegratedGradients(model).attribute(x, baselines=b, target=1, n_steps=300, method=method)
    change = (model(x) - model(b))[:, 1].detach()
    torch.testing.assert_close(_total(cond), change, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(_total(cond), _total(ig), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(delta, _total(cond) - change, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_layer_ig_on_an_identity_layer_is_input_ig(multiply_by_inputs):
    model = seeded(Identified)
    x, b = torch.randn(3, 6), torch.randn(1, 6)
    kwargs = {"baselines": b, "target": [0, 2, 1], "n_steps": 20, "return_convergence_delta": True}
    ig, ig_delta = IntegratedGradients(model, multiply_by_inputs).attribute(x, **kwargs)
    for layer, to_input in (("pre", False), ("net.fc1", True)):
        lig, delta = LayerIntegratedGradients(model, layer, multiply_by_inputs).attribute(
            x, attribute_to_layer_input=to_input, **kwargs
        )
        torch.testing.assert_close(lig, ig)
        if multiply_by_inputs:
            torch.testing.assert_close(delta, ig_delta)


def test_layer_ig_on_token_embeddings_is_complete():
    model = seeded(Text)
    tokens = torch.randint(1, 12, (4, 5))
    lig = LayerIntegratedGradients(model, model.embedding)
    attr, delta = lig.attribute(tokens, baselines=0, target=2, return_convergence_delta=True)
    assert attr.shape == (4, 5, 4)
    assert delta.abs().max() < 1e-4
    pads = torch.zeros(1, 5, dtype=torch.long)
    change = (model(tokens) - model(pads))[:, 2].detach()
    torch.testing.assert_close(_total(attr), change, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lig.attribute(tokens, baselines=pads, target=2), attr)
    gxa = LayerGradientXActivation(model, "embedding").attribute(tokens, target=2)  # integer inputs are fine
    assert gxa.shape == (4, 5, 4)


def test_tuple_outputs_are_attributed_per_tensor():
    model = seeded(TupleNet)
    x = torch.randn(3, 6)
    change = (model(x) - model(torch.zeros_like(x)))[:, 1].detach()
    for cls in (LayerConductance, LayerIntegratedGradients):
        (u, v), delta = cls(model, model.split).attribute(
            x, target=1, n_steps=400, method="riemann_trapezoid", return_convergence_delta=True
        )
        assert u.shape == (3, 3) and v.shape == (3, 5)
        torch.testing.assert_close(u.sum(1) + v.sum(1), change, atol=1e-3, rtol=1e-3)
        assert delta.abs().max() < 1e-3


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("cls", PATH_METHODS)
def test_results_do_not_depend_on_internal_batch_size(cls, mlp):
    x, b = torch.randn(3, 6), torch.randn(3, 6)
    kwargs = {"baselines": b, "target": [1, 0, 2], "n_steps": 9}
    reference = cls(mlp, mlp.fc1).attribute(x, internal_batch_size=10_000, **kwargs)
    for size in (1, 3, 7, None):  # one step per chunk, one, two, the memory budget's choice
        torch.testing.assert_close(cls(mlp, mlp.fc1).attribute(x, internal_batch_size=size, **kwargs), reference)


@pytest.mark.parametrize("cls", PATH_METHODS)
def test_memory_budget_splits_steps_into_chunks(cls, cnn, monkeypatch):
    import attribution._internal.chunking as chunking

    x = torch.randn(2, 3, 8, 8)
    reference = cls(cnn, cnn.conv2).attribute(x, target=0, n_steps=10)
    monkeypatch.setattr(chunking, "CPU_MEMORY_BUDGET", 1)  # one step per chunk
    calls = []
    original = chunking.run_chunked

    def spy(total, work, **kwargs):
        original(total, lambda lo, hi: (calls.append(hi - lo), work(lo, hi)), **kwargs)

    monkeypatch.setattr("attribution.functional.layer.path.run_chunked", spy)
    attr = cls(cnn, cnn.conv2).attribute(x, target=0, n_steps=10)
    assert calls == [1] * (11 if cls is LayerConductance else 10)
    torch.testing.assert_close(attr, reference, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- errors and state


@pytest.mark.parametrize("cls", ALL_METHODS)
def test_bad_arguments(cls, mlp):
    x = torch.randn(2, 6)
    with pytest.raises(ValueError, match="layer: Linear ran 0 times"):
        _call(cls, mlp, nn.Linear(6, 8), x, target=0)
    with pytest.raises(ValueError, match="layer: ReLU ran 2 times"):
        _call(cls, seeded(SmallCNN), "relu", torch.randn(1, 3, 8, 8), target=0)
    with pytest.raises(ValueError, match="no submodule named 'fc3'"):
        cls(mlp, "fc3")
    if cls in PATH_METHODS:
        with pytest.raises(ValueError, match="n_steps: expected an int >= 1, got 0"):
            cls(mlp, "fc1").attribute(x, target=0, n_steps=0)
        with pytest.raises(ValueError, match="method: unknown value 'simpson'.*gausslegendre"):
            cls(mlp, "fc1").attribute(x, target=0, method="simpson")


def test_trapezoid_step_rules_and_integer_inputs():
    mlp = seeded(MLP)
    x = torch.randn(2, 6)
    for cls in (InternalInfluence, LayerIntegratedGradients):
        with pytest.raises(ValueError, match="at least 2 steps"):
            cls(mlp, "fc1").attribute(x, target=0, n_steps=1, method="riemann_trapezoid")
    # conductance places n_steps + 1 points, so one step is two points
    LayerConductance(mlp, "fc1").attribute(x, target=0, n_steps=1, method="riemann_trapezoid")
    text, tokens = seeded(Text), torch.randint(0, 12, (2, 5))
    for cls in (InternalInfluence, LayerConductance):  # their path runs through the inputs
        with pytest.raises(TypeError, match="floating-point"):
            cls(text, "embedding").attribute(tokens, target=0)
    with pytest.raises(ValueError, match="no floating-point tensor"):
        LayerIntegratedGradients(text, "embedding").attribute(tokens, target=0, attribute_to_layer_input=True)


@pytest.mark.parametrize("fail_on", [1, 2])
@pytest.mark.parametrize("cls", ALL_METHODS)
def test_no_hooks_are_left_behind(cls, fail_on):
    model = seeded(SmallCNN)
    before = _hooks(model)
    calls = []

    def exploding(x):
        calls.append(1)
        out = model(x)  # the layer runs before the failure
        if len(calls) == fail_on:
            raise RuntimeError("boom")
        return out

    x = torch.randn(2, 3, 8, 8)
    kwargs = {"n_steps": 4, "internal_batch_size": 2} if cls in PATH_METHODS else {}
    if fail_on == 1 or cls not in (LayerActivation, LayerGradientXActivation):  # single-pass methods finish
        with pytest.raises(RuntimeError, match="boom"):
            _call(cls, exploding, model.conv2, x, target=1, **kwargs)
    assert _hooks(model) == before
    _call(cls, model, model.conv2, x, target=1, **kwargs)
    with pytest.raises(ValueError):
        _call(cls, model, nn.Conv2d(4, 6, 3), x, target=1, **kwargs)
    assert _hooks(model) == before


def test_works_under_inference_mode(cnn):
    x = torch.randn(2, 3, 8, 8)
    for cls in ALL_METHODS:
        kwargs = {"target": 1, **({"n_steps": 4} if cls in PATH_METHODS else {})}
        expected = _call(cls, cnn, cnn.conv2, x, **kwargs)
        with torch.inference_mode():
            torch.testing.assert_close(_call(cls, cnn, cnn.conv2, x.clone(), **kwargs), expected)


def test_registered_by_name(mlp):
    names = {
        "layer_activation": LayerActivation,
        "layer_gradient_x_activation": LayerGradientXActivation,
        "internal_influence": InternalInfluence,
        "layer_conductance": LayerConductance,
        "layer_integrated_gradients": LayerIntegratedGradients,
    }
    for name, cls in names.items():
        explainer = registry.build(name, mlp, layer="fc1")
        assert type(explainer) is cls and explainer.layer is mlp.fc1
    assert LayerConductance(mlp, "fc1").has_convergence_delta()
    assert not LayerIntegratedGradients(mlp, "fc1", multiply_by_inputs=False).multiplies_by_inputs


# --------------------------------------------------------------------------- parity with Captum


def _parity_cases():
    torch.manual_seed(0)
    return {
        "cnn": (seeded(SmallCNN), "conv2", torch.randn(3, 3, 8, 8)),
        "mlp": (seeded(MLP), "fc1", torch.randn(3, 6)),
        "text": (seeded(Text), "embedding", torch.randint(1, 12, (3, 5))),
        "tuple": (seeded(TupleNet), "split", torch.randn(3, 6)),
    }


PARITY = _parity_cases()


def _without_inplace(model):
    """Captum's layer IG fails on a layer feeding an in-place op (see below); compare on a copy without them."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def _same(ours, theirs):
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=1e-4)


def _parity_matrix():
    """(method, case, attribute_to_layer_input) wherever the question makes sense."""
    for cls in ALL_METHODS:
        for case in sorted(PARITY):
            for to_input in (False, True):
                token_path = case == "text" and (to_input or cls in (InternalInfluence, LayerConductance))
                if not token_path:  # token ids are not floats: no path through them, no gradient for them
                    yield pytest.param(
                        cls, case, to_input, id=f"{cls.__name__}-{case}-{'input' if to_input else 'output'}"
                    )


@pytest.mark.parametrize("target", [1, [0, 2, 1]], ids=["int", "list"])
@pytest.mark.parametrize("cls, case, to_input", list(_parity_matrix()))
def test_parity_with_captum(cls, case, to_input, target):
    captum = pytest.importorskip("captum.attr")
    model, layer, x = PARITY[case]
    kwargs = {"attribute_to_layer_input": to_input}
    if cls is not LayerActivation:
        kwargs["target"] = [0, 1, 1] if case == "tuple" and target != 1 else target  # TupleNet has 2 outputs
    if cls in PATH_METHODS:
        kwargs["n_steps"] = 12
    if cls in (LayerConductance, LayerIntegratedGradients):
        kwargs["return_convergence_delta"] = True
    theirs_model = _without_inplace(model) if cls is LayerIntegratedGradients else model
    theirs_module = dict(theirs_model.named_modules())[layer]
    ours = cls(model, layer).attribute(x, **kwargs)
    theirs = getattr(captum, cls.__name__)(theirs_model, theirs_module).attribute(x, **kwargs)
    if "return_convergence_delta" in kwargs:
        _same(ours[1], theirs[1])
        ours, theirs = ours[0], theirs[0]
    _same(ours, theirs)


def test_captum_layer_ig_fails_on_a_layer_feeding_an_inplace_op(cnn):
    captum = pytest.importorskip("captum.attr")
    x = torch.randn(2, 3, 8, 8)
    # Captum hands its leaf tensor itself to the rest of the model; SmallCNN's in-place ReLU then modifies a leaf
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        captum.LayerIntegratedGradients(cnn, cnn.conv2).attribute(x, target=1, n_steps=4)
    ours = LayerIntegratedGradients(cnn, cnn.conv2).attribute(x, target=1, n_steps=4)
    plain = _without_inplace(cnn)
    torch.testing.assert_close(ours, LayerIntegratedGradients(plain, plain.conv2).attribute(x, target=1, n_steps=4))


@pytest.mark.parametrize("method", ["riemann_left", "riemann_middle", "gausslegendre"])
@pytest.mark.parametrize("cls", PATH_METHODS)
def test_parity_with_captum_with_baselines_and_chunks(cls, method):
    captum = pytest.importorskip("captum.attr")
    model, _, x = PARITY["mlp"]
    kwargs = {"baselines": torch.randn(1, 6), "target": [2, 0, 1], "n_steps": 8, "method": method}
    if cls is not InternalInfluence:
        kwargs["return_convergence_delta"] = True
    ours = cls(model, "fc1").attribute(x, internal_batch_size=3, **kwargs)
    theirs = getattr(captum, cls.__name__)(model, model.fc1).attribute(x, internal_batch_size=6, **kwargs)
    _same(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,))
