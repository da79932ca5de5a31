"""Neuron methods: oracles computed by hand, invariants, parity with Captum, errors and state."""

import pytest
import torch
from torch import nn

from attribution import (
    LayerConductance,
    NeuronConductance,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronGradient,
    NeuronGradientShap,
    NeuronIntegratedGradients,
    registry,
)
from tests.models import MLP, SmallCNN, seeded

CLASSES = {
    "neuron_gradient": NeuronGradient,
    "neuron_integrated_gradients": NeuronIntegratedGradients,
    "neuron_conductance": NeuronConductance,
    "neuron_gradient_shap": NeuronGradientShap,
    "neuron_deep_lift": NeuronDeepLift,
    "neuron_deep_lift_shap": NeuronDeepLiftShap,
}


def _kwargs(name, x, target=1):
    """Light per-method arguments for inputs like ``x``."""
    baselines = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    return {
        "neuron_gradient": {},
        "neuron_integrated_gradients": {"n_steps": 8},
        "neuron_conductance": {"n_steps": 8, "target": target},
        "neuron_gradient_shap": {"baselines": baselines, "n_samples": 4, "stdevs": 0.1},
        "neuron_deep_lift": {"baselines": 0.1 * baselines[:1]},
        "neuron_deep_lift_shap": {"baselines": baselines},
    }[name]


def _attribute(name, model, layer, x, selector, **extra):
    torch.manual_seed(7)  # GradientSHAP draws from the global generator
    return CLASSES[name](model, layer).attribute(x, selector, **{**_kwargs(name, x), **extra})


class Text(nn.Module):
    """Embedding -> mean over tokens -> linear.  Gradient methods attribute to the embeddings."""

    def __init__(self, vocab: int = 20, dim: int = 5, n_out: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, n_out)

    def forward(self, tokens):
        return self.from_embeddings(self.emb(tokens))

    def from_embeddings(self, embedded):
        return self.fc(embedded.mean(1))


def _cnn_unit(cnn, x):
    return cnn.conv2(torch.relu(cnn.conv1(x)))


# --------------------------------------------------------------------------- oracles


def test_registered_as_layer_methods():
    for name, cls in CLASSES.items():
        assert registry.get(name) is cls and registry.record(name).needs_layer


@pytest.mark.parametrize("selector", [(1, 2, 3), (5, 0, 7)])
def test_neuron_gradient_is_the_gradient_of_the_unit(cnn, selector):
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    unit = _cnn_unit(cnn, x)[(slice(None), *selector)]
    (expected,) = torch.autograd.grad(unit.sum(), x)
    torch.testing.assert_close(NeuronGradient(cnn, "conv2").attribute(x, selector), expected)
    assert x.grad is None


def test_neuron_gradient_with_two_inputs_and_forward_args(two_input):
    image, table, scale = torch.randn(2, 1, 6, 6), torch.randn(2, 5), torch.tensor([[1.0], [2.0]])
    grads = NeuronGradient(two_input, two_input.fc_tab).attribute((image, table), 2, additional_forward_args=scale)
    torch.testing.assert_close(grads[0], torch.zeros_like(image))
    torch.testing.assert_close(grads[1], two_input.fc_tab.weight.detach()[2].expand(2, 5))


def test_neuron_integrated_gradients_is_exact_on_a_linear_layer(linear):
    x, b = torch.randn(4, 6), torch.randn(1, 6)
    for method in ("gausslegendre", "riemann_trapezoid", "riemann_left"):
        attr = NeuronIntegratedGradients(linear, "fc").attribute(x, 2, baselines=b, n_steps=3, method=method)
        torch.testing.assert_close(attr, linear.fc.weight.detach()[2] * (x - b))


@pytest.mark.parametrize("case", ["mlp_tanh", "cnn_relu"])
def test_neuron_integrated_gradients_is_complete(case, mlp, cnn):
    if case == "mlp_tanh":
        model, layer, selector, x, n_steps = mlp, "act", 4, torch.randn(3, 6), 20
        unit = lambda v: mlp.act(mlp.fc1(v))[:, selector]
    else:
        model, layer, selector, x, n_steps = cnn, "conv2", (5, 2, 3), torch.randn(3, 3, 8, 8), 200
        unit = lambda v: _cnn_unit(cnn, v)[(slice(None), *selector)]
    b = 0.2 * torch.randn(1, *x.shape[1:])
    attr = NeuronIntegratedGradients(model, layer).attribute(x, selector, baselines=b, n_steps=n_steps)
    with torch.no_grad():
        expected = unit(x) - unit(b)
    total = attr.flatten(1).sum(1)
    assert (total - expected).abs().max() < 2e-3 * expected.abs().max()


