"""The published LRP rules and composites: each rule against its closed form on a two-layer network, parity
with Zennit (the reference LRP library) on VGG-11 and ResNet-18, conservation on VGG, ResNet with batch-norm
statistics, a squeeze-and-excitation block, MobileNetV3 and three ViTs, batch norm folded without touching
the model, relevance for zero-valued inputs, the treatments of ops without rules, and clear errors."""

import copy
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import SqueezeExcitation

from attribution import ArgumentError, ArgumentTypeError
from attribution.lrp import (
    LRP,
    AlphaBeta,
    Composite,
    Epsilon,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    Flat,
    Gamma,
    LayerLRP,
    Norm,
    Pass,
    WSquare,
    ZBox,
    ZPlus,
)

# ---------------------------------------------------------------- closed forms


def _two_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1))
    return model.eval()


def _upper_relevance(model, x):
    """LRP-0 on the top layer, started from its output ``z``: ``a_j w_j z / z``, what reaches the first
    layer's outputs (its ReLU passes relevance unchanged)."""
    return torch.relu(model[0](x)) * model[2].weight[0]


def _stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0)


def _closed_form(rule, model, x):
    """The first layer's input relevance by the published formula, written out with matrices."""
    w, b = model[0].weight.detach(), model[0].bias.detach()
    relevance = _upper_relevance(model, x).detach()  # R at the first layer's outputs (after its ReLU: same)
    up, down = x.clamp(min=0), x.clamp(max=0)
    wp, wn, bp, bn = w.clamp(min=0), w.clamp(max=0), b.clamp(min=0), b.clamp(max=0)
    if isinstance(rule, Epsilon):
        z = x @ w.T + b
        return x * ((relevance / _stab(z, rule.epsilon)) @ w)
    if isinstance(rule, AlphaBeta):
        zp = up @ wp.T + bp + down @ wn.T
        zn = up @ wn.T + bn + down @ wp.T
        positive = up * ((relevance / _stab(zp, 1e-6)) @ wp) + down * ((relevance / _stab(zp, 1e-6)) @ wn)
        negative = up * ((relevance / _stab(zn, 1e-6)) @ wn) + down * ((relevance / _stab(zn, 1e-6)) @ wp)
        return rule.alpha * positive - rule.beta * negative
    if isinstance(rule, Gamma):
        g = rule.gamma
        z = x @ w.T + b
        zp = up @ (w + g * wp).T + (b + g * bp) + down @ (w + g * wn).T
        zn = up @ (w + g * wn).T + (b + g * bn) + down @ (w + g * wp).T
        sp, sn = relevance * (z > 0) / _stab(zp, 1e-6), relevance * (z < 0) / _stab(zn, 1e-6)
        return up * (sp @ (w + g * wp) + sn @ (w + g * wn)) + down * (sp @ (w + g * wn) + sn @ (w + g * wp))
    if isinstance(rule, ZBox):
        low, high = torch.full_like(x, rule.low), torch.full_like(x, rule.high)
        z = x @ w.T + b - (low @ wp.T + bp) - (high @ wn.T + bn)
        s = relevance / _stab(z, 1e-6)
        return x * (s @ w) - low * (s @ wp) - high * (s @ wn)
    if isinstance(rule, Flat):
        ones = torch.ones_like(w)
        return (relevance / _stab(torch.ones_like(x) @ ones.T, 1e-6)) @ ones
    if isinstance(rule, WSquare):
        return (relevance / _stab(torch.ones_like(x) @ (w**2).T + b**2, 1e-6)) @ w**2
    raise AssertionError(rule)


@pytest.mark.parametrize(
    "rule",
    [Epsilon(0.0), Epsilon(0.1), ZPlus(), AlphaBeta(2, 1), Gamma(0.25), ZBox(-3.0, 3.0), Flat(), WSquare()],
    ids=repr,
)
def test_each_rule_matches_its_closed_form_on_signed_inputs(rule):
    model = _two_layers()
    x = torch.randn(6, 5) * 2  # signed: where published rules and Captum's differ
    composite = Composite(name_map={"0": rule, "2": Epsilon(0.0)})
    ours = LRP(model).attribute(x, target=0, composite=composite)
    expected = _closed_form(rule, model, x)
    assert expected.abs().sum() > 0 and expected.std() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


