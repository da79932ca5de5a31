"""LayerFeatureAblation and LayerFeaturePermutation against oracles.

Oracles: closed forms when the model is linear after the layer (ablating unit j to b_j drops output k by
W[k, j] (a_j - b_j); a shuffle keeps each unit's batch sum, so a linear head's drops sum to 0 over the
batch), input FeatureAblation / FeaturePermutation run on the model *after* the layer with the layer's
values as inputs, invariance to perturbations_per_eval, and Captum where it is right.
"""

import pytest
import torch
from torch import nn

from attribution import (
    ArgumentError,
    ArgumentTypeError,
    FeatureAblation,
    FeaturePermutation,
    LayerActivation,
    LayerAttribution,
    LayerFeatureAblation,
    LayerFeaturePermutation,
    PerturbationAttribution,
    registry,
)
from attribution.methods.layer.perturbation import layer_cells
from tests.models import SmallCNN, Text, TwoInput, TwoLinear, seeded


class Pair(nn.Module):
    def forward(self, a, b):
        return torch.relu(a), torch.tanh(b)


class TupleLayer(nn.Module):
    """A layer returning two tensors (of different shapes), and one taking them both."""

    def __init__(self):
        super().__init__()
        self.fa, self.fb = nn.Linear(3, 4), nn.Linear(3, 2)
        self.pair = Pair()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        a, b = self.pair(self.fa(x), self.fb(x))
        return self.head(torch.cat([a, b], 1))


class InplaceAfter(nn.Module):
    """A non-idempotent in-place op right after the layer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc1(x)
        h.add_(1.0)
        return self.fc2(h)


def _after_conv2(model):
    """SmallCNN after conv2, as a function of conv2's output."""
    return lambda h: model.fc(model.pool(torch.relu(h)).flatten(1))


# --------------------------------------------------------------------------- closed forms


def test_ablating_a_unit_drops_the_output_by_weight_times_activation_minus_baseline():
    model = seeded(TwoLinear)
    x = torch.randn(3, 5)
    act = model.fc1(x).detach()
    baselines = torch.tensor([0.5, -1.0, 0.0, 2.0])
    for target in (0, 2):
        attr = LayerFeatureAblation(model, model.fc1).attribute(x, layer_baselines=baselines, target=target)
        torch.testing.assert_close(attr, model.fc2.weight[target].detach() * (act - baselines))
    # The same units as fc2's input; a scalar baseline broadcasts.
    attr = LayerFeatureAblation(model, "fc2").attribute(x, 1.5, 1, attribute_to_layer_input=True)
    torch.testing.assert_close(attr, model.fc2.weight[1].detach() * (act - 1.5))


def test_a_group_drops_the_sum_of_its_units_and_masks_may_differ_per_example():
    model = seeded(TwoLinear)
    x = torch.randn(2, 5)
    contributions = model.fc2.weight[0].detach() * model.fc1(x).detach()  # baseline 0
    shared = torch.tensor([0, 0, 1, 1])
    attr = LayerFeatureAblation(model, model.fc1).attribute(x, target=0, layer_mask=shared)
    groups = torch.stack([contributions[:, :2].sum(1), contributions[:, 2:].sum(1)], 1)
    torch.testing.assert_close(attr, groups[:, shared])
    per_example = torch.tensor([[0, 1, 1, 1], [2, 2, 2, 0]])
    attr = LayerFeatureAblation(model, model.fc1).attribute(x, target=0, layer_mask=per_example)
    expected = torch.stack(
        [
            torch.stack([contributions[0, 0]] + [contributions[0, 1:].sum()] * 3),
            torch.stack([contributions[1, :3].sum()] * 3 + [contributions[1, 3]]),
        ]
    )
    torch.testing.assert_close(attr, expected)


