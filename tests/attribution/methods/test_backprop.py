"""DeepLift, DeepLiftShap, GuidedBackprop, Deconvolution, GuidedGradCam: completeness, closed forms, parity."""

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from attribution import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    LayerGradCam,
)
from tests.models import MLP, SmallCNN, TwoInput, seeded


class Functional(nn.Module):
    """Activations called as functions inside forward: invisible to module hooks."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.conv(x)), 2)
        h = F.elu(self.fc1(h.flatten(1)), alpha=0.5)
        return self.fc2(torch.tanh(h))


class Heads(nn.Module):
    """Sigmoid, tanh and softmax heads, and an in-place ReLU module used twice."""

    def __init__(self, head):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.relu = nn.ReLU(inplace=True)
        self.head = head

    def forward(self, x):
        return self.head(self.fc3(self.relu(self.fc2(self.relu(self.fc1(x))))))


class Residual(nn.Module):
    """BatchNorm (in eval), a residual addition, max pooling and a softmax output."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)) + h)
        return F.softmax(self.fc(self.pool(h).flatten(1)), dim=1)


def _zoo():
    torch.manual_seed(0)
    residual = Residual()
    for bn in (residual.bn1, residual.bn2):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return {
        "mlp": (seeded(MLP), (6,)),
        "cnn_inplace_reused_relu": (seeded(SmallCNN), (3, 8, 8)),
        "functional": (Functional().eval(), (3, 8, 8)),
        "sigmoid_head": (Heads(nn.Sigmoid()).eval(), (6,)),
        "tanh_head": (Heads(nn.Tanh()).eval(), (6,)),
        "softmax_head": (Heads(nn.Softmax(dim=1)).eval(), (6,)),
        "residual_bn_maxpool_softmax": (residual.eval(), (3, 8, 8)),
        "resnet18": (torchvision.models.resnet18(num_classes=4).eval(), (3, 32, 32)),
        "adaptive_max_pool": (
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveMaxPool2d((2, 3)), nn.Flatten(), nn.Linear(24, 3)).eval(),
            (3, 11, 13),
        ),
    }


ZOO = _zoo()


def _difference(model, x, b, target):
    with torch.no_grad():
        return model(x)[:, target] - model(b.expand_as(x))[:, target]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_deep_lift_is_complete(name):
    model, shape = ZOO[name]
    x, b = torch.randn(3, *shape), 0.3 * torch.randn(1, *shape)
    attr, delta = DeepLift(model).attribute(x, baselines=b, target=1, return_convergence_delta=True)
    expected = _difference(model, x, b, 1)
    total = attr.flatten(1).sum(1)
    scale = expected.abs().max().clamp_min(1e-3)
    assert (total - expected).abs().max() < 1e-4 * scale
    torch.testing.assert_close(delta, total - expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["functional", "cnn_inplace_reused_relu", "softmax_head", "resnet18"])
def test_where_module_hooks_go_wrong_we_stay_complete(name):
    captum = pytest.importorskip("captum.attr")
    model, shape = ZOO[name]
    x = torch.randn(3, *shape)
    expected = _difference(model, x, torch.zeros(1, *shape), 1)
    ours = DeepLift(model).attribute(x, target=1).flatten(1).sum(1)
    assert (ours - expected).abs().max() < 1e-4 * expected.abs().max()
    try:
        theirs = captum.DeepLift(model).attribute(x, target=1).flatten(1).sum(1)
    except Exception:  # reused / in-place modules can make the reference raise instead
        return
    assert (theirs - expected).abs().max() > 1e-3 * expected.abs().max()


def test_deep_lift_equals_input_x_gradient_when_units_keep_their_side():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():  # positive weights and biases: every unit stays positive from 0 to x
        for layer in model[::2]:
            layer.weight.abs_()
            layer.bias.abs_()
    x = torch.rand(4, 5)
    torch.testing.assert_close(DeepLift(model).attribute(x, target=1), InputXGradient(model).attribute(x, target=1))