def test_z_plus_gives_only_positive_relevance_for_positive_relevance_on_signed_inputs():
    model = _two_layers()
    x = torch.randn(64, 5)
    composite = Composite(name_map={"0": ZPlus(), "2": Epsilon(0.0)})
    hidden_relevance = _upper_relevance(model, x).detach()
    ours = LRP(model).attribute(x, target=0, composite=composite)
    positive_rows = (hidden_relevance >= 0).all(1)
    assert positive_rows.sum() > 5
    assert (ours[positive_rows] >= -1e-7).all()  # Captum's alpha1-beta0 leaves many negative here


def test_rules_with_zeroed_biases_conserve_relevance_exactly():
    """Positive inputs (as after a ReLU): every unit has positive and negative contributions to share out; a
    unit without one of them loses its relevance under z-plus and alpha-beta, by their definition."""
    model = _two_layers()
    x = torch.rand(8, 5)
    for rule in (Epsilon(0.0, zero_params="bias"), ZPlus(zero_params="bias"), AlphaBeta(zero_params="bias")):
        composite = Composite(name_map={"0": rule, "2": Epsilon(0.0, zero_params="bias")})
        relevance, delta = LRP(model).attribute(x, target=0, composite=composite, return_convergence_delta=True)
        assert relevance.std() > 0
        torch.testing.assert_close(delta, torch.zeros_like(delta), rtol=0, atol=1e-4)
        torch.testing.assert_close(relevance.sum(1), model(x)[:, 0].detach(), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- zennit parity


def _zennit_relevance(model, composite, x, target):
    from zennit.attribution import Gradient

    model = copy.deepcopy(model)  # zennit's canonizers leave attributes behind on the modules they touch
    with Gradient(model=model, composite=composite) as attributor:
        output = model(x)
        start = torch.zeros_like(output)
        rows = torch.arange(len(x))
        start[rows, target] = output[rows, target].detach()  # zennit starts from the one-hot vector
        _, relevance = attributor(x, start)
    return relevance


def _with_statistics(model, shape):
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(*shape))
    return model.eval()


def _relative_l2(ours, theirs):
    return float((ours - theirs).norm() / theirs.norm())


ZENNIT_COMPOSITES = {
    "epsilon_plus": (EpsilonPlus, "EpsilonPlus", {}),
    "epsilon_plus_flat": (EpsilonPlusFlat, "EpsilonPlusFlat", {}),
    "epsilon_alpha2_beta1": (EpsilonAlpha2Beta1, "EpsilonAlpha2Beta1", {}),
    "epsilon_alpha2_beta1_flat": (EpsilonAlpha2Beta1Flat, "EpsilonAlpha2Beta1Flat", {}),
    "epsilon_gamma_box": (EpsilonGammaBox, "EpsilonGammaBox", {"low": -3.0, "high": 3.0}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZENNIT_COMPOSITES))
@pytest.mark.parametrize("architecture", ["vgg11", "vgg11_bn", "resnet18"])
def test_composites_match_zennit_on_vgg_and_resnet(architecture, name):
    pytest.importorskip("zennit")
    from zennit import composites
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    model = _with_statistics(getattr(torchvision.models, architecture)(num_classes=10), (8, 3, 64, 64))
    torch.manual_seed(2)
    x = torch.randn(4, 3, 64, 64)
    target = model(x).argmax(1)
    ours_cls, theirs_name, kwargs = ZENNIT_COMPOSITES[name]
    canonizer = ResNetCanonizer() if architecture.startswith("resnet") else VGGCanonizer()
    theirs = _zennit_relevance(model, getattr(composites, theirs_name)(canonizers=[canonizer], **kwargs), x, target)
    ours = LRP(model).attribute(x, target=target, composite=ours_cls(**kwargs) if kwargs else name)
    assert theirs.abs().sum() > 0
    assert _relative_l2(ours, theirs) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["vgg11_bn", "resnet18"])
