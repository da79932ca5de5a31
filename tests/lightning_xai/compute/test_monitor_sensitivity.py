"""The monitor's sensitivity: measured from the explanation it already has, all perturbed copies in one call."""

import torch

from attribution import IntegratedGradients
from attribution.metrics import sensitivity_max
from lightning_xai._compute.explain import PERTURBATION_SAMPLES, _sensitivity
from tests.models import SmallCNN, seeded


class _Counting:
    """An explainer that records how many rows each ``attribute`` call explains."""

    def __init__(self, method) -> None:
        self.method, self.rows = method, []

    def attribute(self, inputs, **kwargs):
        self.rows.append(inputs.shape[0])
        return self.method.attribute(inputs, **kwargs)


def test_the_monitor_explains_only_the_perturbed_copies_and_all_in_one_call():
    model = seeded(SmallCNN)
    x, targets, options = torch.randn(3, 3, 8, 8), torch.tensor([0, 2, 1]), {"n_steps": 8}
    explainer = _Counting(IntegratedGradients(model))
    explained = explainer.attribute(x, target=targets, **options)  # what the monitor has already
    torch.manual_seed(0)
    reused = _sensitivity(explainer, x, targets, options, explained)
    assert explainer.rows == [3, 3 * PERTURBATION_SAMPLES]
    torch.manual_seed(0)  # the same value as explaining the probe again
    explain = IntegratedGradients(model).attribute
    again = sensitivity_max(explain, x, n_perturb_samples=PERTURBATION_SAMPLES, target=targets, **options)
    torch.testing.assert_close(reused, again)
