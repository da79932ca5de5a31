"""NeuronFeatureAblation against hand computations and Captum.

Oracles: a linear layer's unit drops by W[j, f] (x_f - b_f) when input feature f is ablated; a loop that
ablates each feature group and reruns the layer; FeatureAblation of the model cut at the layer by hand;
selectors that sum units give the sum of the units' attributions (ablation drops are linear in the unit).
"""

import pytest
import torch
from torch import nn

from attribution import (
    ArgumentError,
    ArgumentTypeError,
    FeatureAblation,
    NeuronAttribution,
    NeuronFeatureAblation,
    PerturbationAttribution,
    registry,
)
from tests.models import MLP, SmallCNN, Text, TwoInput, TwoLinear, seeded


class BrokenHead(nn.Module):
    """Everything after fc1 raises: a neuron method must not need it."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 4)

    def forward(self, x):
        self.fc1(x)
        raise RuntimeError("the head is not needed")


def _quadrants(size=8):
    return torch.arange(4).view(1, 1, 2, 2).repeat_interleave(size // 2, 2).repeat_interleave(size // 2, 3)


def _loop(unit, x, mask, baseline):
    """One forward per feature group: the unit's drop when the group takes the baseline."""
    reference = unit(x)
    drops = torch.zeros(x.shape[0], int(mask.max()) + 1)
    for g in range(drops.shape[1]):
        ablated = torch.where((mask == g).expand_as(x), baseline, x)
        drops[:, g] = reference - unit(ablated)
    return drops[:, mask.expand_as(x)[0].flatten()].view_as(x)


# --------------------------------------------------------------------------- hand computations


def test_a_linear_unit_drops_by_weight_times_input_minus_baseline():
    model = seeded(TwoLinear)
    x, baselines = torch.randn(3, 5), torch.tensor([0.0, 1.0, -1.0, 0.5, 2.0])
    weight = model.fc1.weight.detach()
    for j in (0, 3):
        attr = NeuronFeatureAblation(model, model.fc1).attribute(x, j, baselines)
        torch.testing.assert_close(attr, weight[j] * (x - baselines))
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    attr = NeuronFeatureAblation(model, "fc1").attribute(x, neuron_selector=(2,), feature_mask=mask)
    contributions = weight[2] * x
    groups = torch.stack([contributions[:, :2].sum(1), contributions[:, 2:].sum(1)], 1)
    torch.testing.assert_close(attr, groups[:, mask[0]])


@pytest.mark.parametrize("to_input", [False, True])
def test_a_conv_unit_matches_a_loop_over_feature_groups(to_input):
    model = seeded(SmallCNN)
    x = torch.randn(2, 3, 8, 8)
    mask = _quadrants()
    layer = model.conv2 if to_input else model.conv1  # conv2's input is relu(conv1(x))
    attr = NeuronFeatureAblation(model, layer).attribute(
        x, (1, 2, 3), baselines=0.5, feature_mask=mask, attribute_to_neuron_input=to_input
    )
    with torch.no_grad():
        between = torch.relu if to_input else torch.clone
        expected = _loop(lambda v: between(model.conv1(v))[:, 1, 2, 3], x, mask, torch.tensor(0.5))
    torch.testing.assert_close(attr, expected)


def test_equals_feature_ablation_of_the_model_cut_at_the_layer():
    model = seeded(MLP)
    x = torch.randn(4, 6)
    attr = NeuronFeatureAblation(model, model.act).attribute(x, neuron_selector=5, baselines=x[:1])
    cut = lambda v: model.act(model.fc1(v))[:, 5]  # noqa: E731
    torch.testing.assert_close(attr, FeatureAblation(cut).attribute(x, baselines=x[:1]))


def test_selector_forms_and_summed_units():
    model = seeded(MLP)
    x = torch.randn(3, 6)
    ablator = NeuronFeatureAblation(model, model.fc1)
    units = [ablator.attribute(x, j) for j in range(8)]
    torch.testing.assert_close(ablator.attribute(x, (4,)), units[4])
    torch.testing.assert_close(ablator.attribute(x, (slice(1, 4),)), units[1] + units[2] + units[3])
    torch.testing.assert_close(ablator.attribute(x, lambda out: out.sum(1)), sum(units), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ablator.attribute(x, lambda out: out[:, 7]), units[7])


def test_multiple_inputs_extra_arguments_and_integer_inputs():
    model = seeded(TwoInput)
    image, table, scale = torch.randn(2, 1, 6, 6), torch.randn(2, 5), torch.tensor([[1.0], [3.0]])
    attr_image, attr_table = NeuronFeatureAblation(model, model.fc_tab).attribute(
        (image, table), 1, baselines=(0.0, 1.0), additional_forward_args=(scale,)
    )
    # fc_tab never sees the image: zero, up to the rounding of a matmul over batches of another size
    torch.testing.assert_close(attr_image, torch.zeros_like(attr_image), atol=1e-6, rtol=0)
    torch.testing.assert_close(attr_table, model.fc_tab.weight[1].detach() * (table - 1.0))
    tokens = seeded(Text, vocab=10, n_out=2)
    ids = torch.tensor([[1, 2, 3], [4, 4, 9]])
    attr = NeuronFeatureAblation(tokens, tokens.embedding).attribute(ids, (1, 2), baselines=0)
    table = tokens.embedding.weight.detach()
    expected = torch.zeros(2, 3)
    expected[:, 1] = table[ids[:, 1], 2] - table[0, 2]  # only token 1 feeds unit (token 1, dim 2)
    assert attr.dtype == torch.float32
    torch.testing.assert_close(attr, expected)


