"""The caller's model, tensors and hooks are exactly as they were, also after an exception."""

import pytest
import torch

from attribution import NoiseTunnel, Saliency, registry
from tests.models import SmallCNN, seeded

CALL_KWARGS = {
    "saliency": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 5},
    "gradient_shap": {"n_samples": 3},
    "layer_gradcam": {},
    "occlusion": {"sliding_window_shapes": (3, 4, 4), "strides": (3, 2, 2)},
    "deep_lift": {},
    "deep_lift_shap": {"baselines": torch.zeros(3, 3, 8, 8)},
    "guided_backprop": {},
    "deconvolution": {},
    "guided_gradcam": {},
    "feature_ablation": {"feature_mask": torch.arange(4).view(2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)},
    "feature_permutation": {},
    "shapley_value_sampling": {
        "n_samples": 2,
        "feature_mask": torch.arange(4).view(1, 2, 2).repeat_interleave(4, 1).repeat_interleave(4, 2),
    },
    "shapley_values": {"feature_mask": torch.arange(3).view(3, 1, 1)},
    "lime": {"n_samples": 10, "feature_mask": torch.arange(3).view(3, 1, 1)},
    "kernel_shap": {"n_samples": 10, "feature_mask": torch.arange(3).view(3, 1, 1)},
    "layer_activation": {},
    "layer_gradient_x_activation": {},
    "internal_influence": {"n_steps": 5},
    "layer_conductance": {"n_steps": 5},
    "layer_integrated_gradients": {"n_steps": 5},
    "neuron_gradient": {"neuron_selector": (1, 2, 3)},
    "neuron_integrated_gradients": {"neuron_selector": (1, 2, 3), "n_steps": 5},
    "neuron_conductance": {"neuron_selector": (1, 2, 3), "n_steps": 5},
    "neuron_gradient_shap": {"neuron_selector": (1, 2, 3), "baselines": torch.zeros(2, 3, 8, 8)},
    "neuron_deep_lift": {"neuron_selector": (1, 2, 3)},
    "neuron_deep_lift_shap": {"neuron_selector": (1, 2, 3)},
    "layer_deep_lift": {},
    "layer_deep_lift_shap": {"baselines": torch.zeros(3, 3, 8, 8)},
    "layer_gradient_shap": {"n_samples": 3},
    "neuron_guided_backprop": {"neuron_selector": (1, 2, 3)},
    "neuron_deconvolution": {"neuron_selector": (1, 2, 3)},
    "layer_feature_ablation": {"layer_mask": torch.arange(6).view(1, 6, 1, 1)},
    "layer_feature_permutation": {"layer_mask": torch.arange(6).view(1, 6, 1, 1)},
    "neuron_feature_ablation": {"neuron_selector": (1, 2, 3), "feature_mask": torch.arange(3).view(3, 1, 1)},
    "lrp": {},
    "layer_lrp": {},
}


def _kwargs(name):
    return dict(CALL_KWARGS[name], **({"target": 1} if registry.record(name).takes_target else {}))


def test_every_registered_method_has_a_state_test():
    assert set(CALL_KWARGS) == set(registry.available())


def _snapshot(model, x):
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "grads": [p.grad for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "x_requires_grad": x.requires_grad,
        "x_grad": x.grad,
        "function_modes": len(torch.overrides._get_current_function_mode_stack()),
    }


def _build(name, model):
    return registry.build(name, model, layer="conv2")


def _mixed_model():
    model = seeded(SmallCNN)
    model.conv1.train()  # a module the user left in train mode on purpose
    model.fc.weight.requires_grad_(False)  # and a frozen parameter
    return model


@pytest.mark.parametrize("name", sorted(CALL_KWARGS))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_attribution_leaves_the_caller_state_alone(name, requires_grad):
    model = _mixed_model()
    x = torch.randn(2, 3, 8, 8, requires_grad=requires_grad)
    before = _snapshot(model, x)
    rng = torch.get_rng_state()
    _build(name, model).attribute(x, **_kwargs(name))
    assert _snapshot(model, x) == before
    if not registry.record(name).draws_random_numbers:
        assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("name", sorted(CALL_KWARGS))
def test_state_is_restored_when_the_model_raises(name):
    model = _mixed_model()
    kwargs = _kwargs(name)
    if name == "integrated_gradients":
        kwargs["internal_batch_size"] = 2
    if name == "occlusion":
        kwargs["perturbations_per_eval"] = 1
    calls = []

    def counting(x):
        calls.append(1)
        return model(x)

    x = torch.randn(2, 3, 8, 8)
    registry.build(name, counting, layer=model.conv2).attribute(x, **kwargs)  # a dry run counts the calls
    raise_on = min(len(calls), 2)  # mid-attribution where there are several calls, else the only one
    calls.clear()

    def exploding(x):
        calls.append(1)
        if len(calls) == raise_on:
            raise RuntimeError("boom")
        return model(x)

    before = _snapshot(model, x)
    explainer = registry.build(name, exploding, layer=model.conv2)
    with pytest.raises(RuntimeError, match="boom"):
        explainer.attribute(x, **kwargs)
    assert _snapshot(model, x) == before


def test_noise_tunnel_leaves_the_caller_state_alone():
    model = _mixed_model()
    x = torch.randn(2, 3, 8, 8)
    before = _snapshot(model, x)
    NoiseTunnel(Saliency(model)).attribute(x, target=0, nt_samples=3)
    assert _snapshot(model, x) == before
