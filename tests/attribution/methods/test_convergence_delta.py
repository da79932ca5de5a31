"""``compute_convergence_delta``: Captum's public method, on every attribution class."""

import pytest
import torch

from attribution import ArgumentError, DeepLift, IntegratedGradients, LayerConductance, Saliency
from tests.models import MLP, Linear, SmallCNN, TwoInput, seeded


def test_it_is_the_delta_that_attribute_returns():
    model = seeded(MLP)
    x, b = torch.rand(4, 6), torch.rand(1, 6)
    ig = IntegratedGradients(model)
    attrs, delta = ig.attribute(x, baselines=b, target=1, n_steps=20, return_convergence_delta=True)
    torch.testing.assert_close(ig.compute_convergence_delta(attrs, b, x, target=1), delta)


def test_on_a_linear_model_the_closed_form_delta():
    model = seeded(Linear)
    x = torch.rand(3, 6)
    grads = Saliency(model).attribute(x, target=2, abs=False)  # the weights, for every row
    delta = Saliency(model).compute_convergence_delta(grads, 0.0, x, target=2)
    # sum(w) - w.x  (f(x) - f(0) = w.x): the saliency map is not the input's share
    expected = model.fc.weight[2].sum() - x @ model.fc.weight[2]
    torch.testing.assert_close(delta, expected.detach())


def test_tuples_of_inputs_and_extra_forward_arguments():
    model = seeded(TwoInput)
    inputs = (torch.rand(2, 1, 6, 6), torch.rand(2, 5))
    dl = DeepLift(model)
    attrs, delta = dl.attribute(inputs, target=0, additional_forward_args=(2.0,), return_convergence_delta=True)
    again = dl.compute_convergence_delta(attrs, (0.0, 0.0), inputs, target=0, additional_forward_args=(2.0,))
    torch.testing.assert_close(again, delta)
    assert again.abs().max() < 1e-5


def test_layer_attributions_count_by_their_per_example_totals():
    model = seeded(SmallCNN)
    x = torch.rand(2, 3, 8, 8)
    lc = LayerConductance(model, model.conv2)
    attrs, delta = lc.attribute(x, target=1, n_steps=30, return_convergence_delta=True)
    torch.testing.assert_close(lc.compute_convergence_delta(attrs, 0.0, x, target=1), delta)


def test_attributions_of_another_batch_size_are_an_argument_error():
    model = seeded(MLP)
    with pytest.raises(ArgumentError, match="attributions"):
        IntegratedGradients(model).compute_convergence_delta(torch.rand(3, 6), 0.0, torch.rand(4, 6), target=0)


def test_matches_captum():
    captum = pytest.importorskip("captum.attr")
    model = seeded(MLP)
    x, b = torch.rand(4, 6), torch.rand(4, 6)
    attrs = IntegratedGradients(model).attribute(x, baselines=b, target=0, n_steps=8)
    ours = IntegratedGradients(model).compute_convergence_delta(attrs, b, x, target=0)
    theirs = captum.IntegratedGradients(model).compute_convergence_delta(attrs, b, x, target=0)
    torch.testing.assert_close(ours, theirs)