def test_epsilon_everywhere_matches_zennit_with_batch_norm_folded(architecture):
    """The epsilon rule runs in its forward form (no re-forward); a batch norm after a convolution rescales
    its denominator, which must equal re-forwarding the merged layer, and Zennit's."""
    pytest.importorskip("zennit")
    from zennit import composites
    from zennit import rules as zennit_rules
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    from zennit.types import Linear as ZennitLinear

    from attribution.methods.lrp_rules import AVERAGE_POOLS, BATCH_NORMS, LINEAR_LAYERS

    model = _with_statistics(getattr(torchvision.models, architecture)(num_classes=10), (8, 3, 64, 64))
    torch.manual_seed(2)
    x = torch.randn(4, 3, 64, 64)
    target = model(x).argmax(1)
    canonizer = ResNetCanonizer() if architecture.startswith("resnet") else VGGCanonizer()
    their_map = composites.layer_map_base() + [(ZennitLinear, zennit_rules.Epsilon(0.01))]
    theirs = _zennit_relevance(model, composites.LayerMapComposite(their_map, canonizers=[canonizer]), x, target)
    ours_map = [(AVERAGE_POOLS, Norm()), (BATCH_NORMS, Pass()), (LINEAR_LAYERS, Epsilon(0.01))]
    ours = LRP(model).attribute(x, target=target, composite=Composite(layer_map=ours_map))
    # zero_params (here naming no parameter) sends epsilon through the rule that re-forwards the folded layer
    refolded_map = [(AVERAGE_POOLS, Norm()), (BATCH_NORMS, Pass()), (LINEAR_LAYERS, Epsilon(0.01, zero_params="x"))]
    refolded = LRP(model).attribute(x, target=target, composite=Composite(layer_map=refolded_map))
    assert _relative_l2(ours, refolded) <= 1e-5  # the forward form equals re-forwarding the folded layer
    # Zennit's canonized forward runs the merged weights, whose rounding the epsilon rule's small denominators
    # amplify (the named composites, epsilon on dense layers only, agree to 5e-6)
    assert _relative_l2(ours, theirs) <= 1e-3


@pytest.mark.parametrize(
    "rule_name, kwargs",
    [
        ("Epsilon", {"epsilon": 0.1}),
        ("Gamma", {"gamma": 0.5}),
        ("AlphaBeta", {"alpha": 2.0, "beta": 1.0}),
        ("ZPlus", {}),
        ("ZBox", {"low": -2.0, "high": 2.0}),
        ("Flat", {}),
        ("WSquare", {}),
        ("Norm", {}),
    ],
)
def test_single_rules_match_zennit_on_a_small_cnn(rule_name, kwargs):
    pytest.importorskip("zennit")
    from zennit import rules as zennit_rules
    from zennit.composites import NameMapComposite

    import attribution.lrp as ours_lrp

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 4),
    ).eval()
    x = torch.randn(3, 3, 8, 8)
    target = torch.tensor([0, 1, 3])
    where = {"Norm": ["2"], "ZBox": ["0"], "Flat": ["0"], "WSquare": ["0"]}.get(rule_name, ["0", "3"])
    rest = [name for name in ("0", "2", "3", "6") if name not in where]
    their_map = [
        (where, getattr(zennit_rules, rule_name)(**kwargs)),
        (rest, zennit_rules.Epsilon(1e-6)),
        (["1", "4"], zennit_rules.Pass()),  # zennit's composites pass relevance through activations, as we do
    ]
    theirs = _zennit_relevance(model, NameMapComposite(their_map), x, target)
    ours_map = {name: getattr(ours_lrp, rule_name)(**kwargs) for name in where} | {n: Epsilon(1e-6) for n in rest}
    ours = LRP(model).attribute(x, target=target, composite=Composite(name_map=ours_map))
    assert _relative_l2(ours, theirs) <= 1e-5