def _layer_conductance_of_unit(unit_of, head, select, x, b, steps=4000):
    """sum_k d head / d unit (x_k) * (unit(x_{k+1}) - unit(x_k)) along the straight path, by definition."""
    alphas = torch.linspace(0, 1, steps + 1).view(-1, *([1] * x.dim()))
    points = (b + alphas * (x - b)).reshape(-1, *x.shape[1:])
    with torch.no_grad():
        layer_out = unit_of(points)
    leaf = layer_out.detach().requires_grad_()
    (grad,) = torch.autograd.grad(head(leaf).sum(), leaf)
    units = select(layer_out).view(steps + 1, len(x))
    return (select(grad).view(steps + 1, len(x))[:-1] * units.diff(dim=0)).sum(0)


@pytest.mark.parametrize("case", ["mlp", "cnn"])
def test_neuron_conductance_sums_to_the_units_layer_conductance(case, mlp, cnn):
    if case == "mlp":
        model, layer, selector, target, x = mlp, "fc1", 3, 2, torch.randn(3, 6)
        unit_of, head = mlp.fc1, lambda h: mlp.fc2(torch.tanh(h))[:, target]
    else:
        model, layer, selector, target, x = cnn, "conv2", (5, 2, 3), 1, torch.randn(3, 3, 8, 8)
        unit_of = lambda v: _cnn_unit(cnn, v)
        head = lambda h: cnn.fc(cnn.pool(torch.relu(h)).flatten(1))[:, target]
    select = lambda out: out[(slice(None), *(selector if isinstance(selector, tuple) else (selector,)))]
    b = 0.2 * torch.randn(1, *x.shape[1:])
    attr = NeuronConductance(model, layer).attribute(x, selector, baselines=b, target=target, n_steps=300)
    expected = _layer_conductance_of_unit(unit_of, head, select, x, b)
    total = attr.flatten(1).sum(1)
    assert expected.abs().min() > 1e-4  # the unit carries signal to the target
    assert (total - expected).abs().max() < 1e-2 * expected.abs().max()


def _relu_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.mark.parametrize("layer", [2, 3])  # a linear unit after a ReLU, and a ReLU unit itself
def test_neuron_deep_lift_is_complete_on_a_relu_mlp(layer):
    model = _relu_mlp()
    x, dist = torch.randn(4, 6), torch.randn(5, 6)
    with torch.no_grad():
        unit = lambda v: model[: layer + 1](v)[:, 6]
        expected_dl = unit(x) - unit(dist[:1])
        expected_shap = unit(x) - unit(dist).mean()
    attr = NeuronDeepLift(model, model[layer]).attribute(x, 6, baselines=dist[:1])
    torch.testing.assert_close(attr.sum(1), expected_dl, atol=1e-5, rtol=1e-4)
    shap = NeuronDeepLiftShap(model, model[layer]).attribute(x, 6, baselines=dist)
    torch.testing.assert_close(shap.sum(1), expected_shap, atol=1e-5, rtol=1e-4)


def test_neuron_deep_lift_is_complete_through_a_reused_inplace_relu(cnn):
    x = torch.randn(3, 3, 8, 8)
    attr = NeuronDeepLift(cnn, "conv2").attribute(x, (5, 2, 3))
    with torch.no_grad():
        expected = _cnn_unit(cnn, x)[:, 5, 2, 3] - _cnn_unit(cnn, torch.zeros(1, 3, 8, 8))[:, 5, 2, 3]
    torch.testing.assert_close(attr.flatten(1).sum(1), expected, atol=1e-5, rtol=1e-4)


def test_neuron_deep_lift_uses_batch_norm_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model[1].running_mean.normal_()
    x = torch.randn(4, 6)
    in_train = NeuronDeepLift(model, model[2]).attribute(x, 1)
    assert model[1].training
    torch.testing.assert_close(in_train, NeuronDeepLift(model.eval(), model[2]).attribute(x, 1))


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_callable_selectors_equal_index_selectors(name, cnn):
    x = torch.randn(3, 3, 8, 8)
    by_index = _attribute(name, cnn, "conv2", x, (5, 2, 3))
    by_callable = _attribute(name, cnn, "conv2", x, lambda out: out[:, 5, 2, 3])
    torch.testing.assert_close(by_callable, by_index)
    assert by_index.abs().max() > 0


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_attribute_to_neuron_input_is_the_previous_layers_output(name, mlp):
    x = torch.randn(3, 6)
    to_input = _attribute(name, mlp, "fc2", x, 4, attribute_to_neuron_input=True)
    torch.testing.assert_close(to_input, _attribute(name, mlp, "act", x, 4))
    assert not torch.allclose(to_input, _attribute(name, mlp, "fc2", x, 2))


