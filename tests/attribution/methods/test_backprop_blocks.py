"""DeepLift beyond ReLU nets: products, norms, attention, pooling and the zoo's blocks.

The oracle is completeness (attributions sum to ``f(x) - f(baseline)``), the
exact Shapley values of a two-factor product, closed forms for linear models,
and Captum's maps where Captum's rule holds.
"""

import math
import warnings
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.efficientnet import MBConvConfig
from torchvision.ops import SqueezeExcitation

from attribution import DeepLift, DeepLiftShap, NeuronDeepLift

EXACT = 1e-9  # relative, in float64


@contextmanager
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _unexplained(model, x, b, target=0, dtype=torch.float64, **kwargs):
    """``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|``, worst over the batch (no warning allowed)."""
    model = model.to(dtype).eval()
    x, b = x.to(dtype), b.to(dtype)
    with no_warnings():
        attr = DeepLift(model).attribute(x, baselines=b, target=target, **kwargs)
    with torch.no_grad():
        args = kwargs.get("additional_forward_args", ())
        args = args if isinstance(args, tuple) else (args,)
        expected = model(x, *args)[:, target] - model(b.expand_as(x), *args)[:, target]
    return ((attr.flatten(1).sum(1) - expected).abs() / expected.abs()).max().item()


class Head(nn.Module):
    """``linear -> block -> linear``: puts a block between input-dependent tensors."""

    def __init__(self, block, width=8, out=3):
        super().__init__()
        self.inp, self.block, self.out = nn.Linear(width, width), block, nn.Linear(width, out)

    def forward(self, x):
        return self.out(self.block(self.inp(x)).mean(1) if x.dim() == 3 else self.block(self.inp(x)))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, h):
        return self.fn(h)


class SEBlock(nn.Module):
    """Conv, then torchvision's squeeze-and-excite (``x * sigmoid(fc(pool(x)))``), then a head."""

    def __init__(self, scale_activation=nn.Sigmoid):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.se = SqueezeExcitation(8, 4, scale_activation=scale_activation)
        self.fc = nn.Linear(8 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.se(F.hardswish(self.conv(x))).flatten(1))


class GroupNormNet(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(3, 8, 3, padding=1), norm, nn.Linear(8 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(F.gelu(self.norm(self.conv(x))).flatten(1))


class Attention(nn.Module):
    """Self-attention through ``F.scaled_dot_product_attention`` with optional masks."""

    def __init__(self, heads=2, width=8, **sdpa):
        super().__init__()
        self.qkv, self.proj, self.heads, self.sdpa = nn.Linear(width, 3 * width), nn.Linear(width, 3), heads, sdpa

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, **self.sdpa)
        return self.proj(h.transpose(1, 2).reshape(n, t, d).mean(1))


class HandWrittenAttention(nn.Module):
    """``softmax(q @ k^T / sqrt(d)) @ v`` with explicit matmuls and an einsum."""

    def __init__(self, width=8):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        scores = self.q(x) @ self.k(x).transpose(1, 2) / math.sqrt(x.shape[-1])
        h = torch.einsum("nts,nsd->ntd", scores.softmax(-1), self.v(x))
        return self.out(h.mean(1))


class MultiHead(nn.Module):
    """``nn.MultiheadAttention``, sequence-first or batch-first, with or without attention weights."""

    def __init__(self, batch_first, need_weights, width=8):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, 2, batch_first=batch_first)
        self.norm, self.out = nn.LayerNorm(width), nn.Linear(width, 3)
        self.batch_first, self.need_weights = batch_first, need_weights

    def forward(self, x, padding=None):
        h = x if self.batch_first else x.transpose(0, 1)
        h, _ = self.attn(h, h, h, key_padding_mask=padding, need_weights=self.need_weights)
        h = h if self.batch_first else h.transpose(0, 1)
        return self.out(self.norm(h + x).mean(1))


def _seeded(make):
    torch.manual_seed(0)
    return make().eval()


