"""Gradient and path methods against closed forms and invariants."""

import pytest
import torch

from attribution import FeatureAblation, GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from attribution.functional import INTEGRATION_METHODS, integration_nodes
from tests.models import SmallCNN, TwoInput, seeded


def _weights(linear, target):
    return linear.fc.weight[target].detach()


def test_saliency_and_input_x_gradient_on_a_linear_model(linear):
    x = torch.randn(4, 6)
    w = _weights(linear, 2)
    torch.testing.assert_close(Saliency(linear).attribute(x, target=2), w.abs().expand(4, 6))
    torch.testing.assert_close(Saliency(linear).attribute(x, target=2, abs=False), w.expand(4, 6))
    torch.testing.assert_close(InputXGradient(linear).attribute(x, target=2), w * x)


@pytest.mark.parametrize("method", INTEGRATION_METHODS)
@pytest.mark.parametrize("n_steps", [2, 7, 50])
def test_integrated_gradients_is_exact_on_a_linear_model(linear, method, n_steps):
    x, b = torch.randn(3, 6), torch.randn(1, 6)
    attr, delta = IntegratedGradients(linear).attribute(
        x, baselines=b, target=[0, 2, 1], n_steps=n_steps, method=method, return_convergence_delta=True
    )
    w = linear.fc.weight.detach()[[0, 2, 1]]
    torch.testing.assert_close(attr, w * (x - b))
    torch.testing.assert_close(delta, torch.zeros(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", INTEGRATION_METHODS)
def test_quadrature_weights_sum_to_one(method):
    for n in (2, 3, 10, 200):
        alphas, weights = integration_nodes(n, method)
        assert abs(weights.sum().item() - 1) < 1e-12
        assert alphas.min() >= 0 and alphas.max() <= 1


def test_integrated_gradients_completeness_on_a_cnn(cnn):
    x = torch.randn(3, 3, 8, 8)
    attr, delta = IntegratedGradients(cnn).attribute(x, target=1, n_steps=50, return_convergence_delta=True)
    with torch.no_grad():
        expected = cnn(x)[:, 1] - cnn(torch.zeros_like(x))[:, 1]
    total = attr.sum(dim=(1, 2, 3))
    assert (total - expected).abs().max() < 2e-3 * expected.abs().max().clamp_min(1)
    torch.testing.assert_close(delta, total - expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_right"])
def test_integrated_gradients_does_not_depend_on_internal_batch_size(cnn, method):
    x = torch.randn(3, 3, 8, 8)
    ig = IntegratedGradients(cnn)
    reference, ref_delta = ig.attribute(x, target=2, n_steps=9, method=method, return_convergence_delta=True)
    for size in (1, 3, 7, 100):
        attr, delta = ig.attribute(
            x, target=2, n_steps=9, method=method, internal_batch_size=size, return_convergence_delta=True
        )
        torch.testing.assert_close(attr, reference, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(delta, ref_delta, atol=1e-6, rtol=1e-5)


def test_memory_budget_splits_steps_into_chunks(cnn, monkeypatch):
    import attribution._internal.chunking as chunking

    x = torch.randn(2, 3, 8, 8)
    reference = IntegratedGradients(cnn).attribute(x, target=0, n_steps=20)
    monkeypatch.setattr(chunking, "CPU_MEMORY_BUDGET", 1)  # one step per chunk
    calls = []
    original = chunking.run_chunked

    def spy(total, work, **kwargs):
        original(total, lambda lo, hi: (calls.append(hi - lo), work(lo, hi)), **kwargs)

    monkeypatch.setattr("attribution.functional.path.run_chunked", spy)
    attr = IntegratedGradients(cnn).attribute(x, target=0, n_steps=20)
    assert calls == [1] * 20
    torch.testing.assert_close(attr, reference, atol=1e-6, rtol=1e-5)


def test_integrated_gradients_with_two_inputs_and_forward_args(two_input):
    image, table = torch.randn(3, 1, 6, 6), torch.randn(3, 5)
    scale = torch.tensor([[1.0], [2.0], [0.5]])
    ig = IntegratedGradients(two_input)
    (a_img, a_tab), delta = ig.attribute(
        (image, table), target=1, additional_forward_args=(scale,), n_steps=64, return_convergence_delta=True
    )
    assert a_img.shape == image.shape and a_tab.shape == table.shape
    assert delta.abs().max() < 1e-3
    # an extra argument changes the answer, so it must reach the model row by row
    (b_img, _) = ig.attribute((image, table), target=1, additional_forward_args=(scale * 3,), n_steps=64)
    assert not torch.allclose(a_img, b_img)


def test_multiply_by_inputs_false_gives_the_integrated_gradient(linear):
    x = torch.randn(2, 6)
    attr = IntegratedGradients(linear, multiply_by_inputs=False).attribute(x, baselines=1.0, target=0)
    torch.testing.assert_close(attr, linear.fc.weight.detach()[0].expand(2, 6))


def test_gradient_shap_on_a_linear_model_is_w_times_mean_difference(linear):
    x = torch.randn(2, 6)
    dist = torch.randn(5, 6)
    attr, delta = GradientShap(linear).attribute(
        x, baselines=dist, n_samples=400, target=1, return_convergence_delta=True
    )
    w = linear.fc.weight.detach()[1]
    expected = w * (x - dist.mean(0))
    torch.testing.assert_close(attr, expected, atol=0.15 * w.abs().max().item(), rtol=0)
    assert delta.shape == (2 * 400,)
    assert delta.abs().max() < 1e-5  # exact per sample on a linear model


def test_gradient_shap_single_baseline_no_noise_equals_expected_gradients(cnn):
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    attr = GradientShap(cnn).attribute(x, baselines=torch.zeros(1, 3, 8, 8), n_samples=2000, target=0)
    ig = IntegratedGradients(cnn).attribute(x, target=0, n_steps=64)
    # E_a[grad(a x) * x] over a ~ U(0, 1) is IG from a zero baseline
    err = (attr - ig).abs().sum() / ig.abs().sum()
    assert err < 0.1


def test_gradient_shap_is_reproducible_from_the_global_seed(cnn):
    x = torch.randn(2, 3, 8, 8)
    dist = torch.randn(4, 3, 8, 8)
    torch.manual_seed(7)
    a = GradientShap(cnn).attribute(x, baselines=dist, n_samples=5, stdevs=0.1, target=0)
    torch.manual_seed(7)
    b = GradientShap(cnn).attribute(x, baselines=dist, n_samples=5, stdevs=0.1, target=0)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_aggregates_match_their_definition(mlp, nt_type):
    x = torch.randn(3, 6)
    nt = NoiseTunnel(Saliency(mlp))
    torch.manual_seed(3)
    got = nt.attribute(x, nt_type=nt_type, nt_samples=6, stdevs=0.5, target=1, abs=False)
    # redo the draws by hand: one batch of 6 noisy copies of each example, drawn example-major as Captum does
    torch.manual_seed(3)
    noisy = x.repeat_interleave(6, dim=0)
    noisy = noisy + 0.5 * torch.randn_like(noisy)
    per_copy = Saliency(mlp).attribute(noisy, target=1, abs=False).view(3, 6, 6).transpose(0, 1)
    expected = {
        "smoothgrad": per_copy.mean(0),
        "smoothgrad_sq": (per_copy**2).mean(0),
        "vargrad": per_copy.var(0, unbiased=False),
    }[nt_type]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_noise_tunnel_results_do_not_depend_on_the_sample_batch_size(linear):
    # A linear model's gradient is the same at every noisy copy, whatever the draws.
    x = torch.randn(3, 6)
    expected = Saliency(linear).attribute(x, target=[0, 1, 2], abs=False)
    for size in (None, 1, 2, 3, 7):
        got = NoiseTunnel(Saliency(linear)).attribute(
            x, nt_samples=7, nt_samples_batch_size=size, stdevs=0.3, target=[0, 1, 2], abs=False
        )
        torch.testing.assert_close(got, expected)
        _, delta = NoiseTunnel(IntegratedGradients(linear)).attribute(
            x, nt_samples=7, nt_samples_batch_size=size, target=[0, 1, 2], n_steps=4, return_convergence_delta=True
        )
        assert delta.shape == (3 * 7,) and delta.abs().max() < 1e-5


def test_noise_tunnel_draws_baselines_from_a_distribution(linear):
    x = torch.randn(2, 6)
    dist = torch.randn(10, 6)
    attr = NoiseTunnel(IntegratedGradients(linear)).attribute(
        x, nt_samples=500, stdevs=0.0, draw_baseline_from_distrib=True, baselines=dist, target=0
    )
    expected = linear.fc.weight.detach()[0] * (x - dist.mean(0))
    torch.testing.assert_close(attr, expected, atol=0.2, rtol=0)


def test_noise_tunnel_over_two_inputs_keeps_the_structure():
    model = seeded(TwoInput)
    image, table = torch.randn(2, 1, 6, 6), torch.randn(2, 5)
    a_img, a_tab = NoiseTunnel(InputXGradient(model)).attribute(
        (image, table), nt_samples=3, stdevs=(0.1, 0.2), target=0, additional_forward_args=2.0
    )
    assert a_img.shape == image.shape and a_tab.shape == table.shape


def test_noise_tunnel_repeats_per_example_feature_masks_with_the_noisy_copies():
    model = seeded(TwoInput)
    image, table = torch.randn(2, 1, 6, 6), torch.randn(2, 5)
    masks = (torch.zeros(1, 1, 6, 6, dtype=torch.long), torch.tensor([[1, 1, 2, 2, 3], [1, 2, 3, 3, 3]]))
    kwargs = dict(target=0, additional_forward_args=2.0, feature_mask=masks)
    noisy = NoiseTunnel(FeatureAblation(model)).attribute((image, table), nt_samples=3, stdevs=1e-12, **kwargs)
    plain = FeatureAblation(model).attribute((image, table), **kwargs)
    for got, expected in zip(noisy, plain):
        torch.testing.assert_close(got, expected)


def test_gradients_work_under_no_grad_and_inference_mode():
    model = seeded(SmallCNN)
    x = torch.randn(2, 3, 8, 8)
    expected = IntegratedGradients(model).attribute(x, target=0, n_steps=8)
    with torch.no_grad():
        torch.testing.assert_close(IntegratedGradients(model).attribute(x, target=0, n_steps=8), expected)
    with torch.inference_mode():
        x_inf = x.clone()
        got = IntegratedGradients(model).attribute(x_inf, target=0, n_steps=8)
    torch.testing.assert_close(got, expected)
