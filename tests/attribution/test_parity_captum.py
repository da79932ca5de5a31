"""Parity with Captum where Captum is right, and tests that show where it is not.

Skipped when Captum (the ``compare`` extra) is not installed; CI installs it.
"""

import pytest
import torch

from attribution import (
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from tests.models import MLP, Linear, SmallCNN, TwoInput, seeded

captum = pytest.importorskip("captum.attr")

N = 3


def _cases():
    """(name, model, inputs, forward args, layer name, occlusion windows) for the three model kinds."""
    torch.manual_seed(0)
    return {
        "cnn": (seeded(SmallCNN), torch.randn(N, 3, 8, 8), None, "conv2", ((3, 3, 3),), ((3, 2, 2),)),
        "mlp": (seeded(MLP), torch.randn(N, 6), None, "fc1", ((2,),), ((1,),)),
        "two_input": (
            seeded(TwoInput),
            (torch.randn(N, 1, 6, 6), torch.randn(N, 5)),
            (torch.tensor([[1.0], [2.0], [0.5]]),),
            "conv",
            ((1, 2, 2), (2,)),
            ((1, 2, 2), (1,)),
        ),
    }


CASES = _cases()
TARGETS = {"int": 1, "list": [0, 2, 1], "tensor": torch.tensor([2, 1, 0])}


def _same(ours, theirs, atol=1e-5, rtol=1e-4):
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), atol=atol, rtol=rtol)


def _run(ours_cls, theirs_cls, case, target, kwargs=None, ctor=()):
    model, inputs, args, *_ = CASES[case]
    kwargs = kwargs or {}
    ours = ours_cls(model, *ctor).attribute(inputs, target=target, additional_forward_args=args, **kwargs)
    theirs = theirs_cls(model, *ctor).attribute(inputs, target=target, additional_forward_args=args, **kwargs)
    return ours, theirs


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_saliency_and_input_x_gradient(case, target):
    _same(*_run(Saliency, captum.Saliency, case, TARGETS[target]))
    _same(*_run(Saliency, captum.Saliency, case, TARGETS[target], {"abs": False}))
    _same(*_run(InputXGradient, captum.InputXGradient, case, TARGETS[target]))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
def test_integrated_gradients(case, target, method):
    kwargs = {"n_steps": 20, "method": method, "return_convergence_delta": True}
    (ours, our_delta), (theirs, their_delta) = _run(
        IntegratedGradients, captum.IntegratedGradients, case, TARGETS[target], kwargs
    )
    _same(ours, theirs)
    torch.testing.assert_close(our_delta, their_delta.to(our_delta.dtype), atol=1e-4, rtol=1e-3)


def test_integrated_gradients_with_baselines_and_internal_batch_size():
    model, x, *_ = CASES["cnn"]
    b = torch.rand(1, 3, 8, 8)
    kwargs = {"baselines": b, "n_steps": 16, "internal_batch_size": 5}
    _same(*_run(IntegratedGradients, captum.IntegratedGradients, "cnn", [0, 1, 2], kwargs))


def test_captum_trapezoid_rule_is_off_by_one_step_and_ours_is_exact():
    model = seeded(Linear)
    x = torch.randn(2, 6)
    exact = model.fc.weight.detach()[0] * x
    kwargs = {"target": 0, "n_steps": 4, "method": "riemann_trapezoid"}
    ours = IntegratedGradients(model).attribute(x, **kwargs)
    theirs = captum.IntegratedGradients(model).attribute(x, **kwargs)
    torch.testing.assert_close(ours, exact)
    torch.testing.assert_close(theirs, exact * 3 / 4)  # Captum's weights sum to (n - 1) / n


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_layer_gradcam(case, target):
    model, _, _, layer, *_ = CASES[case]
    module = dict(model.named_modules())[layer]
    for kwargs in ({}, {"relu_attributions": True}, {"attr_dim_summation": False}, {"attribute_to_layer_input": True}):
        _same(*_run(LayerGradCam, captum.LayerGradCam, case, TARGETS[target], kwargs, ctor=(module,)))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_occlusion(case, target):
    _, inputs, _, _, windows, strides = CASES[case]
    single = not isinstance(inputs, tuple)
    kwargs = {
        "sliding_window_shapes": windows[0] if single else windows,
        "strides": strides[0] if single else strides,
        "baselines": 0.1 if single else (0.1, 0.1),
    }
    ours, theirs = _run(Occlusion, captum.Occlusion, case, TARGETS[target], kwargs)
    _same(ours, theirs)