BLOCKS = {
    # elementwise activations, also functional and in place
    "hardswish": (lambda: Head(nn.Hardswish(inplace=True)), (8,)),
    "hardsigmoid": (lambda: Head(nn.Hardsigmoid()), (8,)),
    "silu_gelu_mish": (lambda: Head(Lambda(lambda h: F.mish(F.gelu(F.silu(h), approximate="tanh")))), (8,)),
    "softplus_elu_selu": (lambda: Head(Lambda(lambda h: F.selu(F.elu(F.softplus(h, beta=2.0), 0.5)))), (8,)),
    "clamp_exp_log_sqrt": (lambda: Head(Lambda(lambda h: (h.clamp(-1, 2).exp() + 1).log().sqrt())), (8,)),
    "powers_and_division": (lambda: Head(Lambda(lambda h: h**2 / (1 + h.abs()) + 2 ** h.tanh() - 1 / (2 + h))), (8,)),
    # products of two input-dependent tensors
    "gating_product": (lambda: Head(Lambda(lambda h: h * torch.sigmoid(h.flip(1)))), (8,)),
    "glu": (lambda: Head(Lambda(lambda h: torch.cat([F.glu(h), F.glu(h.flip(1))], 1))), (8,)),
    "squeeze_excite": (lambda: SEBlock(), (3, 6, 6)),
    "squeeze_excite_hardsigmoid": (lambda: SEBlock(nn.Hardsigmoid), (3, 6, 6)),
    # norms
    "layer_norm": (lambda: Head(nn.LayerNorm(8)), (8,)),
    "layer_norm_tokens": (lambda: Head(nn.Sequential(nn.LayerNorm(8), nn.GELU())), (5, 8)),
    "rms_norm": (lambda: Head(nn.RMSNorm(8)), (8,)),
    "normalize": (lambda: Head(Lambda(lambda h: F.normalize(h, dim=1))), (8,)),
    "group_norm": (lambda: GroupNormNet(nn.GroupNorm(2, 8)), (3, 6, 6)),
    "instance_norm": (lambda: GroupNormNet(nn.InstanceNorm2d(8, affine=True)), (3, 6, 6)),
    # attention
    "sdpa": (lambda: Attention(), (5, 8)),
    "sdpa_causal": (lambda: Attention(is_causal=True), (5, 8)),
    "sdpa_bool_mask": (lambda: Attention(attn_mask=torch.rand(5, 5) > 0.3), (5, 8)),
    "sdpa_float_mask": (lambda: Attention(attn_mask=torch.randn(5, 5), scale=0.2), (5, 8)),
    "hand_written_attention": (lambda: HandWrittenAttention(), (5, 8)),
    "multihead_batch_first": (lambda: MultiHead(True, need_weights=False), (5, 8)),
    "multihead_sequence_first_weights": (lambda: MultiHead(False, need_weights=True), (5, 8)),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_is_complete(name):
    make, shape = BLOCKS[name]
    model = _seeded(make)
    x, b = torch.randn(3, *shape), 0.3 * torch.randn(1, *shape)
    assert _unexplained(model, x, b) < EXACT


def test_attention_with_a_key_padding_mask_is_complete():
    model = _seeded(lambda: MultiHead(False, need_weights=True))
    x, b = torch.randn(2, 5, 8), 0.3 * torch.randn(1, 5, 8)
    padding = torch.tensor([[False, False, False, True, True], [False] * 5])
    assert _unexplained(model, x, b, additional_forward_args=padding) < EXACT


def test_product_of_two_inputs_gets_their_exact_shapley_values():
    a, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    ra, rb = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)

    def product(u, v):
        return (u * v).sum(1)

    # two players: each factor's Shapley value is the mean of its two marginal contributions
    shapley_a = ((a * b - ra * b) + (a * rb - ra * rb)) / 2
    shapley_b = ((a * b - a * rb) + (ra * b - ra * rb)) / 2
    ours = DeepLift(product).attribute((a, b), baselines=(ra, rb))
    torch.testing.assert_close(ours, (shapley_a, shapley_b))


def test_products_with_weights_stay_linear():
    torch.manual_seed(0)
    weight, matrix = torch.randn(6), torch.randn(6, 2)

    def model(x, scale):  # a weight times the input, on either side, a matrix product, an extra argument
        return ((weight * x) @ matrix + (x * weight) @ matrix) * scale / 2

    x, b, scale = torch.randn(3, 6), torch.randn(1, 6), torch.tensor([[1.0], [2.0], [-0.5]])
    expected = scale * (weight * matrix[:, 1]) * (x - b)
    attr = DeepLift(model).attribute(x, baselines=b, target=1, additional_forward_args=scale)
    torch.testing.assert_close(attr, expected)


