"""LocalForward (region-wise re-evaluation for Occlusion) equals the plain forward."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from attribution import Occlusion
from attribution._internal.local_forward import LocalForward
from tests.models import SmallCNN, seeded


class Strides(nn.Module):
    """Padding, stride, dilation, groups and max pooling with padding."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.c = nn.Conv2d(8, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h = torch.sigmoid(self.b(h)) + h
        h = self.c(self.pool(h))
        return self.head(h.mean(dim=(2, 3)))


class Mixed(nn.Module):
    """Ops the local pass does not know (upsampling, concatenation, products) between known ones."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        up = F.interpolate(F.avg_pool2d(h, 2), scale_factor=2.0)
        h = self.bn(self.b(torch.cat([h, up * h], dim=1)))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def _models():
    torch.manual_seed(0)
    return {
        "small_cnn": (seeded(SmallCNN), 8),
        "strides": (Strides().eval(), 20),
        "mixed": (Mixed().eval(), 16),
        "resnet18": (torchvision.models.resnet18(num_classes=5).eval(), 48),
        "mobilenet_v3": (torchvision.models.mobilenet_v3_small(num_classes=5).eval(), 48),
    }


MODELS = _models()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("n", [1, 2])
def test_local_forward_equals_the_plain_forward(name, n):
    model, size = MODELS[name]
    x = torch.randn(n, 3, size, size)
    forward = LocalForward.build(model, x)
    assert forward is not None
    generator = torch.Generator().manual_seed(1)
    rows, h = 5 * n, max(2, size // 5)
    starts = torch.randint(0, size - h + 1, (5, 2), generator=generator).repeat_interleave(n, dim=0)
    patch = torch.randn(rows, 3, h, h, generator=generator)
    full = x.repeat(5, 1, 1, 1)
    for r in range(rows):
        y0, x0 = starts[r].tolist()
        full[r, :, y0 : y0 + h, x0 : x0 + h] = patch[r]
    with torch.inference_mode():
        expected = model(full)
        got = forward(patch, starts)
        torch.testing.assert_close(forward.base_output, model(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "strides"])
def test_occlusion_through_the_local_pass_equals_the_plain_path(name):
    model, size = MODELS[name]
    x = torch.randn(2, 3, size, size)
    kwargs = dict(sliding_window_shapes=(3, 5, 5), strides=(3, 3, 3), target=1, baselines=0.5)
    local = Occlusion(model).attribute(x, **kwargs)
    plain = Occlusion(lambda t: model(t)).attribute(x, **kwargs)  # not an nn.Module: no local pass
    torch.testing.assert_close(local, plain, atol=1e-5, rtol=1e-4)


def test_models_with_hooks_or_untraceable_forwards_use_the_plain_forward():
    model = seeded(SmallCNN)
    handle = model.conv1.register_forward_hook(lambda m, i, o: o * 2)
    try:
        assert LocalForward.build(model, torch.randn(1, 3, 8, 8)) is None
    finally:
        handle.remove()

    class Branchy(SmallCNN):
        def forward(self, x):
            return super().forward(x) if x.sum() > 0 else -super().forward(x)

    assert LocalForward.build(seeded(Branchy), torch.randn(1, 3, 8, 8)) is None
    assert LocalForward.build(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), torch.randn(1, 3, 1, 1)) is None


class Picky(nn.Module):
    """Traceable, but fails at run time on batches of more than one row."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN()

    def forward(self, x):
        torch._assert(x.shape[0] <= 1, "boom")
        return self.net(x)


def test_an_error_in_the_local_pass_propagates_and_leaves_no_trace():
    torch.manual_seed(0)
    model = Picky().eval()
    with pytest.raises(AssertionError, match="boom"):
        Occlusion(model).attribute(torch.randn(1, 3, 8, 8), sliding_window_shapes=(3, 2, 2), target=0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(not m.training for m in model.modules())
