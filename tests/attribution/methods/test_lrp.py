"""LRP and LayerLRP: conservation layer by layer, closed forms, hand-computed rules, parity with Captum
where Captum works, models where it does not (functional, in-place, reused, residual), no trace left."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from attribution import (
    LRP,
    Alpha1_Beta0_Rule,
    ArgumentError,
    ArgumentTypeError,
    EpsilonRule,
    GammaRule,
    IdentityRule,
    InputXGradient,
    LayerLRP,
    registry,
)
from attribution.methods.lrp import DEFAULT_RULE_TYPES
from tests.models import SmallCNN, seeded


class CNN(nn.Module):
    """Conv, batch norm, max and average pooling, a functional flatten: every module once (Captum's LRP works)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn, self.relu1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.pool1, self.conv2, self.relu2 = nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
        self.pool2, self.fc = nn.AdaptiveAvgPool2d(2), nn.Linear(24, 5)

    def forward(self, x):
        h = self.pool1(self.relu1(self.bn(self.conv1(x))))
        return self.fc(self.pool2(self.relu2(self.conv2(h))).flatten(1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8)
        self.tanh, self.fc3, self.fc4 = nn.Tanh(), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc4(self.fc3(self.tanh(self.fc2(self.relu(self.fc1(x))))))


def _cnn(zero_bias=False):
    torch.manual_seed(0)
    model = CNN().double().eval()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    for m in model.modules() if zero_bias else ():  # LRP conserves relevance where no bias absorbs any
        for name in ("bias", "running_mean"):
            if getattr(m, name, None) is not None:
                getattr(m, name).data.zero_()
    return model


def _mlp(zero_bias=False):
    torch.manual_seed(0)
    model = MLP().double().eval()
    for m in model.modules() if zero_bias else ():
        if isinstance(m, nn.Linear):
            m.bias.data.zero_()
    return model


def _resnet(zero_bias=True):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).double().eval()
    nn.init.zeros_(model.fc.bias)  # random init leaves no other bias (batch norms start at mean 0, beta 0)
    return model


def _close(ours, theirs, rtol=1e-9):
    ours, theirs = ours.detach(), theirs.detach()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=rtol * float(theirs.abs().max()) + 1e-300)


# ---------------------------------------------------------------- conservation and closed forms


def _cuts(model):
    """Modules whose output (or input) carries all the relevance: a cut through the network."""
    if isinstance(model, CNN):
        return [model.conv1, model.bn, model.pool1, model.conv2, model.pool2, model.fc]
    if isinstance(model, MLP):
        return [model.fc1, model.fc2, model.tanh, model.fc3, model.fc4]
    return [model.conv1, model.bn1, model.maxpool, *model.layer1, *model.layer2, model.layer3, model.layer4]


@pytest.mark.parametrize(
    "build, shape, epsilon",
    [
        (_cnn, (3, 8, 8), 0.0),
        (_cnn, (3, 8, 8), 1e-9),
        (_mlp, (6,), 0.0),
        (_mlp, (6,), 1e-9),
        (_resnet, (3, 32, 32), 0.0),
    ],
)
def test_relevance_is_conserved_layer_by_layer(build, shape, epsilon):
    model = build(zero_bias=True)
    for m in model.modules():
        if isinstance(m, DEFAULT_RULE_TYPES):
            m.rule = EpsilonRule(epsilon)
    x = torch.rand(2 if build is not _resnet else 1, *shape, dtype=torch.float64)
    output = model(x)[:, 1].detach()
    relevance, delta = LRP(model).attribute(x, target=1, return_convergence_delta=True)
    tolerance = 1e-9 * float(output.abs().max()) + 20 * epsilon  # each layer's stabiliser absorbs ~epsilon
    _close(relevance.sum((1, 2, 3) if x.dim() == 4 else 1), output, rtol=tolerance / float(output.abs().max()))
    assert delta.abs().max() <= tolerance
    layers = _cuts(model)
    for to_input in (False, True):
        per_layer, deltas = LayerLRP(model, layers).attribute(
            x, target=1, attribute_to_layer_input=to_input, return_convergence_delta=True
        )
        assert len(per_layer) == len(deltas) == len(layers)
        for layer_delta in deltas:
            assert layer_delta.abs().max() <= tolerance