def test_neuron_deep_lift_through_a_product_is_complete_where_captums_is_not():
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)

    class Product(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Linear(5, 4)

        def forward(self, a, b):
            return self.mix(a * b)

    model = Product().eval()
    inputs, refs = (torch.randn(3, 5), torch.randn(3, 5)), (torch.randn(1, 5), torch.randn(1, 5))
    with torch.no_grad():
        expected = model(*inputs)[:, 2] - model(*(r.expand(3, 5) for r in refs))[:, 2]
    ours = sum(a.sum(1) for a in NeuronDeepLift(model, "mix").attribute(inputs, 2, baselines=refs))
    theirs = sum(a.sum(1) for a in captum.NeuronDeepLift(model, model.mix).attribute(inputs, 2, baselines=refs))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert (theirs - expected).abs().max() > 1e-2 * expected.abs().max()  # Captum takes the product as linear


# ------------------------------------------------------------------------------------------- the zoo


def _tv_vit():
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    )
    nn.init.normal_(model.heads.head.weight)  # zero-initialised by torchvision: nothing to explain
    return model, (3, 32, 32)


def _efficientnet():
    """EfficientNet-B0's first stages (MBConv with squeeze-and-excite, SiLU) at half width."""
    stages = [MBConvConfig(1, 3, 1, 32, 16, 1, 0.5), MBConvConfig(6, 3, 2, 16, 24, 2, 0.5)]
    stages.append(MBConvConfig(6, 5, 2, 24, 40, 1, 0.5))
    return torchvision.models.EfficientNet(stages, dropout=0.2, num_classes=5, last_channel=64), (3, 32, 32)


def _convnext():
    blocks = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
    return torchvision.models.ConvNeXt(blocks, layer_scale=0.5, num_classes=5), (3, 32, 32)


def _swin():
    model = torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4], num_classes=5
    )
    return model, (3, 32, 32)


def _timm_vit(fused):
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=5)
    for block in model.blocks:
        block.attn.fused_attn = fused  # F.scaled_dot_product_attention, or q @ k^T and softmax
    return model, (3, 32, 32)


class _BertFromEmbeddings(nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, embeddings):
        return self.bert(inputs_embeds=embeddings).logits


def _bert(implementation):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
        attn_implementation=implementation,
    )
    return _BertFromEmbeddings(transformers.BertForSequenceClassification(config)), (6, 16)


ZOO = {
    "mobilenet_v3_small": lambda: (torchvision.models.mobilenet_v3_small(num_classes=5, width_mult=0.5), (3, 32, 32)),
    "efficientnet": _efficientnet,
    "convnext": _convnext,
    "vit": _tv_vit,
    "swin": _swin,
    "timm_vit_fused": lambda: _timm_vit(True),
    "timm_vit_matmul": lambda: _timm_vit(False),
    "bert_eager": lambda: _bert("eager"),
    "bert_sdpa": lambda: _bert("sdpa"),
}


@pytest.mark.parametrize("baseline", ["noise", "zeros"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_is_complete(name, baseline):
    torch.manual_seed(0)
    model, shape = ZOO[name]()
    x, b = torch.randn(2, *shape), (0.1 if baseline == "noise" else 0.0) * torch.randn(1, *shape)
    assert _unexplained(model, x, b, target=1, dtype=torch.float64) < EXACT
    assert _unexplained(model, x, b, target=1, dtype=torch.float32) < 1e-4


class _BertWithMask(_BertFromEmbeddings):
    def forward(self, embeddings, attention_mask):
        return self.bert(inputs_embeds=embeddings, attention_mask=attention_mask).logits


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_bert_with_a_padding_mask_is_complete(implementation):
    torch.manual_seed(0)
    model = _BertWithMask(_bert(implementation)[0].bert)
    x, b = torch.randn(2, 6, 16), torch.zeros(1, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])  # additive -inf-like scores on padding
    assert _unexplained(model, x, b, target=1, additional_forward_args=mask) < EXACT


@pytest.mark.parametrize("degenerate", ["reference", "input"])
def test_norms_stay_complete_in_float32_when_one_end_has_zero_variance(degenerate):
    # zero biases map a zero row to zero: its norm's Jacobian is ~1 / sqrt(eps) there
    torch.manual_seed(0)
    norms = nn.Sequential(nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 16, bias=False), Lambda(F.normalize))
    model = nn.Sequential(nn.Linear(16, 16, bias=False), norms, nn.Linear(16, 16, bias=False), nn.RMSNorm(16))
    model = nn.Sequential(*model, nn.Linear(16, 3)).eval()
    x, b = torch.randn(3, 16), torch.zeros(1, 16)
    x, b = (x, b) if degenerate == "reference" else (b.expand(3, 16), x[:1])
    assert _unexplained(model, x, b, dtype=torch.float32) < 1e-5


