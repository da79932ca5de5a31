"""Options scaled to a time budget: the estimate counts the passes the methods really make, and the options
are as exact as the budget allows, within their floor and the registry's probe options."""

import pytest
import torch
from torch import nn

from attribution import registry
from lightning_xai._compute.budget import FEWEST, PassTimes, _estimate, any_scalable, budgeted_options, time_passes

METHODS = {"integrated_gradients": {}, "occlusion": {}, "layer_gradcam": {}}
IMAGES = torch.rand(4, 3, 64, 64)


def _chosen(seconds_per_pass, budget=10.0, methods=METHODS, metrics=("infidelity",)):
    times = PassTimes(forward=seconds_per_pass, forward_backward=3 * seconds_per_pass)
    return budgeted_options(methods, IMAGES, times, budget, metrics)


def test_a_fast_model_keeps_the_registry_probe_options():
    chosen = _chosen(1e-4)
    assert chosen.options["integrated_gradients"] == registry.record("integrated_gradients").probe_options(IMAGES)
    assert chosen.options["occlusion"] == registry.record("occlusion").probe_options(IMAGES)  # windows of 8 px
    assert "layer_gradcam" not in chosen.options and not chosen.over and not chosen.lowered


def test_a_slow_model_gets_the_most_exact_options_within_the_budget():
    chosen = _chosen(0.12)
    steps = chosen.options["integrated_gradients"]["n_steps"]
    window = chosen.options["occlusion"]["sliding_window_shapes"][-1]
    assert FEWEST < steps < 16 and 8 < window < 16, chosen
    assert chosen.seconds <= 10.0 and not chosen.over and chosen.lowered
    # One level more exact would be over the budget.
    finer = {"integrated_gradients": {"n_steps": steps + 1}, "occlusion": {}, "layer_gradcam": {}}
    side = 64 // (64 // window + 1)
    finer["occlusion"] = {"sliding_window_shapes": (3, side, side), "strides": (3, side, side)}
    times = PassTimes(0.12, 0.36)
    assert _estimate(finer, {}, IMAGES, times, ("infidelity",)) > 10.0


def test_too_slow_a_model_gets_the_floor_and_says_it_is_over():
    chosen = _chosen(10.0)
    assert chosen.options["integrated_gradients"] == {"n_steps": FEWEST}
    assert chosen.options["occlusion"]["strides"] == (3, 64 // FEWEST, 64 // FEWEST)
    assert chosen.over and chosen.seconds > 10.0
    assert "integrated_gradients n_steps=4" in chosen.describe() and "16x16 px" in chosen.describe()


def test_options_the_user_gave_are_not_scaled_and_count_in_the_estimate():
    methods = {"integrated_gradients": {"n_steps": 64}, "occlusion": {"sliding_window_shapes": (3, 4, 4)}}
    chosen = _chosen(10.0, methods=methods)
    assert chosen.options == {} and not any_scalable(methods, IMAGES)
    assert any_scalable({"saliency": {}, "occlusion": {}}, IMAGES)
    assert not any_scalable({"saliency": {}, "layer_gradcam": {}}, IMAGES)
    assert not any_scalable({"occlusion": {}}, torch.randint(0, 5, (4, 7)))  # token ids: no windows to scale
    slow = _estimate(methods, {}, IMAGES, PassTimes(1.0, 3.0), ())
    # The predictions, 64 steps, and 4x4 windows at the probe options' stride (8 px): 9 x 9 (the last one
    # clipped at the border) and the unoccluded output.
    assert slow == 1.0 + 64 * 3.0 + (9 * 9 + 1) * 1.0


def test_sensitivity_multiplies_what_each_scored_method_costs():
    times = PassTimes(1.0, 3.0)
    plain = _estimate({"integrated_gradients": {"n_steps": 8}}, {}, IMAGES, times, ())
    assert _estimate({"integrated_gradients": {"n_steps": 8}}, {}, IMAGES, times, ("sensitivity",)) == 1.0 + 9 * 24.0
    assert plain == 1.0 + 24.0


class _Counting(nn.Module):
    """A small CNN that counts the examples of its forward passes, and of its backward passes."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 3)
        self.forwards = 0

    def forward(self, x):
        self.forwards += len(x)
        return self.head(self.net(x))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("occlusion", {"sliding_window_shapes": (3, 16, 16), "strides": (3, 16, 16)}),
        ("occlusion", {"sliding_window_shapes": (3, 12, 12), "strides": (3, 12, 12)}),
        ("integrated_gradients", {"n_steps": 7}),
        ("gradient_shap", {"n_samples": 5}),
    ],
)
def test_the_estimate_counts_the_forward_passes_the_method_makes(name, options):
    """The cost model is in probe passes: with one second a pass, the estimate less the predictions' pass is
    the number of times the method runs the whole probe through the model."""
    model = _Counting()
    explainer = registry.build(name, model)
    explainer.attribute(IMAGES, target=torch.zeros(4, dtype=torch.long), **options)
    passes = model.forwards / len(IMAGES)
    estimate = _estimate({name: options}, {}, IMAGES, PassTimes(1.0, 1.0), ()) - 1.0
    assert passes == estimate


def test_time_passes_measures_and_leaves_no_gradient():
    model = _Counting()
    times = time_passes(model, IMAGES, ())
    assert 0 < times.forward and 0 < times.forward_backward
    assert model.forwards == 4 * len(IMAGES)  # a warm-up and a timed pass each
    assert all(p.grad is None for p in model.parameters())


def test_time_passes_estimates_the_backward_where_it_cannot_be_timed():
    class RefusesGrad(_Counting):
        def forward(self, x):
            if x.requires_grad:
                raise RuntimeError("no gradients here")
            return super().forward(x)

    times = time_passes(RefusesGrad(), IMAGES, ())
    assert times.forward_backward == 3 * times.forward > 0
    tokens = torch.randint(0, 10, (4, 6))
    embedding = nn.Sequential(nn.Embedding(10, 3), nn.Flatten(), nn.Linear(18, 2))
    times = time_passes(embedding, tokens, ())
    assert times.forward_backward == 3 * times.forward > 0