def test_a_linear_model_in_closed_form():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    model.rule = EpsilonRule(0.0)
    relevance, delta = LRP(model).attribute(x, target=2, return_convergence_delta=True)
    _close(relevance, x * model.weight[2].detach())  # the bias keeps its own share ...
    _close(delta, model.bias[2].detach().expand(4))  # ... which is what the delta reports
    model.rule = EpsilonRule(0.5)  # z / (z + 0.5 sign z) of it
    z = model(x)[:, 2].detach()
    _close(LRP(model).attribute(x, target=2), x * model.weight[2].detach() * (z / (z + 0.5 * z.sign()))[:, None])


def _tiny(bias=(0.0, 0.0)):
    """2 -> 2 -> ReLU -> 1 with weights small enough to follow by hand."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, -1.0]]))
        model[0].bias.copy_(torch.tensor(bias))
        model[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
    return model


@pytest.mark.parametrize(
    "rules, bias, expected",
    [
        # x = (3, 1): hidden z = (2, 5), output 7.  Gamma 1: output layer through (2, 2), z' = 14, hidden
        # relevance (2, 5); hidden layer through [[2, -1], [4, -1]], z' = (5, 11):
        # R_x = x * W'^T (2/5, 5/11) = (3 * (4/5 + 20/11), -(2/5 + 5/11)) = (86.4, -9.4) / 11.
        ((GammaRule(gamma=1.0), GammaRule(gamma=1.0)), (0.0, 0.0), [86.4 / 11, -9.4 / 11]),
        # Alpha1-beta0: hidden layer through [[1, 0], [2, 0]], z' = (3, 6): R_x = (3 * (2/3 + 2 * 5/6), 0).
        ((Alpha1_Beta0_Rule(), Alpha1_Beta0_Rule()), (0.0, 0.0), [7.0, 0.0]),
        # Bias (1, 0): z = (3, 5), output 8; hidden relevance (3, 5); with the bias set to zero the hidden
        # layer divides by z' = (5, 11): R_x = (3 * (2 * 3/5 + 4 * 5/11), -(3/5 + 5/11)) = (99.6, -11.6) / 11.
        ((GammaRule(gamma=1.0, set_bias_to_zero=True), GammaRule(gamma=1.0)), (1.0, 0.0), [99.6 / 11, -11.6 / 11]),
    ],
    ids=["gamma", "alpha1_beta0", "gamma_without_bias"],
)
def test_gamma_and_alpha1_beta0_rules_by_hand(rules, bias, expected):
    model = _tiny(bias)
    model[0].rule, model[2].rule = rules
    x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    _close(LRP(model).attribute(x), torch.tensor([expected], dtype=torch.float64), rtol=1e-8)  # epsilon 1e-9


def test_identity_rule_passes_the_relevance_of_a_same_shaped_layer():
    """fc2 -> tanh -> fc3 (identity): the relevance at fc2's output is fc3's (Captum's hooks lose it there)."""
    model = _mlp()
    model.fc3.rule = IdentityRule()
    x = torch.randn(3, 6, dtype=torch.float64)
    at_fc2, at_output = LayerLRP(model, [model.fc2, model.fc3]).attribute(x, target=0)
    _close(LayerLRP(model, model.fc3).attribute(x, target=0, attribute_to_layer_input=True), at_output)
    _close(at_fc2, at_output)


# ---------------------------------------------------------------- parity with Captum where Captum works

PARITY = {
    "cnn_default": (_cnn, {}),
    "cnn_epsilon": (_cnn, {"conv1": ("EpsilonRule", {"epsilon": 0.1}), "fc": ("EpsilonRule", {"epsilon": 1.0})}),
    "cnn_gamma": (_cnn, {"conv1": ("GammaRule", {}), "conv2": ("GammaRule", {"gamma": 1.0, "set_bias_to_zero": True})}),
    "cnn_alpha1_beta0": (
        _cnn,
        {"conv1": ("Alpha1_Beta0_Rule", {}), "conv2": ("Alpha1_Beta0_Rule", {"set_bias_to_zero": True})},
    ),
    "cnn_identity_bn": (_cnn, {"bn": ("IdentityRule", {})}),
    "mlp_default": (_mlp, {}),
    "mlp_mixed": (
        _mlp,
        {
            "fc1": ("GammaRule", {"gamma": 0.5}),
            "fc2": ("Alpha1_Beta0_Rule", {}),
            "fc3": ("EpsilonRule", {"epsilon": 0.3}),
        },
    ),
}


def _set_rules(model, rules, module):
    for name, (rule, kwargs) in rules.items():
        model.get_submodule(name).rule = getattr(module, rule)(**kwargs)


@pytest.mark.parametrize("case", list(PARITY))
def test_parity_with_captum(case):
    captum = pytest.importorskip("captum.attr")
    from captum.attr._utils import lrp_rules

    import attribution

    build, rules = PARITY[case]
    model, theirs = build(), build()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) if build is _cnn else torch.randn(2, 6, dtype=torch.float64)
    _set_rules(model, rules, attribution)
    _set_rules(theirs, rules, lrp_rules)
    ours_attr, ours_delta = LRP(model).attribute(x, target=[0, 2], return_convergence_delta=True)
    their_attr, their_delta = captum.LRP(theirs).attribute(x, target=[0, 2], return_convergence_delta=True)
    _close(ours_attr, their_attr)
    _close(ours_delta, their_delta.detach())
    ruled = [name for name, m in theirs.named_children() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    for to_input in (False, True):
        # Captum's IdentityRule records no relevance at the layer's input
        names = [name for name in ruled if not (to_input and rules.get(name, ("",))[0] == "IdentityRule")]
        _set_rules(theirs, rules, lrp_rules)  # Captum deletes every rule after a call
        their_layers = captum.LayerLRP(theirs, [theirs.get_submodule(name) for name in names]).attribute(
            x, target=[0, 2], attribute_to_layer_input=to_input
        )
        ours = LayerLRP(model, names).attribute(x, target=[0, 2], attribute_to_layer_input=to_input)
        for our_layer, their_layer in zip(ours, their_layers):
            _close(our_layer, their_layer)
    _set_rules(theirs, rules, lrp_rules)  # Captum's own rule objects work with ours too, on copies of the weights
    weights = copy.deepcopy(theirs.state_dict())
    _close(LRP(theirs).attribute(x, target=[0, 2]), ours_attr)
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in weights.items())