def test_flat_on_the_first_layer_gives_zero_valued_pixels_relevance_through_a_flatten():
    """MNIST-like inputs are mostly exactly 0: a flat first layer must still reach them, as in Zennit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(4, 1, 4, 4) * (torch.rand(4, 1, 4, 4) > 0.6)
    relevance, delta = LRP(model).attribute(x, target=1, composite=EpsilonPlusFlat(), return_convergence_delta=True)
    zeros = x == 0
    assert zeros.sum() > 10 and (relevance[zeros] != 0).all()
    hidden = torch.relu(model[1](x.flatten(1)))
    top = (hidden @ model[3].weight[1]).detach()  # epsilon on the top: its bias absorbs its share
    torch.testing.assert_close(relevance.flatten(1).sum(1), top, rtol=1e-4, atol=1e-5)
    pytest.importorskip("zennit")
    from zennit.composites import EpsilonPlusFlat as TheirEpsilonPlusFlat

    theirs = _zennit_relevance(model, TheirEpsilonPlusFlat(), x, torch.ones(4, dtype=torch.long))
    assert _relative_l2(relevance, theirs) <= 1e-5


def test_flat_on_a_layer_inside_the_model_warns_what_it_drops():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6)
    with pytest.warns(UserWarning, match="input is computed in the model"):
        LRP(model).attribute(x, target=0, composite=Composite(name_map={"2": Flat()}))


# ---------------------------------------------------------------- conservation


def _relative_delta(model, x, composite, target=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relevance, delta = LRP(model).attribute(x, target=target, composite=composite, return_convergence_delta=True)
    assert torch.isfinite(relevance).all() and relevance.std() > 0
    output = model(x)[:, target].detach()
    torch.testing.assert_close(delta, output - relevance.flatten(1).sum(1))  # the delta is what it says
    return float(delta.abs().max() / output.abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["vgg11", "vgg11_bn", "resnet18"])
def test_relevance_is_conserved_on_vgg_and_resnet_with_batch_norm_statistics(architecture):
    model = _with_statistics(getattr(torchvision.models, architecture)(num_classes=10), (8, 3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    assert _relative_delta(model, x, EpsilonPlus(zero_params="bias")) < 1e-3
    assert _relative_delta(model, x, EpsilonPlusFlat(zero_params="bias")) < 1e-3


def test_gamma_on_resnet_with_batch_norm_statistics_stays_bounded():
    """The issue's blow-up: gamma without output-sign masking gave |R| 1e4 times the logit on ResNet-18."""
    model = _with_statistics(torchvision.models.resnet18(num_classes=10), (8, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    relevance = LRP(model).attribute(x, target=0, composite=EpsilonGammaBox(-3.0, 3.0))
    logit = model(x)[:, 0].detach().abs()
    assert (relevance.flatten(1).abs().sum(1) < 100 * logit).all()


class _SqueezeExcitationNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Hardswish()
        self.se = SqueezeExcitation(8, 4, scale_activation=nn.Hardsigmoid)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(self.se(self.act(self.bn(self.conv(x))))).flatten(1))


def test_a_squeeze_and_excitation_gate_is_held_constant_and_relevance_conserved():
    model = _with_statistics(_SqueezeExcitationNet(), (8, 3, 8, 8))
    x = torch.randn(4, 3, 8, 8)
    with pytest.warns(UserWarning, match="gate"):
        LRP(model).attribute(x, target=0, composite=EpsilonPlus())
    assert _relative_delta(model, x, EpsilonPlus(zero_params="bias")) < 1e-3


def test_mobilenet_v3_conserves_relevance_once_nothing_absorbs_it():
    """MobileNetV3 with batch-norm statistics (depthwise convolutions, hardswish, squeeze-and-excitation gates,
    residual sums), with every bias and batch-norm shift at 0 so that no parameter absorbs relevance: gamma
    conserves it; z-plus loses what reaches units without a positive contribution, by its definition."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.momentum = None  # running statistics that are the batches' averages
    model = _with_statistics(model, (16, 3, 32, 32))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    x = torch.randn(4, 3, 32, 32)
    assert _relative_delta(model, x, EpsilonGammaBox(-4.0, 4.0)) < 1e-4
    assert _relative_delta(model, x, EpsilonPlus()) < 0.05


def _zero_tokens(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("pos_embed", "cls_token", "class_token", "position_embeddings")):
                p.zero_()  # parameters added to the tokens absorb relevance, as biases do
    return model


def _vits():
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")

    class HuggingFace(nn.Module):
        def __init__(self):
            super().__init__()
            config = transformers.ViTConfig(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                num_labels=10,
            )
            self.vit = transformers.ViTForImageClassification(config)

        def forward(self, x):
            return self.vit(pixel_values=x).logits

    return {
        "timm": lambda: timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
        ),
        "torchvision": lambda: torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
        ),
        "hugging_face": HuggingFace,
    }


@pytest.mark.parametrize("library", ["timm", "torchvision", "hugging_face"])
def test_vision_transformers_conserve_relevance_and_warn_how_attention_is_treated(library):
    torch.manual_seed(0)
    model = _zero_tokens(_vits()[library]().eval())
    head = {"timm": "head", "torchvision": "heads.head", "hugging_face": "vit.classifier"}[library]
    nn.init.normal_(model.get_submodule(head).weight)  # heads start at 0 or 0.02: outputs far below the stabiliser
    x = torch.randn(3, 3, 32, 32)
    with pytest.warns(UserWarning) as caught:
        LRP(model).attribute(x, target=0, composite=EpsilonPlus())
    message = " ".join(str(w.message) for w in caught)
    assert "norms pass relevance unchanged" in message and "attention weights are held constant" in message
    assert _relative_delta(model, x, EpsilonPlus(zero_params="bias")) < 2e-2


# ---------------------------------------------------------------- the model is left alone


def test_folding_batch_norm_leaves_the_model_bit_identical():
    model = _with_statistics(torchvision.models.resnet18(num_classes=10), (8, 3, 32, 32))
    model.layer1.train()  # a mixed mode must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    LRP(model).attribute(torch.randn(2, 3, 32, 32), target=0, composite="epsilon_plus_flat")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(isinstance(p, nn.Parameter) and p.grad is None for p in model.parameters())
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks


def test_a_folded_batch_norm_gives_what_an_explicitly_merged_model_gives():
    model = _with_statistics(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2)),
        (8, 3, 8, 8),
    )
    merged = copy.deepcopy(model)
    conv, norm = merged[0], merged[1]
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    with torch.no_grad():
        conv.weight.mul_(scale[:, None, None, None])
        conv.bias.copy_((conv.bias - norm.running_mean) * scale + norm.bias)
    merged[1] = nn.Identity()
    x = torch.randn(3, 3, 8, 8)
    ours = LRP(model).attribute(x, target=1, composite=EpsilonAlpha2Beta1())
    explicit = LRP(merged).attribute(x, target=1, composite=EpsilonAlpha2Beta1())
    torch.testing.assert_close(ours, explicit, rtol=1e-4, atol=1e-6)


def test_a_module_rule_wins_over_the_composite_and_layer_lrp_takes_composites():
    model = _two_layers()
    x = torch.randn(4, 5)
    model[0].rule = Epsilon(0.0)
    try:
        with_own = LRP(model).attribute(x, target=0, composite=Composite(name_map={"0": ZPlus()}))
    finally:
        del model[0].rule
    torch.testing.assert_close(
        with_own, LRP(model).attribute(x, target=0, composite=Composite(name_map={"0": Epsilon(0.0)}))
    )
    layer = LayerLRP(model, model[1]).attribute(x, target=0, composite=EpsilonPlus())
    torch.testing.assert_close(layer.sum(1), model(x)[:, 0].detach() - model[2].bias.detach(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- errors


def test_bad_composites_and_rules_are_refused_with_the_argument_named():
    model = _two_layers()
    x = torch.randn(2, 5)
    with pytest.raises(ArgumentError, match="composite: expected one of"):
        LRP(model).attribute(x, target=0, composite="epsilon_plus_flatt")
    with pytest.raises(ArgumentError, match="needs the inputs' bounds"):
        LRP(model).attribute(x, target=0, composite="epsilon_gamma_box")
    with pytest.raises(ArgumentTypeError, match="composite"):
        LRP(model).attribute(x, target=0, composite=3)
    with pytest.raises(ArgumentError, match="alpha - beta = 1"):
        AlphaBeta(2.0, 2.0)
    with pytest.raises(ArgumentError, match="name_map"):
        LRP(model).attribute(x, target=0, composite=Composite(name_map={"fc9": Epsilon()}))
    with pytest.raises(ArgumentTypeError, match="layer_map"):
        Composite(layer_map=[(nn.Linear, "epsilon")])
    with pytest.raises(ArgumentError, match="not an nn.Module"):
        LRP(lambda t: model(t)).attribute(x, target=0, composite="epsilon_plus")


def test_pass_keeps_relevance_and_norm_rules_a_pool():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)).eval()
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    with_pass = LRP(model).attribute(x, target=0, composite=Composite(name_map={"1": Pass(), "2": Epsilon(0.0)}))
    without = LRP(model).attribute(x, target=0, composite=Composite(name_map={"2": Epsilon(0.0)}))
    torch.testing.assert_close(with_pass, without)  # activations pass relevance anyway
    assert repr(Norm()) == "Norm(stabilizer=1e-06)"


def test_captums_clamped_weight_rules_warn_on_signed_inputs_and_name_the_published_ones():
    from attribution.lrp import Alpha1_Beta0_Rule, GammaRule

    for captum_rule in (GammaRule(), Alpha1_Beta0_Rule()):
        model = _two_layers()
        model[0].rule = captum_rule
        with pytest.warns(UserWarning, match="use attribution.lrp's Gamma, ZPlus"):
            LRP(model).attribute(torch.randn(4, 5), target=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            LRP(model).attribute(torch.rand(4, 5), target=0)  # inputs that are never negative: Captum's rule is right