@pytest.mark.parametrize("name", ["neuron_integrated_gradients", "neuron_conductance"])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_results_do_not_depend_on_internal_batch_size(name, method, cnn):
    x = torch.randn(3, 3, 8, 8)
    reference = _attribute(name, cnn, "conv2", x, (5, 2, 3), method=method, n_steps=9)
    for size in (1, 7):
        chunked = _attribute(name, cnn, "conv2", x, (5, 2, 3), method=method, n_steps=9, internal_batch_size=size)
        torch.testing.assert_close(chunked, reference, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- parity with Captum


def _parity_cases():
    torch.manual_seed(0)
    text = seeded(Text)
    with torch.no_grad():
        embedded = text.emb(torch.randint(0, 20, (3, 7)))
    return {
        "cnn": (seeded(SmallCNN), "conv2", torch.randn(3, 3, 8, 8), (1, 2, 3), (5, 2, 3)),
        "mlp": (seeded(MLP), "fc1", torch.randn(3, 6), 3, 5),
        # The text model's gradient methods run on the embedding output (integer token ids have no
        # gradient, in Captum too): the unit is a dimension of the mean embedding (fc's input) or a logit.
        "text": (text.from_embeddings, text.fc, embedded, 1, 2),
    }


PARITY = _parity_cases()
CAPTUM_NAMES = {name: "".join(w.capitalize() for w in name.split("_")) for name in CLASSES}
CAPTUM_NAMES.update(neuron_deep_lift="NeuronDeepLift", neuron_deep_lift_shap="NeuronDeepLiftShap")


def _layer_module(model, layer):
    return getattr(model, layer) if isinstance(layer, str) else layer


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("case", sorted(PARITY))
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_parity_with_captum(name, case, to_input):
    captum = pytest.importorskip("captum.attr")
    model, layer, x, input_selector, output_selector = PARITY[case]
    selector = input_selector if to_input else output_selector
    if case == "cnn" and name.startswith("neuron_deep_lift"):
        pytest.skip("Captum's DeepLift raises on SmallCNN's reused in-place ReLU (see the test below)")
    if case == "text" and name.startswith("neuron_deep_lift"):
        model = _TextFromEmbeddings(model.__self__)  # Captum's DeepLift needs an nn.Module
        layer = model.text.fc
    kwargs = {**_kwargs(name, x, target=2), "attribute_to_neuron_input": to_input}
    if name == "neuron_gradient_shap":  # draws differ; with one baseline and no noise the mean converges
        kwargs.update(baselines=kwargs["baselines"][:1], stdevs=0.0, n_samples=3000)
    if name in ("neuron_integrated_gradients", "neuron_conductance"):
        kwargs["method"] = "gausslegendre"  # Captum's trapezoid is off by one step (see below)
    ours = CLASSES[name](model, layer).attribute(x, selector, **kwargs)
    theirs = getattr(captum, CAPTUM_NAMES[name])(model, _layer_module(model, layer)).attribute(x, selector, **kwargs)
    if name == "neuron_gradient_shap":
        assert (ours - theirs).abs().sum() < 0.05 * theirs.abs().sum()
    else:
        torch.testing.assert_close(ours, theirs.detach(), atol=1e-6, rtol=1e-4)
    assert ours.abs().max() > 0


class _TextFromEmbeddings(nn.Module):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def forward(self, embedded):
        return self.text.from_embeddings(embedded)


@pytest.mark.parametrize("name", ["neuron_integrated_gradients", "neuron_conductance"])
def test_parity_with_captum_when_chunked(name):
    captum = pytest.importorskip("captum.attr")
    model, layer, x, _, selector = PARITY["cnn"]
    kwargs = {**_kwargs(name, x), "method": "riemann_middle", "n_steps": 10, "internal_batch_size": 7}
    ours = CLASSES[name](model, layer).attribute(x, selector, **kwargs)
    theirs = getattr(captum, CAPTUM_NAMES[name])(model, model.conv2).attribute(x, selector, **kwargs)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-4)


