"""GradCAM and Occlusion against hand computations."""

import itertools
import math

import pytest
import torch
from torch import nn

from attribution import LayerAttribution, LayerGradCam, Occlusion
from tests.models import SmallCNN, TwoInput, seeded


class ToyConvNet(nn.Module):
    """conv (1 -> 2 channels, 2x2) on 3x3 -> 2x2 maps -> linear to 2 classes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2, bias=False)
        self.fc = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[0.0, 2.0], [-1.0, 0.0]]]]))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 2.0], [0.0] * 8]))

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_gradcam_by_hand():
    x = torch.tensor([[[[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]]]])
    # conv channel 0 = x[i,j] + x[i+1,j+1]; channel 1 = 2 x[i,j+1] - x[i+1,j]
    a0 = [[1 + 1, 2 + 3], [0 + 0, 1 + 1]]
    a1 = [[4 - 0, 0 - 1], [2 - 2, 6 - 0]]
    # d out0 / d activations = fc weights; channel weights = their spatial means
    w0, w1 = (1 + 2 + 3 + 4) / 4, (-1 + 0 + 1 + 2) / 4
    expected = torch.tensor([[[[w0 * a0[i][j] + w1 * a1[i][j] for j in range(2)] for i in range(2)]]])
    model = ToyConvNet()
    cam = LayerGradCam(model, model.conv).attribute(x, target=0)
    torch.testing.assert_close(cam, expected)
    torch.testing.assert_close(
        LayerGradCam(model, "conv").attribute(x, target=0, relu_attributions=True), expected.relu()
    )
    per_channel = LayerGradCam(model, model.conv).attribute(x, target=0, attr_dim_summation=False)
    torch.testing.assert_close(
        per_channel, torch.tensor([[[[w0 * v for v in r] for r in a0], [[w1 * v for v in r] for r in a1]]])
    )


def _manual_gradcam_conv1(model, x, target):
    """GradCAM of SmallCNN.conv1, computed by writing its forward out by hand without in-place ops."""
    act = model.conv1(x).detach().requires_grad_()
    h = torch.relu(model.conv2(torch.relu(act)))
    out = model.fc(model.pool(h).flatten(1))[:, target].sum()
    (grad,) = torch.autograd.grad(out, act)
    return (grad.mean(dim=(2, 3), keepdim=True) * act).sum(1, keepdim=True).detach()


def test_gradcam_is_not_corrupted_by_a_following_inplace_relu():
    model = seeded(SmallCNN)  # conv1 feeds an nn.ReLU(inplace=True)
    x = torch.randn(2, 3, 8, 8)
    cam = LayerGradCam(model, model.conv1).attribute(x, target=1)
    torch.testing.assert_close(cam, _manual_gradcam_conv1(model, x, 1))
    assert (cam < 0).any()  # pre-ReLU activations were captured, not the rectified ones


def test_gradcam_on_the_layer_input():
    model = seeded(SmallCNN)
    x = torch.randn(2, 3, 8, 8)
    cam_in = LayerGradCam(model, model.conv2).attribute(x, target=1, attribute_to_layer_input=True)
    act = torch.relu(model.conv1(x)).detach().requires_grad_()
    out = model.fc(model.pool(torch.relu(model.conv2(act))).flatten(1))[:, 1].sum()
    (grad,) = torch.autograd.grad(out, act)
    torch.testing.assert_close(cam_in, (grad.mean(dim=(2, 3), keepdim=True) * act).sum(1, keepdim=True).detach())


def test_gradcam_rejects_a_layer_that_runs_twice():
    model = seeded(SmallCNN)
    with pytest.raises(ValueError, match="ran 2 times in one forward"):
        LayerGradCam(model, model.relu).attribute(torch.randn(1, 3, 8, 8), target=0)


def test_interpolate_upsamples_to_the_input_size():
    attr = torch.arange(4.0).view(1, 1, 2, 2)
    up = LayerAttribution.interpolate(attr, (4, 4))
    assert up.shape == (1, 1, 4, 4) and torch.equal(up[0, 0, :2, :2], torch.zeros(2, 2))
    assert LayerAttribution.interpolate(attr, (4, 4), "bilinear").shape == (1, 1, 4, 4)


def naive_occlusion(model, x, window, stride, target, baseline=0.0):
    """Occlusion straight from its definition: a loop over windows, one forward each."""
    with torch.no_grad():
        reference = model(x)[:, target]
        total = torch.zeros_like(x)
        count = torch.zeros_like(x)
        shape = x.shape[1:]
        counts = [math.ceil((d - w) / s) + 1 for d, w, s in zip(shape, window, stride)]
        for pos in itertools.product(*(range(c) for c in counts)):
            region = tuple(slice(p * s, p * s + w) for p, s, w in zip(pos, stride, window))
            occluded = x.clone()
            occluded[(slice(None), *region)] = baseline
            drop = reference - model(occluded)[:, target]
            total[(slice(None), *region)] += drop.view(-1, *[1] * len(shape))
            count[(slice(None), *region)] += 1
    return total / count


def test_occlusion_by_hand_on_a_tiny_model():
    # f(x) = (x0 + 2 x1 + 3 x2 + 4 x3)^2, windows of 2 with stride 1 over 4 features
    model = lambda x: ((x * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum(1, keepdim=True)) ** 2  # noqa: E731
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    f = 100.0
    drops = [f - (3 + 4) ** 2, f - (1 + 4) ** 2, f - (1 + 2) ** 2]  # windows {0,1}, {1,2}, {2,3}
    expected = torch.tensor([[drops[0], (drops[0] + drops[1]) / 2, (drops[1] + drops[2]) / 2, drops[2]]])
    got = Occlusion(model).attribute(x, sliding_window_shapes=(2,), strides=1, target=0)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    "window, stride", [((3, 2, 2), (3, 1, 1)), ((1, 3, 3), (1, 2, 3)), ((3, 5, 4), (2, 2, 3)), ((3, 8, 8), (1, 1, 1))]
)
def test_occlusion_matches_its_definition(window, stride):
    model = seeded(SmallCNN)
    x = torch.randn(2, 3, 8, 8)
    expected = naive_occlusion(model, x, window, stride, target=1, baseline=0.25)
    for per_eval in (None, 1, 5, 1000):
        got = Occlusion(model).attribute(
            x, sliding_window_shapes=window, strides=stride, baselines=0.25, target=1, perturbations_per_eval=per_eval
        )
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_occlusion_with_two_inputs_occludes_one_at_a_time():
    model = seeded(TwoInput)
    image, table = torch.randn(2, 1, 6, 6), torch.randn(2, 5)
    a_img, a_tab = Occlusion(model).attribute(
        (image, table),
        sliding_window_shapes=((1, 2, 2), (1,)),
        strides=((1, 2, 2), 1),
        target=2,
        additional_forward_args=2.0,
        perturbations_per_eval=4,
    )
    expected_tab = naive_occlusion(lambda t: model(image, t, 2.0), table, (1,), (1,), target=2)
    expected_img = naive_occlusion(lambda i: model(i, table, 2.0), image, (1, 2, 2), (1, 2, 2), target=2)
    torch.testing.assert_close(a_tab, expected_tab)
    torch.testing.assert_close(a_img, expected_img)


def test_occlusion_returns_ordinary_tensors():
    model = seeded(SmallCNN)
    attr = Occlusion(model).attribute(torch.randn(1, 3, 8, 8), sliding_window_shapes=(3, 4, 4), strides=4, target=0)
    assert not attr.is_inference()
    assert (attr * torch.ones(1, requires_grad=True)).requires_grad


class ViewingNet(torch.nn.Module):
    """Calls .view on a conv activation: fails on channels-last strides."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        h = self.conv(x)
        return self.fc(h.view(h.shape[0], -1))


def test_occlusion_works_on_a_model_that_views_its_activations():
    torch.manual_seed(0)
    model = ViewingNet().eval()
    x = torch.randn(2, 3, 8, 8)
    got = Occlusion(model).attribute(x, sliding_window_shapes=(3, 3, 3), strides=(3, 2, 2), target=1)
    torch.testing.assert_close(got, naive_occlusion(model, x, (3, 3, 3), (3, 2, 2), target=1))