def test_captum_occlusion_fails_on_a_shared_scalar_baseline_for_two_inputs():
    model, inputs, args, _, windows, strides = CASES["two_input"]
    kwargs = {"sliding_window_shapes": windows, "strides": strides, "target": 1, "additional_forward_args": args}
    with pytest.raises(IndexError):
        captum.Occlusion(model).attribute(inputs, baselines=0.1, **kwargs)
    per_input = captum.Occlusion(model).attribute(inputs, baselines=(0.1, 0.1), **kwargs)
    _same(Occlusion(model).attribute(inputs, baselines=0.1, **kwargs), per_input)


def test_occlusion_perturbations_per_eval_matches_captum():
    kwargs = {"sliding_window_shapes": (3, 3, 3), "strides": (3, 2, 2), "perturbations_per_eval": 7}
    _same(*_run(Occlusion, captum.Occlusion, "cnn", [0, 1, 2], kwargs))


def test_tuple_targets_on_a_multi_dim_output():
    mlp = seeded(MLP)
    model = lambda x: mlp(x).view(-1, 3, 1)  # noqa: E731
    x = torch.randn(N, 6)
    for target in [(2, 0), [(0, 0), (1, 0), (2, 0)]]:
        _same(Saliency(model).attribute(x, target=target), captum.Saliency(model).attribute(x, target=target))
        _same(
            IntegratedGradients(model).attribute(x, target=target, n_steps=8),
            captum.IntegratedGradients(model).attribute(x, target=target, n_steps=8),
        )


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_without_noise_matches(case, target, nt_type):
    model, inputs, args, *_ = CASES[case]
    kwargs = {"nt_type": nt_type, "nt_samples": 3, "stdevs": 0.0, "n_steps": 8, "additional_forward_args": args}
    ours = NoiseTunnel(IntegratedGradients(model)).attribute(inputs, target=TARGETS[target], **kwargs)
    theirs = captum.NoiseTunnel(captum.IntegratedGradients(model)).attribute(inputs, target=TARGETS[target], **kwargs)
    _same(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_statistics_agree_with_captum(nt_type):
    model = seeded(MLP)
    x = torch.randn(2, 6)
    kwargs = {"nt_type": nt_type, "nt_samples": 4000, "stdevs": 0.5, "target": 1, "abs": False}
    ours = NoiseTunnel(Saliency(model)).attribute(x, nt_samples_batch_size=1000, **kwargs)
    theirs = captum.NoiseTunnel(captum.Saliency(model)).attribute(x, nt_samples_batch_size=1000, **kwargs)
    scale = theirs.abs().max()
    assert (ours - theirs).abs().max() < 0.05 * scale


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("nt_samples_batch_size", [None, 2])
def test_seeded_noise_tunnel_with_baselines_draws_captums_noise(nt_type, nt_samples_batch_size):
    # Captum draws each batch of noisy copies example-major (all copies of example 0 first): with the same
    # seed every (example, copy) gets the same noise from both, whatever the batch size of the copies.
    model, x, *_ = CASES["cnn"]
    kwargs = {
        "nt_type": nt_type,
        "nt_samples": 5,
        "nt_samples_batch_size": nt_samples_batch_size,
        "stdevs": 0.2,
        "baselines": torch.rand(N, 3, 8, 8),
        "n_steps": 8,
        "target": [0, 2, 1],
    }
    torch.manual_seed(11)
    ours = NoiseTunnel(IntegratedGradients(model)).attribute(x, **kwargs)
    ours_next = torch.rand(4)
    torch.manual_seed(11)
    theirs = captum.NoiseTunnel(captum.IntegratedGradients(model)).attribute(x, **kwargs)
    _same(ours, theirs, atol=1e-4 * theirs.abs().max())  # relative to the scale: vargrad's values are tiny here
    torch.testing.assert_close(ours_next, torch.rand(4))  # and the generator is left where Captum leaves it


def test_seeded_noise_tunnel_over_two_inputs_draws_captums_noise():
    # Captum draws noise for an input of stdev 0 too, so the next input's noise comes from the same place.
    model, inputs, args, *_ = CASES["two_input"]
    kwargs = {
        "nt_samples": 4,
        "stdevs": (0.0, 0.3),
        "baselines": (torch.rand(N, 1, 6, 6), 0.5),
        "n_steps": 8,
        "target": 1,
        "additional_forward_args": args,
        "return_convergence_delta": True,
    }
    torch.manual_seed(5)
    ours, our_delta = NoiseTunnel(IntegratedGradients(model)).attribute(inputs, **kwargs)
    torch.manual_seed(5)
    theirs, their_delta = captum.NoiseTunnel(captum.IntegratedGradients(model)).attribute(inputs, **kwargs)
    _same(ours, theirs)
    torch.testing.assert_close(our_delta, their_delta.to(our_delta.dtype), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_shap_statistics_agree_with_captum(case):
    model, inputs, args, *_ = CASES[case]
    single = not isinstance(inputs, tuple)
    dist = tuple(torch.randn(6, *x.shape[1:]) * 0.5 for x in ((inputs,) if single else inputs))
    kwargs = {
        "baselines": dist[0] if single else dist,
        "n_samples": 1500,
        "stdevs": 0.1,
        "target": [0, 1, 2],
        "additional_forward_args": args,
    }
    ours = GradientShap(model).attribute(inputs, **kwargs)
    theirs = captum.GradientShap(model).attribute(inputs, **kwargs)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
        assert (a - b).abs().sum() / b.abs().sum() < 0.1


def test_gradient_shap_deltas_have_captums_layout():
    model = seeded(Linear)
    x = torch.randn(N, 6)
    _, ours = GradientShap(model).attribute(x, n_samples=4, target=0, return_convergence_delta=True)
    _, theirs = captum.GradientShap(model).attribute(
        x, baselines=torch.zeros(1, 6), n_samples=4, target=0, return_convergence_delta=True
    )
    assert ours.shape == theirs.shape


@pytest.mark.parametrize("case", sorted(CASES))
def test_callable_targets_match_captum_per_example_targets(case):
    model, inputs, args, layer, windows, strides = CASES[case]
    labels = [2, 0, 1]

    def pick(output):
        return output[torch.arange(output.shape[0]), torch.tensor(labels).repeat(output.shape[0] // N)]

    single = not isinstance(inputs, tuple)
    module = dict(model.named_modules())[layer]
    calls = [
        (Saliency(model), captum.Saliency(model), {}),
        (IntegratedGradients(model), captum.IntegratedGradients(model), {"n_steps": 8}),
        (LayerGradCam(model, module), captum.LayerGradCam(model, module), {}),
        (
            Occlusion(model),
            captum.Occlusion(model),
            {"sliding_window_shapes": windows[0] if single else windows, "strides": strides[0] if single else strides},
        ),
    ]
    for ours, theirs, kwargs in calls:
        _same(
            ours.attribute(inputs, target=pick, additional_forward_args=args, **kwargs),
            theirs.attribute(inputs, target=labels, additional_forward_args=args, **kwargs),
        )