# ------------------------------------------------------------------------------------------- when it cannot hold


class RowMax(nn.Module):
    """A max over features: no exact rule exists for it (its gradient is used)."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(6, 8), nn.Linear(1, 2)

    def forward(self, x):
        return self.out(self.fc(x).max(dim=1, keepdim=True).values)


def test_an_op_without_a_rule_warns_once_with_the_unexplained_share():
    model = _seeded(RowMax)
    x = torch.randn(4, 6)
    with pytest.warns(UserWarning, match=r"DeepLift: attributions explain .*% of f\(x\) - f\(baseline\)") as record:
        attr, delta = DeepLift(model).attribute(x, target=1, return_convergence_delta=True)
    messages = [str(w.message) for w in record if "DeepLift" in str(w.message)]
    assert len(messages) == 1 and "max" in messages[0]
    assert delta.abs().max() > 1e-3  # the warning reflects a real gap


def test_deep_lift_shap_warns_once_over_all_chunks(monkeypatch):
    import attribution._internal.chunking as chunking

    monkeypatch.setattr(chunking, "CPU_MEMORY_BUDGET", 4 * 1024)  # a few baselines per chunk
    chunks = []
    original = chunking.run_chunked
    monkeypatch.setattr(
        "attribution.functional.backprop.run_chunked",
        lambda total, work, **kw: original(total, lambda lo, hi: (chunks.append(hi - lo), work(lo, hi)), **kw),
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        DeepLiftShap(_seeded(RowMax)).attribute(torch.randn(3, 6), baselines=torch.randn(64, 6), target=0)
    assert len(chunks) > 1
    assert len([w for w in record if "DeepLift" in str(w.message)]) == 1


def test_complete_models_do_not_warn():
    model, shape = BLOCKS["squeeze_excite"]
    with no_warnings():
        DeepLift(_seeded(model)).attribute(torch.randn(2, *shape), target=0)
        DeepLiftShap(_seeded(model)).attribute(torch.randn(2, *shape), baselines=torch.randn(3, *shape), target=0)


# ------------------------------------------------------------------------------------------- softmax in float32


def _softmax_classifier(seed, head):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10), head)


@pytest.mark.parametrize("head", [nn.Softmax(dim=1), nn.Softmax(), nn.LogSoftmax(dim=1)], ids=str)
def test_softmax_classifier_delta_in_float32(head):
    # Captum's own softmax test setting: inputs 1..20 against a zero baseline, every class
    worst = 0.0
    for seed in range(3):
        model = _softmax_classifier(seed, head).eval()
        x = torch.arange(1.0, 21.0).unsqueeze(0).repeat(2, 1) * torch.tensor([[1.0], [0.1]])
        for target in range(10):
            _, delta = DeepLift(model).attribute(x, target=target, return_convergence_delta=True)
            worst = max(worst, delta.abs().max().item())
    assert worst < 1e-4


def test_softmax_near_the_baseline_in_float32():
    model = _softmax_classifier(0, nn.Softmax(dim=1)).eval()
    b = torch.randn(1, 20)
    for gap in (1e-5, 1e-3, 1e-1):
        x = b + gap * torch.randn(8, 20)
        _, delta = DeepLift(model).attribute(x, baselines=b, target=3, return_convergence_delta=True)
        assert delta.abs().max() < 1e-6


# ------------------------------------------------------------------------------------------- pooling


def _pool_net(dims, pool, channels=3, size=6):
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    body = nn.Sequential(conv(channels, 4, 3, padding=1), nn.ReLU(inplace=True), pool)
    with torch.no_grad():
        features = body(torch.zeros(1, channels, *[size] * dims)).numel()
    return nn.Sequential(*body, nn.Flatten(), nn.Linear(features, 3))


POOLS = {
    "max1d": (1, lambda: nn.MaxPool1d(2)),
    "max1d_overlapping_padded": (1, lambda: nn.MaxPool1d(3, stride=2, padding=1)),
    "max2d_dilated_ceil": (2, lambda: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True)),
    "max3d": (3, lambda: nn.MaxPool3d(2)),
    "adaptive_max1d": (1, lambda: nn.AdaptiveMaxPool1d(4)),
    "adaptive_max2d": (2, lambda: nn.AdaptiveMaxPool2d((2, 4))),
    "adaptive_max3d": (3, lambda: nn.AdaptiveMaxPool3d(2)),
    "avg1d": (1, lambda: nn.AvgPool1d(2)),
    "avg2d": (2, lambda: nn.AvgPool2d(3, stride=2, padding=1)),
    "avg3d": (3, lambda: nn.AvgPool3d(2)),
    "adaptive_avg1d": (1, lambda: nn.AdaptiveAvgPool1d(4)),
    "adaptive_avg3d": (3, lambda: nn.AdaptiveAvgPool3d(2)),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pooling_is_complete(name):
    dims, pool = POOLS[name]
    model = _seeded(lambda: _pool_net(dims, pool()))
    x, b = torch.randn(2, 3, *[6] * dims), 0.3 * torch.randn(1, 3, *[6] * dims)
    assert _unexplained(model, x, b) < EXACT


class PoolWithIndices(nn.Module):
    """Max pooling that returns its indices, used (unpooling) or not."""

    def __init__(self, unpool):
        super().__init__()
        self.conv, self.fc, self.unpool = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 6 * 6, 3), unpool
        self.fc = nn.Linear(4 * 6 * 6 if unpool else 4 * 3 * 3, 3)

    def forward(self, x):
        h, index = F.max_pool2d(torch.tanh(self.conv(x)), 2, return_indices=True)
        return self.fc((F.max_unpool2d(h, index, 2, output_size=x.shape[-2:]) if self.unpool else h).flatten(1))


def test_max_pool_returning_indices_is_complete():
    model = _seeded(lambda: PoolWithIndices(unpool=False))
    assert _unexplained(model, torch.randn(2, 3, 6, 6), 0.3 * torch.randn(1, 3, 6, 6)) < EXACT


def test_unpooling_at_the_inputs_own_indices_has_no_rule_and_the_warning_names_it():
    model = _seeded(lambda: PoolWithIndices(unpool=True))
    with pytest.warns(UserWarning, match="max_unpool2d"):
        DeepLift(model).attribute(torch.randn(2, 3, 6, 6), baselines=0.3 * torch.randn(1, 3, 6, 6), target=0)


CAPTUM_POOL_NETS = {
    # (net, baseline scale): Captum applies its max-pool rule, and is complete, in each
    "relu_pool_conv_zero_baseline": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.Flatten(),
            nn.Linear(64, 3),
        ),
        0.0,
    ),
    "conv_relu_conv_pool": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 3),
        ),
        0.2,
    ),
    "pool_1d": (
        lambda: nn.Sequential(
            nn.Conv1d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(4, 4, 3, padding=1),
            nn.MaxPool1d(2),
            nn.Flatten(),
            nn.Linear(16, 3),
        ),
        0.2,
    ),
    "pool_3d": (
        lambda: nn.Sequential(
            nn.Conv3d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(4, 4, 3, padding=1),
            nn.MaxPool3d(2),
            nn.Flatten(),
            nn.Linear(32, 3),
        ),
        0.2,
    ),
}
SHAPES = {"pool_1d": (3, 8), "pool_3d": (3, 4, 4, 4)}


@pytest.mark.parametrize("name", sorted(CAPTUM_POOL_NETS))
def test_max_pool_maps_match_captum_where_captum_is_complete(name):
    captum = pytest.importorskip("captum.attr")
    make, scale = CAPTUM_POOL_NETS[name]
    model = _seeded(make)
    shape = SHAPES.get(name, (3, 8, 8))
    x, b = torch.randn(3, *shape), scale * torch.randn(1, *shape)
    theirs, their_delta = captum.DeepLift(model).attribute(x, b.expand_as(x), target=1, return_convergence_delta=True)
    ours, our_delta = DeepLift(model).attribute(x, baselines=b, target=1, return_convergence_delta=True)
    assert their_delta.abs().max() < 1e-5 and our_delta.abs().max() < 1e-5
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-6, rtol=1e-4)


def test_overlapping_max_pool_windows_stay_complete_where_captum_loses_mass():
    # Captum unpools each window's share, and unpooling overwrites where windows share a winner
    captum = pytest.importorskip("captum.attr")
    make = CAPTUM_POOL_NETS["pool_1d"][0]
    model = _seeded(
        lambda: nn.Sequential(*make()[:3], nn.MaxPool1d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(32, 3))
    )
    x, b = torch.randn(3, 3, 8), 0.2 * torch.randn(1, 3, 8)
    _, theirs = captum.DeepLift(model).attribute(x, b.expand_as(x), target=1, return_convergence_delta=True)
    _, ours = DeepLift(model).attribute(x, baselines=b, target=1, return_convergence_delta=True)
    assert ours.abs().max() < 1e-5 < 1e-2 < theirs.abs().max()