class ToyConv(nn.Module):
    """conv (1 -> 1 channel, 2x2) on 3x3 -> ReLU -> linear with mixed-sign weights."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 2, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]]))
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -1.0]]))

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def _by_hand(x, rule):
    """Backprop through ToyConv by hand: the ReLU's backward is ``rule(upstream, pre-activation)``."""
    w, v = [[1.0, -1.0], [2.0, 0.0]], [1.0, -2.0, 3.0, -1.0]
    pre = [[sum(w[a][b] * x[i + a][j + b] for a in range(2) for b in range(2)) for j in range(2)] for i in range(2)]
    grad = [[0.0] * 3 for _ in range(3)]
    for i in range(2):
        for j in range(2):
            g = rule(v[2 * i + j], pre[i][j])
            for a in range(2):
                for b in range(2):
                    grad[i + a][j + b] += g * w[a][b]
    return torch.tensor([[grad]])


def test_guided_backprop_and_deconvolution_by_hand():
    x = [[1.0, 0.5, -1.0], [0.0, 2.0, 1.0], [-1.0, 1.0, 0.5]]
    model, inputs = ToyConv(), torch.tensor([[x]])
    guided = _by_hand(x, lambda g, pre: max(g, 0.0) * (pre > 0))
    deconv = _by_hand(x, lambda g, pre: max(g, 0.0))
    torch.testing.assert_close(GuidedBackprop(model).attribute(inputs, target=0), guided)
    torch.testing.assert_close(Deconvolution(model).attribute(inputs, target=0), deconv)
    # a model calling F.relu gets the same rule
    functional = lambda t: model.fc(F.relu(model.conv(t)).flatten(1))  # noqa: E731
    torch.testing.assert_close(GuidedBackprop(functional).attribute(inputs, target=0), guided)


def test_guided_gradcam_gives_an_input_of_another_rank_an_empty_tensor_with_a_warning():
    model = seeded(TwoInput)
    image, table = torch.randn(2, 1, 6, 6), torch.randn(2, 5)
    with pytest.warns(UserWarning, match="GuidedGradCam: .* another number get an empty tensor"):
        on_image, on_table = GuidedGradCam(model, model.conv).attribute((image, table), target=0)
    assert on_image.shape == image.shape and on_table.numel() == 0
    with pytest.raises(ValueError, match="interpolate_mode: 'made_up' cannot upsample 2-d maps"):
        GuidedGradCam(model, model.conv).attribute((image, table), target=0, interpolate_mode="made_up")


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam():
    model = ZOO["residual_bn_maxpool_softmax"][0]
    x = torch.randn(2, 3, 8, 8)
    cam = LayerGradCam(model, model.conv2).attribute(x, target=2, relu_attributions=True)
    expected = GuidedBackprop(model).attribute(x, target=2) * F.interpolate(cam, size=(8, 8), mode="nearest")
    torch.testing.assert_close(GuidedGradCam(model, "conv2").attribute(x, target=2), expected)


def test_deep_lift_shap_with_one_baseline_is_deep_lift():
    model, shape = ZOO["functional"]
    x, b = torch.randn(3, *shape), torch.randn(1, *shape)
    shap, delta = DeepLiftShap(model).attribute(x, baselines=b, target=0, return_convergence_delta=True)
    torch.testing.assert_close(shap, DeepLift(model).attribute(x, baselines=b, target=0))
    assert delta.shape == (3,) and delta.abs().max() < 1e-5