class _Product(nn.Module):
    """Two inputs that both reach the layer, and a scale argument."""

    def __init__(self):
        super().__init__()
        self.mix, self.head = nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, a, b, scale):
        return self.head(torch.tanh(self.mix(a * b))) * scale


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_parity_with_captum_for_two_inputs_and_forward_args(name):
    captum = pytest.importorskip("captum.attr")
    model = seeded(_Product)
    inputs, scale = (torch.randn(3, 5), torch.randn(3, 5)), torch.tensor([[1.0], [2.0], [0.5]])
    kwargs = {**_kwargs(name, inputs[0], target=[0, 2, 1]), "additional_forward_args": scale}
    for key in ("baselines",):
        if key in kwargs:
            kwargs[key] = (kwargs[key], 0.5 * kwargs[key])
    if name == "neuron_gradient_shap":
        kwargs.update(baselines=tuple(b[:1] for b in kwargs["baselines"]), stdevs=0.0, n_samples=3000)
    if name in ("neuron_integrated_gradients", "neuron_conductance"):
        kwargs["method"] = "gausslegendre"
    if name == "neuron_deep_lift_shap":  # Captum needs the tensor argument wrapped (see below)
        kwargs["additional_forward_args"] = (scale,)
    ours = CLASSES[name](model, "mix").attribute(inputs, 2, **kwargs)
    if name in ("neuron_deep_lift", "neuron_deep_lift_shap"):
        # Captum treats the product a * b as linear and loses completeness there; ours splits it exactly
        # (tests/attribution/methods/test_backprop_blocks.py shows Captum's gap), so here ours is checked
        # for completeness.
        _assert_neuron_deep_lift_is_complete(model, inputs, kwargs["baselines"], ours, name == "neuron_deep_lift_shap")
        return
    theirs = getattr(captum, CAPTUM_NAMES[name])(model, model.mix).attribute(inputs, 2, **kwargs)
    for a, b in zip(ours, theirs):
        if name == "neuron_gradient_shap":
            assert (a - b).abs().sum() < 0.05 * b.abs().sum()
        else:
            torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=1e-4)


def test_parity_with_captum_for_slice_selectors(cnn):
    captum = pytest.importorskip("captum.attr")
    x = torch.randn(3, 3, 8, 8)
    for selector in [(1, slice(0, 3), slice(2, 5)), (slice(None),)]:
        for ours_cls, theirs_cls in [
            (NeuronGradient, captum.NeuronGradient),
            (NeuronIntegratedGradients, captum.NeuronIntegratedGradients),
        ]:
            ours = ours_cls(cnn, "conv2").attribute(x, selector)
            theirs = theirs_cls(cnn, cnn.conv2).attribute(x, selector)
            torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-4)


def _assert_neuron_deep_lift_is_complete(model, inputs, baselines, attributions, distribution):
    """Summed over both inputs, the attributions are the unit's change from the baseline (the mean change
    over the rows of a baseline distribution)."""
    unit = lambda a, b: model.mix(a * b)[:, 2]  # noqa: E731
    if distribution:
        change = torch.stack([unit(*inputs) - unit(r0[None], r1[None]) for r0, r1 in zip(*baselines)]).mean(0)
    else:
        change = unit(*inputs) - unit(*baselines)
    total = sum(a.sum(1) for a in attributions)
    torch.testing.assert_close(total, change.detach(), atol=1e-5, rtol=1e-4)


def test_captum_deep_lift_shap_unpacks_a_bare_tensor_forward_argument_ours_does_not():
    captum = pytest.importorskip("captum.attr")
    model = seeded(_Product)
    inputs, scale = (torch.randn(3, 5), torch.randn(3, 5)), torch.tensor([[1.0], [2.0], [0.5]])
    dist = (torch.randn(2, 5), torch.randn(2, 5))
    with pytest.raises(TypeError, match="positional arguments"):  # Captum documents a bare tensor as valid
        captum.NeuronDeepLiftShap(model, model.mix).attribute(inputs, 2, dist, additional_forward_args=scale)
    bare = NeuronDeepLiftShap(model, "mix").attribute(inputs, 2, dist, additional_forward_args=scale)
    wrapped = NeuronDeepLiftShap(model, "mix").attribute(inputs, 2, dist, additional_forward_args=(scale,))
    for a, b in zip(bare, wrapped):
        torch.testing.assert_close(a, b)