# ---------------------------------------------------------------- where Captum breaks


class Functional(nn.Module):
    """Activations as functions and in place, a linear layer used twice, a residual addition."""

    def __init__(self, inplace):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.inplace = inplace

    def forward(self, x):
        h = self.fc1(x)
        h = h.tanh_() if self.inplace else torch.tanh(h)
        h = F.gelu(self.fc2(h)) + h
        h = F.hardtanh(self.fc2(h), inplace=self.inplace)  # fc2 again
        return self.out(F.relu(h, inplace=self.inplace))


def test_functional_inplace_reused_and_residual():
    torch.manual_seed(0)
    model = Functional(inplace=False).double()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.bias.data.zero_()
    x = torch.randn(4, 6, dtype=torch.float64)
    relevance, delta = LRP(model).attribute(x, target=1, return_convergence_delta=True)
    assert delta.abs().max() < 1e-6 * model(x)[:, 1].abs().max()  # every activation passes relevance on
    model.inplace = True
    _close(LRP(model).attribute(x, target=1), relevance)
    with pytest.raises(ArgumentError, match=r"layer: Linear ran 2 times"):
        LayerLRP(model, model.fc2).attribute(x, target=1)


def test_reused_inplace_relu_gives_gradient_times_input():
    """SmallCNN runs one in-place ReLU module twice; LRP-0 of a ReLU net is gradient x input."""
    model = seeded(SmallCNN).double()
    for m in model.modules():
        if isinstance(m, DEFAULT_RULE_TYPES):
            m.rule = EpsilonRule(0.0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    _close(LRP(model).attribute(x, target=1), InputXGradient(model).attribute(x, target=1))


def test_resnet_residual_relevance_splits_in_proportion_to_the_summands():
    model = _resnet()
    block = model.layer2[0]  # out = relu(bn2(...) + downsample(x))
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    seen = {}
    handles = [m.register_forward_hook(lambda m, a, out, k=k: seen.__setitem__(k, out.clone())) for k, m in
               (("branch", block.bn2), ("block", block))]  # fmt: skip
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    branch, shortcut, total = LayerLRP(model, [block.bn2, block.downsample, block]).attribute(x, target=3)
    _close(branch + shortcut, total)
    active = seen["block"] > 0  # where the sum is the block's output: R_branch / R_total = branch / sum
    _close((branch * seen["block"])[active], (seen["branch"] * total)[active])
    captum = pytest.importorskip("captum.attr")
    _, their_delta = captum.LRP(_resnet()).attribute(x, target=3, return_convergence_delta=True)
    assert their_delta.abs().max() > 100 * model(x)[:, 3].abs().max()  # Captum copies relevance to both summands


def test_several_inputs_share_the_relevance():
    """``model(x, add)`` with ``x + add`` inside: each input gets its share (Captum gives both the whole)."""
    model = _mlp(zero_bias=True)
    x = torch.randn(2, 6, dtype=torch.float64)
    forward = lambda a, b: model(a + b)  # noqa: E731
    (first, second), delta = LRP(forward).attribute((x, 3 * x), target=0, return_convergence_delta=True)
    _close(second, 3 * first)
    assert delta.abs().max() < 1e-8


# ---------------------------------------------------------------- state, options, errors


def _state(model):
    return {
        "attributes": {name: sorted(vars(m)) for name, m in model.named_modules()},
        "rules": {name: (m.rule, dict(vars(m.rule))) for name, m in model.named_modules() if hasattr(m, "rule")},
        "training": {name: m.training for name, m in model.named_modules()},
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
        "modes": len(torch.overrides._get_current_function_mode_stack()),
    }


def test_the_model_is_left_exactly_as_it_was():
    model = _cnn()
    model.bn.train()  # would update its running statistics in a forward
    _set_rules(model, PARITY["cnn_gamma"][1], __import__("attribution"))
    before, weights = _state(model), copy.deepcopy(model.state_dict())
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    first = LRP(model).attribute(x, target=1)
    LayerLRP(model, [model.conv1, model.fc]).attribute(x, target=1, attribute_to_layer_input=True)
    assert _state(model) == before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    _close(LRP(model).attribute(x, target=1), first)  # the rules are still there (Captum deletes them)
    model.bn.eval()  # batch norm ran on its running statistics
    _close(LRP(model).attribute(x, target=1), first)
    with torch.inference_mode():  # as inside Lightning's validate
        _close(LRP(model).attribute(x.clone(), target=1), first)


def test_batch_rows_are_independent_and_outputs_have_captums_structure(capsys):
    model = _cnn()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    together = LRP(model).attribute(x, target=[0, 1, 2], verbose=True)
    assert "Applied EpsilonRule(epsilon=1e-09) on layer conv1" in capsys.readouterr().out
    _close(together[1:2], LRP(model).attribute(x[1:2], target=1))
    single = LayerLRP(model, "conv2").attribute(x, target=0)
    assert isinstance(single, torch.Tensor) and single.shape == (3, 6, 4, 4)
    (listed,), (delta,) = LayerLRP(model, ["conv2"]).attribute(x, target=0, return_convergence_delta=True)
    _close(listed, single)
    _close(delta, LRP(model).compute_convergence_delta(single, model(x)[:, 0].detach()))
    record = registry.record("lrp")
    assert record.returns_delta and record.takes_target and not record.needs_layer
    assert registry.record("layer_lrp").attributes_to_layer and registry.record("layer_lrp").returns_delta


def test_bad_arguments_name_themselves():
    model = _mlp()
    model.fc1.rule = 1
    with pytest.raises(ArgumentTypeError, match=r"rule: fc1 \(Linear\) has rule int 1"):
        LRP(model)
    with pytest.raises(TypeError):
        LayerLRP(model, model.fc2)
    model.fc1.rule = None
    model.fc4.rule = IdentityRule()
    with pytest.raises(ArgumentError, match="rule: IdentityRule needs a module whose input and output have the same"):
        LRP(model).attribute(torch.randn(2, 6, dtype=torch.float64), target=0)
    model.fc4.rule = None
    wrapped = nn.Sequential(model)
    wrapped[0].rule = EpsilonRule()
    with pytest.raises(ArgumentError, match=r"rule: 0 \(MLP\) has submodules"):
        LRP(wrapped)
    del model.rule
    with pytest.raises(ArgumentTypeError, match=r"inputs\[0\]: gradient-based attribution needs a floating-point"):
        LRP(model).attribute(torch.ones(2, 6, dtype=torch.long), target=0)
    with pytest.raises(ArgumentError, match=r"attributions: expected a batch of 3"):
        LRP(model).compute_convergence_delta(torch.ones(2, 6), torch.ones(3))