def test_deep_lift_shap_averages_and_chunks_many_baselines(monkeypatch):
    import attribution._internal.chunking as chunking

    model, shape = ZOO["cnn_inplace_reused_relu"]
    x, dist = torch.randn(2, *shape), torch.randn(100, *shape)
    attr, delta = DeepLiftShap(model).attribute(x, baselines=dist, target=1, return_convergence_delta=True)
    assert delta.shape == (200,) and delta.abs().max() < 1e-4
    expected = torch.stack([DeepLift(model).attribute(x, baselines=dist[i : i + 1], target=1) for i in range(100)])
    torch.testing.assert_close(attr, expected.mean(0), atol=1e-6, rtol=1e-4)
    monkeypatch.setattr(chunking, "CPU_MEMORY_BUDGET", 64 * 1024)  # a few baselines per chunk
    chunks = []
    original = chunking.run_chunked
    monkeypatch.setattr(
        "attribution.functional.backprop.run_chunked",
        lambda total, work, **kw: original(total, lambda lo, hi: (chunks.append(hi - lo), work(lo, hi)), **kw),
    )
    chunked = DeepLiftShap(model).attribute(x, baselines=dist, target=1)
    assert len(chunks) > 3 and sum(chunks) == 100
    torch.testing.assert_close(chunked, attr, atol=1e-6, rtol=1e-4)


def test_batch_norm_in_train_mode_does_not_couple_examples():
    torch.manual_seed(0)
    model = Residual().train()
    x = torch.randn(4, 3, 8, 8)
    stats = model.bn1.running_mean.clone()
    alone = DeepLift(model).attribute(x[:1], target=0)
    together = DeepLift(model).attribute(x, target=0)
    torch.testing.assert_close(together[:1], alone)
    assert model.training and model.bn1.training and torch.equal(model.bn1.running_mean, stats)


PARITY = {
    "mlp": lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3)),
    "cnn": lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(PARITY))
def test_parity_with_captum_where_captum_is_right(name):
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = PARITY[name]().eval()
    shape = (6,) if name == "mlp" else (3, 8, 8)
    x, b = torch.randn(3, *shape), 0.2 * torch.randn(1, *shape)
    dist = torch.randn(4, *shape)
    target = [0, 2, 1]
    pairs = [
        (DeepLift(model).attribute(x, baselines=b, target=target), captum.DeepLift(model).attribute(x, b, target)),
        (
            DeepLiftShap(model).attribute(x, baselines=dist, target=target),
            captum.DeepLiftShap(model).attribute(x, dist, target),
        ),
        (GuidedBackprop(model).attribute(x, target=target), captum.GuidedBackprop(model).attribute(x, target)),
        (Deconvolution(model).attribute(x, target=target), captum.Deconvolution(model).attribute(x, target)),
    ]
    if name == "cnn":
        pairs.append(
            (
                GuidedGradCam(model, model[2]).attribute(x, target=target),
                captum.GuidedGradCam(model, model[2]).attribute(x, target),
            )
        )
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs.detach(), atol=1e-5, rtol=1e-4)


def test_captum_breaks_completeness_when_a_relu_feeds_the_max_pool_ours_keeps_it():
    # Captum's module hooks then backpropagate the pool's plain gradient instead of its own rule
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    x, b = torch.randn(3, 3, 8, 8), 0.2 * torch.randn(1, 3, 8, 8)
    expected = _difference(model, x, b, 1)
    ours = DeepLift(model).attribute(x, baselines=b, target=1).flatten(1).sum(1)
    theirs = captum.DeepLift(model).attribute(x, b, 1).flatten(1).sum(1)
    assert (ours - expected).abs().max() < 1e-5 * expected.abs().max()
    assert (theirs - expected).abs().max() > 1e-2 * expected.abs().max()


def test_no_incompleteness_warning_when_the_output_difference_is_rounding_level():
    # Equal weights into every logit: the softmax output is the same for every input, so f(x) - f(b) is
    # float rounding of logits ~1e4 times the biases; DeepLift is complete, and must not say otherwise.
    model = nn.Sequential(nn.Linear(40, 20), nn.ReLU(), nn.Linear(20, 10), nn.Softmax(dim=1)).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.fill_(1.0)
    x = torch.arange(120.0, dtype=torch.float64).view(3, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, delta = DeepLift(model).attribute(x, target=2, return_convergence_delta=True)
    assert delta.abs().max() < 1e-9