def test_captum_raises_for_an_input_that_does_not_reach_the_layer_ours_gives_zeros(two_input):
    captum = pytest.importorskip("captum.attr")
    image, table = torch.randn(2, 1, 6, 6), torch.randn(2, 5)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        captum.NeuronGradient(two_input, two_input.conv).attribute((image, table), (0, 2, 3))
    grads = NeuronGradient(two_input, "conv").attribute((image, table), (0, 2, 3))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], torch.zeros_like(table))


def test_captum_trapezoid_rule_is_off_by_one_step_and_ours_is_exact(linear):
    captum = pytest.importorskip("captum.attr")
    x = torch.randn(2, 6)
    exact = linear.fc.weight.detach()[0] * x
    kwargs = {"n_steps": 4, "method": "riemann_trapezoid"}
    torch.testing.assert_close(NeuronIntegratedGradients(linear, "fc").attribute(x, 0, **kwargs), exact)
    torch.testing.assert_close(
        captum.NeuronIntegratedGradients(linear, linear.fc).attribute(x, 0, **kwargs), exact * 3 / 4
    )
    # Conductance defaults to the trapezoid rule: Captum's is (n - 1) / n of ours at every n_steps.
    mlp = seeded(MLP)
    xm = torch.randn(3, 6)
    ours = NeuronConductance(mlp, "fc1").attribute(xm, 3, target=1, n_steps=5)
    theirs = captum.NeuronConductance(mlp, mlp.fc1).attribute(xm, 3, target=1, n_steps=5)
    torch.testing.assert_close(theirs, ours * 4 / 5)


def test_captum_deep_lift_fails_on_a_reused_inplace_relu_where_ours_is_complete(cnn):
    captum = pytest.importorskip("captum.attr")
    x = torch.randn(3, 3, 8, 8)
    with pytest.raises(RuntimeError):
        captum.NeuronDeepLift(cnn, cnn.conv2).attribute(x, (5, 2, 3))
    NeuronDeepLift(cnn, "conv2").attribute(x, (5, 2, 3))  # completeness: see the oracle test above


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_integer_inputs_cannot_have_gradients_here_or_in_captum(name):
    captum = pytest.importorskip("captum.attr")
    text = seeded(Text)
    tokens = torch.randint(0, 20, (3, 7))
    kwargs = _kwargs(name, tokens.float())
    kwargs = {k: (v.long() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    with pytest.raises(TypeError, match=r"inputs\[0\]: gradient-based attribution needs a floating-point"):
        CLASSES[name](text, "emb").attribute(tokens, (2, 1), **kwargs)
    with pytest.raises(Exception):  # noqa: B017 - Captum fails in autograd or in the embedding lookup
        getattr(captum, CAPTUM_NAMES[name])(text, text.emb).attribute(tokens, (2, 1), **kwargs)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_bad_selectors_and_layers_raise_errors_that_name_them(name, cnn, mlp):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"neuron_selector: index 6 is out of range for output dimension 1"):
        _attribute(name, cnn, "conv2", x, (6, 0, 0))
    with pytest.raises(ValueError, match=r"neuron_selector: index 8 is out of range"):
        _attribute(name, mlp, "fc1", torch.randn(2, 6), 8)
    with pytest.raises(ValueError, match=r"neuron_selector: selects 2 output dimension\(s\)"):
        _attribute(name, cnn, "conv2", x, (1, 2))
    with pytest.raises(ValueError, match=r"neuron_selector: the callable must return a tensor of shape \(\d+,\)"):
        _attribute(name, cnn, "conv2", x, lambda out: out[:, 0, 0, :2])
    with pytest.raises(TypeError, match="neuron_selector: expected an int, a tuple of ints"):
        _attribute(name, cnn, "conv2", x, [1, 2, 3])
    with pytest.raises(ValueError, match="layer: Conv2d (did not run in the model's forward|ran 0 times)"):
        _attribute(name, cnn, nn.Conv2d(4, 6, 3), x, (1, 2, 3))
    with pytest.raises(ValueError, match="layer: no submodule named 'conv3'"):
        CLASSES[name](cnn, "conv3")


def test_conductance_refuses_slices_and_checks_its_arguments(cnn):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="neuron_selector: conductance needs one unit"):
        NeuronConductance(cnn, "conv2").attribute(x, (1, slice(0, 2), 3), target=0)
    with pytest.raises(ValueError, match="n_steps: the trapezoid rule needs at least 2 steps"):
        NeuronConductance(cnn, "conv2").attribute(x, (1, 2, 3), target=0, n_steps=1)
    with pytest.raises(ValueError, match="target: index 4 is out of range"):
        NeuronConductance(cnn, "conv2").attribute(x, (1, 2, 3), target=4)