def test_perturbations_per_eval_changes_nothing_and_copies_are_batched():
    model = seeded(SmallCNN)
    x = torch.randn(2, 3, 4, 4)
    ablator = NeuronFeatureAblation(model, model.conv2)
    results = [ablator.attribute(x, (0, 1, 1), perturbations_per_eval=p) for p in (1, 5, None, 100)]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0])
    rows = []
    hook = model.conv1.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    try:
        ablator.attribute(x, (0, 1, 1), feature_mask=_quadrants(4), perturbations_per_eval=3)
    finally:
        hook.remove()
    assert rows == [2, 6, 2]  # the unperturbed batch, then 4 groups in copies of 3 and 1


def test_the_model_runs_only_up_to_the_layer():
    model = seeded(BrokenHead)
    x = torch.randn(2, 5)
    attr = NeuronFeatureAblation(model, model.fc1).attribute(x, 1)
    torch.testing.assert_close(attr, model.fc1.weight[1].detach() * x)


# --------------------------------------------------------------------------- Captum, traits, state, errors


def test_parity_with_captum():
    captum = pytest.importorskip("captum.attr")
    model = seeded(SmallCNN)
    x = torch.randn(2, 3, 8, 8)
    for kwargs in ({"feature_mask": _quadrants(), "baselines": 0.5}, {"attribute_to_neuron_input": True}):
        ours = NeuronFeatureAblation(model, model.conv2).attribute(x, (1, 2, 3), **kwargs)
        theirs = captum.NeuronFeatureAblation(model, model.conv2).attribute(
            x, (1, 2, 3), perturbations_per_eval=64, **kwargs
        )
        torch.testing.assert_close(ours, theirs)
    two = seeded(TwoInput)
    inputs, scale = (torch.randn(2, 1, 6, 6), torch.randn(2, 5)), torch.tensor([[1.0], [3.0]])
    masks = (torch.zeros(1, 1, 6, 6, dtype=torch.long), torch.tensor([[1, 1, 2, 2, 3]]))
    ours = NeuronFeatureAblation(two, two.fc_img).attribute(
        inputs, 2, additional_forward_args=scale, feature_mask=masks
    )
    theirs = captum.NeuronFeatureAblation(two, two.fc_img).attribute(
        inputs, 2, additional_forward_args=scale, feature_mask=masks
    )
    torch.testing.assert_close(ours, theirs)


def test_traits_and_probe_options():
    record = registry.record("neuron_feature_ablation")
    assert record.takes_neuron_selector and not record.takes_target and not record.attributes_to_layer
    assert record.perturbs_feature_groups and record.multiplies_by_inputs and record.needs_layer
    assert not record.needs_float_inputs
    assert record.probe_options(torch.zeros(2, 3, 16, 16))["feature_mask"].shape == (1, 1, 16, 16)
    assert NeuronFeatureAblation(seeded(MLP), "fc1").multiplies_by_inputs
    assert issubclass(NeuronFeatureAblation, NeuronAttribution) and issubclass(
        NeuronFeatureAblation, PerturbationAttribution
    )  # Captum's bases


def test_the_caller_state_is_left_alone():
    model = seeded(SmallCNN)
    model.conv1.train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    before = x.detach().clone()
    NeuronFeatureAblation(model, model.conv2).attribute(x, (0, 0, 0), feature_mask=_quadrants())
    assert torch.equal(x.detach(), before) and x.grad is None and model.conv1.training
    with pytest.raises(RuntimeError, match="not needed"):  # the head runs when the layer is not reached
        NeuronFeatureAblation(seeded(BrokenHead), nn.Linear(5, 4)).attribute(torch.randn(2, 5), 0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_errors_name_the_argument():
    model = seeded(MLP)
    x = torch.randn(2, 6)
    ablator = NeuronFeatureAblation(model, model.fc1)
    with pytest.raises(ArgumentTypeError, match="neuron_selector"):
        ablator.attribute(x, "unit 3")
    with pytest.raises(ArgumentError, match="neuron_selector: index 8 is out of range"):
        ablator.attribute(x, 8)
    with pytest.raises(ArgumentError, match="feature_mask: expected a shape"):
        ablator.attribute(x, 0, feature_mask=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ArgumentError, match="baselines"):
        ablator.attribute(x, 0, baselines=torch.zeros(3))
    with pytest.raises(ArgumentError, match="perturbations_per_eval"):
        ablator.attribute(x, 0, perturbations_per_eval=-1)
    with pytest.raises(ArgumentError, match="did not run"):
        NeuronFeatureAblation(model, nn.Linear(2, 2)).attribute(x, 0)
