"""The monitor's faithfulness metrics: which methods log them, why others do not, and the probe settings."""

import torch

from attribution import IntegratedGradients
from attribution.metrics import area_under_curve, deletion_curve, faithfulness_correlation
from lightning_xai._compute.expected import MetricPlan
from lightning_xai._compute.faithfulness import CORRELATION_SAMPLES, CURVE_STEPS, faithfulness
from lightning_xai._compute.history import History
from tests.models import SmallCNN, seeded

REQUESTED = ("deletion", "insertion", "faithfulness_correlation", "sparseness", "complexity")
LOGGED = {"deletion_auc", "insertion_auc", "faithfulness_correlation", "sparseness", "complexity"}


def test_only_input_attributions_of_an_output_log_them_and_the_others_say_why():
    plan = MetricPlan(("integrated_gradients", "layer_gradcam"), REQUESTED)
    assert LOGGED <= plan.for_method("integrated_gradients")
    assert not LOGGED & plan.for_method("layer_gradcam")
    assert LOGGED <= plan.logged()
    reason = plan.missing_reason("layer_gradcam", "deletion_auc", 0, History())
    assert "class score to the inputs" in reason
    unrequested = MetricPlan(("integrated_gradients",), ("deletion",))
    assert "not requested" in unrequested.missing_reason("integrated_gradients", "insertion_auc", 0, History())


def test_the_values_are_the_engines_with_the_probe_settings_and_leave_the_global_rng_alone():
    model = seeded(SmallCNN).eval()
    x, targets = torch.randn(3, 3, 8, 8), torch.tensor([0, 2, 1])
    maps = IntegratedGradients(model).attribute(x, target=targets, n_steps=8)
    state = torch.get_rng_state()
    values = faithfulness(model, x, maps, targets, (), REQUESTED, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert set(values) == LOGGED and all(v.shape == (3,) for v in values.values())
    curve = deletion_curve(model, x, maps, targets, 0.0, n_steps=CURVE_STEPS)
    torch.testing.assert_close(values["deletion_auc"], area_under_curve(curve))
    size = round(0.1 * x[0].numel())
    correlation = faithfulness_correlation(
        model, x, maps, targets, 0.0, n_perturb_samples=CORRELATION_SAMPLES, subset_size=size, seed=5
    )
    torch.testing.assert_close(values["faithfulness_correlation"], correlation)