# --------------------------------------------------------------------------- state


def _hooks(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


def _model_calls(name):
    """How often ``name`` calls the model in the test below: a dry run with a counting wrapper."""
    model, calls = seeded(SmallCNN), []

    def counting(x):
        calls.append(1)
        return model(x)

    _attribute(name, counting, model.conv2, torch.randn(2, 3, 8, 8), (1, 2, 3))
    return len(calls)


@pytest.mark.parametrize("raise_on_call", [None, 1, 2])
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_no_hooks_left_and_state_unchanged_also_when_the_model_raises(name, raise_on_call):
    model = seeded(SmallCNN)
    model.conv1.train()
    calls = []

    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            calls.append(1)
            if len(calls) == raise_on_call:
                raise RuntimeError("boom")
            return self.model(x)

    x = torch.randn(2, 3, 8, 8)
    before = (_hooks(model), [m.training for m in model.modules()], [p.grad for p in model.parameters()])
    modes = len(torch.overrides._get_current_function_mode_stack())
    if raise_on_call is None:
        _attribute(name, Exploding(), model.conv2, x, (1, 2, 3))
    elif raise_on_call > _model_calls(name):
        return  # single-pass methods: call 1 covers them
    else:
        with pytest.raises(RuntimeError, match="boom"):
            _attribute(name, Exploding(), model.conv2, x, (1, 2, 3))
    assert (_hooks(model), [m.training for m in model.modules()], [p.grad for p in model.parameters()]) == before
    assert len(torch.overrides._get_current_function_mode_stack()) == modes
    assert not x.requires_grad


def test_a_selector_that_returns_one_value_for_the_batch_is_applied_to_each_example():
    """Captum documents ``neuron_selector`` callables that return one value (``lambda x: x.sum()``)."""
    from attribution import NeuronGradient, NeuronIntegratedGradients

    model = seeded(SmallCNN)
    x = torch.rand(3, 3, 8, 8)

    def per_row(out):
        return out.flatten(1).sum(1)

    def whole(out):
        return out.sum()

    for cls, kwargs in ((NeuronGradient, {}), (NeuronIntegratedGradients, {"n_steps": 8})):
        expected = cls(model, model.conv2).attribute(x, neuron_selector=per_row, **kwargs)
        torch.testing.assert_close(cls(model, model.conv2).attribute(x, neuron_selector=whole, **kwargs), expected)
    one = x[:1]
    torch.testing.assert_close(
        NeuronGradient(model, model.conv2).attribute(one, neuron_selector=whole),
        NeuronGradient(model, model.conv2).attribute(one, neuron_selector=per_row),
    )


class _TwoTensorLayer(nn.Module):
    def forward(self, x):
        return torch.relu(x), torch.relu(-x)


class _TupleLayerModel(nn.Module):
    """A layer that returns two tensors, both used after it (Captum's multi-input module case)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.pair, self.fc2 = nn.Linear(3, 4), _TwoTensorLayer(), nn.Linear(8, 2)

    def forward(self, x):
        a, b = self.pair(self.fc1(x))
        return self.fc2(torch.cat([a, b], dim=1))


def test_a_layer_of_several_tensors_takes_a_callable_selector_that_picks_from_the_tuple():
    model, x = seeded(_TupleLayerModel), torch.randn(5, 3)
    unit = lambda outputs: outputs[1][:, 2]  # noqa: E731
    grads = NeuronGradient(model, model.pair).attribute(x, unit)
    with torch.enable_grad():
        leaf = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(torch.relu(-model.fc1(leaf))[:, 2].sum(), leaf)
    torch.testing.assert_close(grads, expected)
    conductance = NeuronConductance(model, model.pair).attribute(x, unit, target=1, n_steps=200)
    layer = LayerConductance(model, model.pair).attribute(x, target=1, n_steps=200)
    torch.testing.assert_close(conductance.sum(1), layer[1][:, 2], rtol=1e-2, atol=1e-3)  # two quadratures of a kink
    with pytest.raises(ValueError, match="neuron_selector: the layer gives 2 tensors; pick the unit with a callable"):
        NeuronGradient(model, model.pair).attribute(x, (2,))