def test_a_mask_callable_gets_the_layer_values_and_layer_cells_groups_channels_by_position():
    model = seeded(SmallCNN)
    x = torch.randn(2, 3, 8, 8)
    act = LayerActivation(model, model.conv2).attribute(x)  # (2, 6, 8, 8)
    seen = []
    mask = torch.arange(4).view(1, 1, 2, 2).repeat_interleave(4, 2).repeat_interleave(4, 3)
    by_callable = LayerFeatureAblation(model, model.conv2).attribute(
        x, target=1, layer_mask=lambda values: seen.append(values.shape) or mask
    )
    assert seen == [act.shape]
    by_mask = LayerFeatureAblation(model, "conv2").attribute(x, target=1, layer_mask=mask)
    torch.testing.assert_close(by_callable, by_mask)
    cells = layer_cells(act)
    assert cells.shape == (1, 1, 8, 8) and cells.unique().numel() == 64
    assert layer_cells(torch.zeros(2, 5)) is None
    assert registry.record("layer_feature_ablation").probe_options(x)["layer_mask"] is layer_cells
    assert registry.record("layer_feature_permutation").probe_options(torch.zeros(2, 5)) == {}


# --------------------------------------------------------------------------- the model after the layer


@pytest.mark.parametrize("mask", [None, "cells"])
def test_equals_feature_ablation_of_the_model_after_the_layer(mask):
    model = seeded(SmallCNN)  # conv2 feeds an in-place ReLU
    x = torch.randn(3, 3, 8, 8)
    act = LayerActivation(model, model.conv2).attribute(x)
    layer_mask = (
        None if mask is None else torch.arange(16).view(1, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    )
    target = torch.tensor([0, 3, 1])
    ours = LayerFeatureAblation(model, model.conv2).attribute(
        x, layer_baselines=0.25, target=target, layer_mask=layer_mask
    )
    expected = FeatureAblation(_after_conv2(model)).attribute(act, 0.25, target, feature_mask=layer_mask)
    torch.testing.assert_close(ours, expected)


def test_layer_input_extra_tensor_arguments_and_integer_inputs():
    model = seeded(TwoInput)
    image, table, scale = torch.randn(3, 1, 6, 6), torch.randn(3, 5), torch.tensor([[1.0], [2.0], [0.5]])
    ours = LayerFeatureAblation(model, model.fc_img).attribute(
        (image, table), target=2, additional_forward_args=(scale,), attribute_to_layer_input=True
    )
    hidden = torch.relu(model.conv(image)).flatten(1).detach()
    after = lambda h, t, s: torch.sigmoid(model.fc_img(h)) * s + torch.tanh(model.fc_tab(t))  # noqa: E731
    expected = FeatureAblation(after).attribute(hidden, target=2, additional_forward_args=(table, scale))
    torch.testing.assert_close(ours, expected)
    # Token ids into an embedding: one group per token position, all of its embedding dims.
    tokens = seeded(Text, vocab=10, n_out=2)
    ids = torch.tensor([[1, 2, 3], [4, 4, 9]])
    per_token = torch.arange(3).view(1, 3, 1)
    ours = LayerFeatureAblation(tokens, tokens.embedding).attribute(ids, target=1, layer_mask=per_token)
    embedded = tokens.embedding(ids).detach()
    head = lambda e: tokens.fc(torch.tanh(e).mean(1))  # noqa: E731
    torch.testing.assert_close(ours, FeatureAblation(head).attribute(embedded, target=1, feature_mask=per_token))


def test_a_layer_with_several_tensors_shares_group_ids_across_them():
    model = seeded(TupleLayer)
    x = torch.randn(2, 3)
    a, b = torch.relu(model.fa(x)).detach(), torch.tanh(model.fb(x)).detach()
    head = lambda a, b: model.head(torch.cat([a, b], 1))  # noqa: E731
    masks = (torch.tensor([[0, 1, 2, 2]]), torch.tensor([[1, 3]]))  # id 1 spans both tensors
    ours = LayerFeatureAblation(model, model.pair).attribute(x, target=0, layer_mask=masks)
    assert isinstance(ours, tuple) and [t.shape for t in ours] == [a.shape, b.shape]
    expected = FeatureAblation(head).attribute((a, b), target=0, feature_mask=masks)
    torch.testing.assert_close(ours, expected)
    # The pair's inputs, before relu and tanh.
    pre = (model.fa(x).detach(), model.fb(x).detach())
    ours = LayerFeatureAblation(model, model.pair).attribute(x, target=0, attribute_to_layer_input=True)
    pair_head = lambda a, b: head(torch.relu(a), torch.tanh(b))  # noqa: E731
    torch.testing.assert_close(ours, FeatureAblation(pair_head).attribute(pre, target=0))


def test_a_forward_returning_one_value_for_the_batch_ablates_each_group_everywhere():
    model = seeded(TwoLinear)
    x = torch.randn(4, 5)
    loss = lambda inp: model(inp).pow(2).sum()  # noqa: E731
    attr = LayerFeatureAblation(loss, model.fc1).attribute(x, layer_mask=torch.tensor([0, 1, 1, 0]))
    act = model.fc1(x).detach()
    drops = []
    for group in ([0, 3], [1, 2]):
        ablated = act.clone()
        ablated[:, group] = 0
        drops.append(model.fc2(act).pow(2).sum() - model.fc2(ablated).pow(2).sum())
    torch.testing.assert_close(attr, torch.stack(drops)[[0, 1, 1, 0]].view(1, 4).detach())


@pytest.mark.parametrize("cls", [LayerFeatureAblation, LayerFeaturePermutation])
def test_perturbations_per_eval_changes_nothing(cls):
    model = seeded(SmallCNN)
    x = torch.randn(3, 3, 4, 4)
    results = []
    for per_eval in (1, 7, None, 1000):
        torch.manual_seed(5)
        results.append(cls(model, model.conv2).attribute(x, target=2, perturbations_per_eval=per_eval))
    for result in results[1:]:
        torch.testing.assert_close(result, results[0])


def test_perturbed_copies_are_batched():
    model = seeded(TwoLinear)
    rows = []
    model.fc2.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    LayerFeatureAblation(model, model.fc1).attribute(torch.randn(2, 5), target=0, perturbations_per_eval=3)
    assert rows == [2, 6, 2]  # the unperturbed batch, then 4 units in copies of 3 and 1


def test_inplace_ops_after_the_layer_do_not_leak_into_later_copies():
    model = seeded(InplaceAfter)
    x = torch.randn(2, 3)
    act = model.fc1(x).detach()
    expected = model.fc2.weight[0].detach() * act  # the +1 cancels in the difference
    torch.testing.assert_close(LayerFeatureAblation(model, model.fc1).attribute(x, target=0), expected)


# --------------------------------------------------------------------------- permutation


def test_permutation_of_a_linear_head_moves_each_unit_to_another_example():
    model = seeded(TwoLinear)
    x = torch.randn(5, 5)
    act = model.fc1(x).detach()
    attr = LayerFeaturePermutation(model, model.fc1).attribute(x, target=1)
    weight = model.fc2.weight[1].detach()
    torch.testing.assert_close(attr.sum(0), torch.zeros(4), atol=1e-5, rtol=0)  # a shuffle keeps the batch sum
    donors = act - attr / weight  # the value each example received
    torch.testing.assert_close(donors.sort(0).values, act.sort(0).values)
    assert not torch.allclose(donors, act)  # never the identity


def test_permutation_matches_input_permutation_of_the_model_after_the_layer():
    model = seeded(SmallCNN)
    x = torch.randn(4, 3, 8, 8)
    mask = torch.arange(6).view(1, 6, 1, 1)
    torch.manual_seed(3)
    ours = LayerFeaturePermutation(model, model.conv2).attribute(x, target=1, layer_mask=mask)
    act = LayerActivation(model, model.conv2).attribute(x)
    torch.manual_seed(3)
    expected = FeaturePermutation(_after_conv2(model)).attribute(act, target=1, feature_mask=mask)
    torch.testing.assert_close(ours, expected)


def test_permutation_constant_units_get_zero_and_a_batch_of_one_warns():
    model = seeded(TwoLinear)
    x = torch.randn(3, 5)
    x[:, 2] = 7.0
    permutation = LayerFeaturePermutation(model, model.fc1)
    attr = permutation.attribute(x, target=0, attribute_to_layer_input=True)  # fc1's input is x
    assert attr.shape == x.shape
    # Examples a shuffle leaves in place get 0 too, but no non-constant column is 0 everywhere.
    assert torch.all(attr[:, 2] == 0) and torch.all(attr[:, [0, 1, 3, 4]].abs().sum(0) > 0)
    with pytest.warns(UserWarning, match="batch of one"):
        assert torch.all(permutation.attribute(x[:1], target=0) == 0)


# --------------------------------------------------------------------------- Captum


def test_parity_with_captum():
    captum = pytest.importorskip("captum.attr")
    model = seeded(SmallCNN)
    x = torch.randn(2, 3, 4, 4)
    mask = torch.arange(8).view(1, 2, 2, 2).repeat_interleave(3, 1).repeat_interleave(2, 2).repeat_interleave(2, 3)
    for kwargs in ({}, {"layer_mask": mask, "layer_baselines": 0.5}, {"attribute_to_layer_input": True}):
        ours = LayerFeatureAblation(model, model.conv2).attribute(x, target=1, **kwargs)
        theirs = captum.LayerFeatureAblation(model, model.conv2).attribute(
            x, target=1, perturbations_per_eval=16, **kwargs
        )
        torch.testing.assert_close(ours, theirs)


def test_captum_is_wrong_after_an_inplace_op_and_with_a_permutation_target():
    """Captum reuses its unperturbed layer values, which the in-place op changed; and its
    LayerFeaturePermutation selects the target twice, so any target raises there."""
    captum = pytest.importorskip("captum.attr")
    model = seeded(InplaceAfter)
    x = torch.randn(2, 3)
    right = model.fc2.weight[0].detach() * model.fc1(x).detach()
    theirs = captum.LayerFeatureAblation(model, model.fc1).attribute(x, target=0)
    assert not torch.allclose(theirs, right)
    torch.testing.assert_close(LayerFeatureAblation(model, model.fc1).attribute(x, target=0), right)
    with pytest.raises(AssertionError):
        captum.LayerFeaturePermutation(model, model.fc1).attribute(x, target=0)
    assert LayerFeaturePermutation(model, model.fc1).attribute(x, target=0).shape == (2, 4)


# --------------------------------------------------------------------------- state and errors


@pytest.mark.parametrize("cls", [LayerFeatureAblation, LayerFeaturePermutation])
def test_traits(cls):
    record = registry.record(cls.registry_name)
    assert record.needs_layer and record.attributes_to_layer and record.takes_target
    assert record.multiplies_by_inputs and not record.needs_float_inputs and not record.takes_neuron_selector
    assert issubclass(cls, LayerAttribution) and issubclass(cls, PerturbationAttribution)  # Captum's bases


def test_the_caller_state_is_left_alone():
    model = seeded(SmallCNN)
    model.conv1.train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    x_before = x.detach().clone()
    LayerFeatureAblation(model, model.conv2).attribute(x, target=0)
    LayerFeaturePermutation(model, "conv2").attribute(x, target=0)
    assert torch.equal(x.detach(), x_before) and x.grad is None
    assert model.conv1.training and not model.conv2.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_errors_name_the_argument():
    model = seeded(TwoLinear)
    x = torch.randn(2, 5)
    ablator = LayerFeatureAblation(model, model.fc1)
    with pytest.raises(ArgumentError, match="layer_mask: expected a shape"):
        ablator.attribute(x, target=0, layer_mask=torch.tensor([0, 1, 2]))
    with pytest.raises(ArgumentError, match="layer_mask: ids must run from 0"):
        ablator.attribute(x, target=0, layer_mask=torch.tensor([0, 2, 2, 0]))
    with pytest.raises(ArgumentTypeError, match="layer_mask: expected an integer tensor"):
        ablator.attribute(x, target=0, layer_mask=lambda values: "rows")
    with pytest.raises(ArgumentError, match="layer_baselines: expected a number or a tensor of shape"):
        ablator.attribute(x, layer_baselines=torch.zeros(3), target=0)
    with pytest.raises(ArgumentError, match="perturbations_per_eval"):
        ablator.attribute(x, target=0, perturbations_per_eval=0)
    with pytest.raises(ArgumentError, match="target"):
        ablator.attribute(x, target=7)
    cnn = seeded(SmallCNN)
    with pytest.raises(ArgumentError, match="ran 2 times"):  # one ReLU module used twice
        LayerFeatureAblation(cnn, cnn.relu).attribute(torch.randn(1, 3, 8, 8), target=0)
    with pytest.raises(ArgumentError, match="did not run"):
        LayerFeaturePermutation(model, nn.Linear(2, 2)).attribute(x, target=0)
    with pytest.raises(ArgumentError, match="layer: no submodule named 'fc3'"):
        LayerFeatureAblation(model, "fc3")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in cnn.modules())
