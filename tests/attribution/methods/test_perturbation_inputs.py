"""The inputs users give perturbation and surrogate methods, as the reference reads them (issues 11 and 13).

Integer and bool inputs with any baseline, baselines that only broadcast, float feature masks, batches of
one, per-input occlusion strides, one number per example, forwards that return one value for the whole
batch, and NaN or infinity in inputs and baselines.  Captum is the oracle where it is right (skipped when it
is not installed); closed forms otherwise.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from attribution import (
    FeatureAblation,
    FeaturePermutation,
    IntegratedGradients,
    KernelShap,
    Lime,
    Occlusion,
    ShapleyValues,
    ShapleyValueSampling,
    registry,
)
from attribution.methods.surrogate import LinearRegression
from tests.models import MLP, TwoInput, seeded

PERTURBATION = {
    "feature_ablation": {},
    "occlusion": {"sliding_window_shapes": (1,)},
    "feature_permutation": {},
    "shapley_value_sampling": {"n_samples": 4},
    "shapley_values": {},
    "lime": {"n_samples": 40},
    "kernel_shap": {"n_samples": 40},
}
WITH_BASELINES = sorted(set(PERTURBATION) - {"feature_permutation"})
W = torch.tensor([1.0, -2.0, 0.5])


def _captum():
    return pytest.importorskip("captum.attr")


# Small closed-form models; the reference's own tests use models with these outputs, so its numbers apply.


def multilayer(x: torch.Tensor) -> torch.Tensor:
    """``(n, 3) -> (n, 2)``: four ReLUs of the row sum (biases -10, 1, 1, 1), summed, plus -1 and +1."""
    hidden = torch.relu(x.sum(1, keepdim=True) + torch.tensor([-10.0, 1.0, 1.0, 1.0]))
    return hidden.sum(1, keepdim=True) + torch.tensor([-1.0, 1.0])


def multilayer_of_sum(x1, x2, x3, scale):
    return multilayer(scale * (x1 + x2 + x3))


def bool_model(x: torch.Tensor) -> torch.Tensor:
    """``multilayer(10 x)`` for a bool ``x``; refuses anything else."""
    assert x.dtype == torch.bool, f"expected a bool tensor, got {x.dtype}"
    return multilayer(10.0 * x.float())


def relu_gap(x1, x2):
    """``relu(relu(x1 - 1) - relu(x2))``, the second example of the integrated gradients paper."""
    return torch.relu(torch.relu(x1 - 1) - torch.relu(x2))


def clamped(x):
    """``min(x, 1)`` as ``1 - relu(1 - x)``: integer in, integer out."""
    return 1 - torch.relu(1 - x)


def _build(name, model):
    return registry.build(name, model)


def weighted_sum(x):
    """A linear model with one output per example."""
    return (x * W).sum(-1)


def _close(ours, expected, **tolerance):
    ours = ours if isinstance(ours, tuple) else (ours,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected):
        assert a.shape == b.shape, (a.shape, b.shape)
        torch.testing.assert_close(a, b.to(a.dtype), **tolerance)


# --------------------------------------------------------------------------- integer and bool inputs


class Recorder(nn.Module):
    """An embedding bag over token ids that records the dtypes it is called with."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.EmbeddingBag(10, 1, mode="sum")
        self.dtypes: set[torch.dtype] = set()

    def forward(self, ids):
        self.dtypes.add(ids.dtype)
        return self.embedding(ids)[:, 0]


@pytest.mark.parametrize("name", sorted(PERTURBATION))
def test_token_ids_with_a_pad_baseline_stay_integer_and_get_float_attributions(name):
    model = Recorder()
    ids = torch.tensor([[1, 4, 7, 2], [3, 3, 9, 5]])
    baselines = {} if name == "feature_permutation" else {"baselines": 0}
    attrs = _build(name, model).attribute(ids, **baselines, **PERTURBATION[name])
    assert attrs.dtype == torch.float32 and attrs.shape == ids.shape
    assert model.dtypes == {torch.int64}  # the embedding saw token ids only
    if name in ("feature_ablation", "occlusion", "shapley_values", "kernel_shap"):
        with torch.no_grad():
            expected = model.embedding.weight[ids, 0] - model.embedding.weight[0, 0]
        _close(attrs, expected, atol=1e-5, rtol=1e-5)


def _sum_forward(*inputs):
    return torch.cat([x.flatten(1) for x in inputs], dim=1).sum(1)


INT_FLOAT_INPUTS = (
    torch.tensor([[0, 1], [3, 4]]),
    torch.tensor([[[0.1, 0.2], [0.3, 0.2]], [[0.4, 0.5], [0.3, 0.2]]]),
    torch.tensor([[0], [1]]),
)
INT_FLOAT_EXPECTED = (  # x - b, not x - int(b): the copies of integer inputs become floating
    torch.tensor([[-0.2, 0.8], [2.8, 3.8]]),
    torch.tensor([[[-3.0, -2.9], [-2.8, -2.9]], [[-2.7, -2.6], [-2.8, -2.9]]]),
    torch.tensor([[-0.4], [0.6]]),
)


@pytest.mark.parametrize("name", WITH_BASELINES)
def test_integer_inputs_with_fractional_baselines_are_not_truncated(name):
    options = dict(PERTURBATION[name])
    if name == "occlusion":
        options["sliding_window_shapes"] = ((1,), (1, 1), (1,))
    if name in ("lime", "kernel_shap"):
        options["n_samples"] = 200
    explainer = Lime(_sum_forward, LinearRegression()) if name == "lime" else _build(name, _sum_forward)
    attrs = explainer.attribute(INT_FLOAT_INPUTS, baselines=(0.2, 3.1, 0.4), **options)
    assert [a.dtype for a in attrs] == [torch.float32] * 3
    _close(attrs, INT_FLOAT_EXPECTED, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["feature_ablation", "occlusion"])
def test_integer_inputs_with_fractional_baselines_match_captum(name):
    captum = _captum()
    cls = {"feature_ablation": captum.FeatureAblation, "occlusion": captum.Occlusion}[name]
    options = {"sliding_window_shapes": ((1,), (1, 1), (1,))} if name == "occlusion" else {}
    theirs = cls(_sum_forward).attribute(INT_FLOAT_INPUTS, baselines=(0.2, 3.1, 0.4), **options)
    ours = _build(name, _sum_forward).attribute(INT_FLOAT_INPUTS, baselines=(0.2, 3.1, 0.4), **options)
    _close(ours, theirs)


def test_integer_model_outputs_give_float_attributions_with_captums_values():
    captum = _captum()
    occlusion_inputs = (torch.tensor([[-10], [3]]), torch.tensor([[-5], [1]]))
    ours = Occlusion(relu_gap).attribute(occlusion_inputs, sliding_window_shapes=((1,), (1,)))
    theirs = captum.Occlusion(relu_gap).attribute(occlusion_inputs, sliding_window_shapes=((1,), (1,)))
    assert [a.dtype for a in ours] == [torch.float32] * 2
    _close(ours, theirs)
    ids = torch.tensor([[-3, 1, 2]])
    ours = FeatureAblation(clamped).attribute(ids, target=0)
    theirs = captum.FeatureAblation(clamped).attribute(ids, target=0)
    assert ours.dtype == torch.float32 and theirs.dtype == torch.int64  # theirs: the model output's dtype
    _close(ours, theirs)


@pytest.mark.parametrize("baselines", [None, True], ids=["default", "true"])
@pytest.mark.parametrize("name", sorted(set(WITH_BASELINES) - {"occlusion"}))
def test_bool_inputs_and_baselines(name, baselines):
    model = bool_model
    x = torch.tensor([[True, False, True]])
    mask = torch.tensor([[0, 0, 1]])
    options = {**PERTURBATION[name], "n_samples": 100} if "n_samples" in PERTURBATION[name] else {}
    attrs = _build(name, model).attribute(x, baselines=baselines, target=0, feature_mask=mask, **options)
    assert attrs.dtype == torch.float32
    expected = {  # the reference's numbers (its tests of these two cases)
        "feature_ablation": {None: [40.0, 40.0, 40.0], True: [-40.0, -40.0, 0.0]},
        "shapley": {None: [35.0, 35.0, 35.0], True: [-40.0, -40.0, 0.0]},
    }["feature_ablation" if name == "feature_ablation" else "shapley"][baselines]
    sampled = registry.record(name).draws_random_numbers
    tolerance = {"atol": 3.0, "rtol": 0} if sampled else {"atol": 1e-4, "rtol": 0}
    _close(attrs, torch.tensor([expected]), **tolerance)


def test_bool_inputs_match_captums_shapley_value_sampling():
    captum = _captum()
    model = bool_model
    x = torch.tensor([[True, False, True]])
    mask = torch.tensor([[0, 0, 1]])
    ours = ShapleyValueSampling(model).attribute(x, baselines=True, target=0, feature_mask=mask)
    theirs = captum.ShapleyValueSampling(model).attribute(x, baselines=True, target=0, feature_mask=mask)
    _close(ours, theirs)
    assert ours.dtype == torch.float32


# --------------------------------------------------------------------------- multiplies_by_inputs


@pytest.mark.parametrize(
    "name", ["feature_ablation", "occlusion", "feature_permutation", "shapley_value_sampling", "shapley_values"]
)
def test_perturbation_methods_multiply_by_inputs_as_the_reference_says(name):
    captum = _captum()
    ours = _build(name, weighted_sum)
    assert ours.multiplies_by_inputs is True and registry.record(name).multiplies_by_inputs is True
    theirs = getattr(captum, type(ours).__name__)(weighted_sum)
    assert theirs.multiplies_by_inputs is True


@pytest.mark.parametrize("name", ["lime", "kernel_shap"])
def test_surrogates_do_not_multiply_by_inputs(name):
    captum = _captum()
    assert _build(name, weighted_sum).multiplies_by_inputs is False
    assert getattr(captum, type(_build(name, weighted_sum)).__name__)(weighted_sum).multiplies_by_inputs is False


# --------------------------------------------------------------------------- baselines that broadcast


def _with_baselines():
    """Every registered method whose ``attribute`` takes ``baselines``."""
    takes = lambda name: "baselines" in inspect.signature(registry.get(name).attribute).parameters  # noqa: E731
    return sorted(filter(takes, registry.available()))


def _explain(name, model, x, **kwargs):
    method = registry.record(name)
    options = dict(method.probe_options(x))
    if method.takes_target:
        options["target"] = 0
    if method.takes_neuron_selector:
        options["neuron_selector"] = 1
    torch.manual_seed(0)
    return registry.build(name, model, layer="fc1").attribute(x, **{**options, **kwargs})


@pytest.mark.parametrize("name", _with_baselines())
def test_a_baseline_without_the_batch_dimension_broadcasts_for_every_method(name):
    model = seeded(MLP)
    x = torch.randn(2, 6)
    b = torch.linspace(-0.5, 0.5, 6)
    _close(_explain(name, model, x, baselines=b), _explain(name, model, x, baselines=b[None]))


@pytest.mark.parametrize("name", _with_baselines())
def test_a_baseline_that_does_not_broadcast_is_named_with_both_shapes(name):
    with pytest.raises(ValueError, match=r"baselines: expected a number or a tensor of shape .*got shape \(5,\)"):
        _explain(name, seeded(MLP), torch.randn(2, 6), baselines=torch.zeros(5))


@pytest.mark.parametrize("name", ["feature_ablation", "occlusion", "lime", "kernel_shap"])
def test_a_one_example_baseline_for_a_one_example_batch_matches_captum(name):
    captum = _captum()
    model = multilayer
    x = torch.tensor([[20.0, 50.0, 30.0]])
    b = torch.tensor([10.0, 10.0, 11.0])  # (3,) for a (1, 3) input
    options = {"occlusion": {"sliding_window_shapes": (2,)}, "lime": {"n_samples": 300}}.get(name, {})
    options = {"n_samples": 300} if name == "kernel_shap" else options
    torch.manual_seed(0)
    ours = _build(name, model).attribute(x, baselines=b, target=0, **options)
    torch.manual_seed(0)
    theirs = getattr(captum, type(_build(name, model)).__name__)(model).attribute(x, baselines=b, target=0, **options)
    tolerance = {"atol": 0.05, "rtol": 0} if registry.record(name).draws_random_numbers else {}
    _close(ours, theirs, **tolerance)


def test_shapley_values_with_a_one_example_baseline_where_captum_fails():
    # Captum's ShapleyValues forwards the (3,) baseline as it is and fails on the output's shape.
    model = multilayer
    x = torch.tensor([[20.0, 50.0, 30.0]])
    b = torch.tensor([10.0, 10.0, 11.0])
    _close(ShapleyValues(model).attribute(x, baselines=b, target=0), torch.tensor([[40.0, 160.0, 76.0]]))


# --------------------------------------------------------------------------- feature masks, batches of one


def test_float_feature_masks_are_refused_even_of_whole_numbers():
    model = seeded(MLP)
    x = torch.randn(8, 6)
    ids = torch.tensor([[0, 0, 1, 2, 2, 3]])
    for name in ("feature_permutation", "feature_ablation", "shapley_values"):
        with pytest.raises(TypeError, match=r"feature_mask: expected an integer tensor .*feature_mask\.long\(\)"):
            _build(name, model).attribute(x, target=1, feature_mask=ids.double())


def test_long_of_a_float_feature_mask_matches_captums_feature_permutation_in_distribution():
    """Captum happens to take the float mask; ours asks for ``.long()`` and then gives the same."""
    captum = _captum()
    linear = nn.Linear(6, 1)
    torch.manual_seed(0)
    x = torch.randn(2000, 6)
    mask = torch.tensor([[0.0, 0.0, 1.0, 2.0, 2.0, 3.0]])
    ours = FeaturePermutation(linear).attribute(x, target=0, feature_mask=mask.long())
    theirs = captum.FeaturePermutation(linear).attribute(x, target=0, feature_mask=mask)
    torch.testing.assert_close(ours.abs().mean(0), theirs.abs().mean(0), atol=0.02, rtol=0.1)


def test_fractional_feature_ids_are_refused():
    with pytest.raises(TypeError, match=r"feature_mask: expected an integer tensor .*dtype torch\.float32"):
        FeaturePermutation(seeded(MLP)).attribute(torch.randn(4, 6), target=0, feature_mask=torch.full((1, 6), 0.5))


def test_feature_permutation_of_one_example_is_zero_with_a_warning_like_captum():
    captum = _captum()
    model = seeded(MLP)
    x = torch.randn(1, 6)
    with pytest.warns(UserWarning, match="batch of one example cannot be shuffled"):
        ours = FeaturePermutation(model).attribute(x, target=2)
    _close(ours, captum.FeaturePermutation(model).attribute(x, target=2), atol=0, rtol=0)


# --------------------------------------------------------------------------- occlusion windows and strides


def test_occlusion_with_one_int_stride_per_input_matches_captum():
    captum = _captum()
    model = multilayer_of_sum
    inputs = (
        torch.tensor([[23.0, 100.0, 0.0], [20.0, 50.0, 30.0]]),
        torch.tensor([[20.0, 50.0, 30.0], [0.0, 100.0, 0.0]]),
        torch.tensor([[0.0, 100.0, 10.0], [2.0, 10.0, 3.0]]),
    )
    kwargs = {
        "baselines": (torch.tensor([[1.0, 4, 7], [3.0, 6, 9]]), 3.0, torch.tensor([[4.0], [6]])),
        "additional_forward_args": (1,),
        "sliding_window_shapes": ((3,), (1,), (2,)),
        "strides": (2, 1, 2),
        "target": 0,
    }
    expected = (
        torch.tensor([[444.0, 444.0, 444.0], [328.0, 328.0, 328.0]]),
        torch.tensor([[68.0, 188.0, 108.0], [-12.0, 388.0, -12.0]]),
        torch.tensor([[368.0, 368.0, 24.0], [0.0, 0.0, -12.0]]),
    )
    ours = Occlusion(model).attribute(inputs, **kwargs)
    _close(ours, expected)
    _close(ours, captum.Occlusion(model).attribute(inputs, **kwargs))
    mixed = Occlusion(model).attribute(inputs, **{**kwargs, "strides": ((2,), 1, (2,))})  # ints and tuples
    _close(mixed, expected)


def test_occlusion_stride_forms_for_one_image():
    torch.manual_seed(0)
    weights = torch.randn(3 * 6 * 6, 2)
    flat = lambda t: t.flatten(1) @ weights  # noqa: E731
    image = torch.randn(2, 3, 6, 6)
    reference = Occlusion(flat).attribute(image, (3, 2, 2), strides=(2, 2, 2), target=0)
    for strides in (2, (2,)):  # an int, or the reference's one-int tuple: every dimension
        _close(Occlusion(flat).attribute(image, (3, 2, 2), strides=strides, target=0), reference)
    with pytest.raises(ValueError, match=r"strides: expected 3 ints for input 0 .*got \(2, 2\)"):
        Occlusion(flat).attribute(image, (3, 2, 2), strides=(2, 2), target=0)
    with pytest.raises(ValueError, match=r"strides: expected one entry per input \(2\), got 3"):
        Occlusion(lambda a, b: flat(a) + b.sum(1, keepdim=True)).attribute(
            (image, torch.randn(2, 4)), ((3, 2, 2), (1,)), strides=(1, 1, 1), target=0
        )


def test_occlusion_of_one_number_per_example_matches_captum():
    captum = _captum()
    model = relu_gap
    inputs = (torch.tensor([-10.0, 3.0]), torch.tensor([-5.0, 1.0]))
    ours = Occlusion(model).attribute(inputs, sliding_window_shapes=((), ()))
    _close(ours, (torch.tensor([0.0, 1.0]), torch.tensor([0.0, -1.0])))
    _close(ours, captum.Occlusion(model).attribute(inputs, sliding_window_shapes=((), ())))
    x = torch.tensor([-10.0, 3.0, 0.5])
    _close(Occlusion(lambda t: t**2).attribute(x, sliding_window_shapes=(), baselines=1.0), x**2 - 1)
    _close(FeatureAblation(lambda t: t**2).attribute(x, baselines=1.0), x**2 - 1)
    with pytest.raises(ValueError, match=r"sliding_window_shapes: expected 0 ints for input 0"):
        Occlusion(lambda t: t**2).attribute(x, sliding_window_shapes=(1,))


# --------------------------------------------------------------------------- one value for the whole batch


def _batch_forwards(net):
    return {
        "float": lambda *x: torch.sum(net(*x)).item(),
        "tensor_0d": lambda *x: torch.sum(net(*x)),
        "tensor_1d": lambda *x: torch.sum(net(*x)).reshape(1),
        "int": lambda *x: int(torch.sum(net(*x)).item()),
    }


FORWARD_KINDS = ["float", "tensor_0d", "tensor_1d", "int"]
X1 = torch.tensor([[2.0, 10.0, 3.0]])
X2 = torch.tensor([[2.0, 10.0, 3.0], [20.0, 50.0, 30.0]])
AGGREGATE_EXPECTED = {  # the reference's numbers, from its tests of this mode (mask [[0, 0, 1]])
    ("feature_ablation", 1): [82.0, 82.0, 24.0],
    ("feature_ablation", 2): [642.0, 642.0, 264.0],
    ("shapley", 1): [79.0, 79.0, 21.0],
    ("shapley", 2): [629.0, 629.0, 251.0],
}


@pytest.mark.parametrize("per_eval", [None, 1])
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("kind", FORWARD_KINDS)
def test_feature_ablation_and_shapley_values_explain_a_batch_as_a_whole(kind, n, per_eval):
    forward = _batch_forwards(multilayer)[kind]
    x, mask = (X1, X2)[n - 1], torch.tensor([[0, 0, 1]])
    ablated = FeatureAblation(forward).attribute(x, feature_mask=mask, perturbations_per_eval=per_eval)
    _close(ablated, torch.tensor([AGGREGATE_EXPECTED["feature_ablation", n]]))
    exact = ShapleyValues(forward).attribute(x, feature_mask=mask, perturbations_per_eval=per_eval)
    _close(exact, torch.tensor([AGGREGATE_EXPECTED["shapley", n]]))
    assert ablated.dtype == exact.dtype == (torch.float64 if kind == "float" else torch.float32)  # Python floats


@pytest.mark.parametrize("kind", FORWARD_KINDS)
def test_sampled_and_surrogate_methods_explain_a_batch_as_a_whole(kind):
    forward = _batch_forwards(multilayer)[kind]
    mask = torch.tensor([[0, 0, 1]])
    sampled = ShapleyValueSampling(forward).attribute(X2, feature_mask=mask, n_samples=30)
    _close(sampled, torch.tensor([AGGREGATE_EXPECTED["shapley", 2]]), atol=0, rtol=0.05)
    with torch.no_grad():
        gain = torch.tensor(float(forward(X2)) - float(forward(torch.zeros_like(X2))))
    torch.testing.assert_close(sampled[0, 1] + sampled[0, 2], gain.to(sampled))  # efficiency: exact for any orders
    kernel = KernelShap(forward).attribute(X1, feature_mask=mask, n_samples=200)
    _close(kernel, torch.tensor([AGGREGATE_EXPECTED["shapley", 1]]), atol=1.0, rtol=0)
    coefs = Lime(forward).attribute(X2, feature_mask=mask, n_samples=30, return_input_shape=False)
    assert coefs.shape == (1, 2) and torch.isfinite(coefs).all()


@pytest.mark.parametrize("name", ["lime", "kernel_shap"])
def test_surrogates_of_an_additive_batch_sum_are_exact(name):
    # f(batch) = sum over examples and features of w_i x_i: each feature group's coefficient is its sum.
    forward = lambda x: (x * W).sum()  # noqa: E731
    mask = torch.tensor([[0, 0, 1]])
    explainer = Lime(forward, LinearRegression()) if name == "lime" else KernelShap(forward)
    coefs = explainer.attribute(X2, feature_mask=mask, n_samples=60, return_input_shape=False)
    contributions = (X2 * W).sum(0)
    _close(coefs, torch.stack([contributions[:2].sum(), contributions[2]])[None], atol=1e-3, rtol=1e-4)


def test_aggregate_results_match_captum_with_several_inputs():
    captum = _captum()
    net = multilayer_of_sum
    inputs = (
        torch.tensor([[23.0, 100.0, 0.0], [20.0, 50.0, 30.0]]),
        torch.tensor([[20.0, 50.0, 30.0], [0.0, 100.0, 0.0]]),
        torch.tensor([[0.0, 100.0, 10.0], [2.0, 10.0, 3.0]]),
    )
    masks = (torch.tensor([[1, 1, 1]]), torch.tensor([[0, 3, 2]]), torch.tensor([[4, 5, 6]]))
    expected = (
        torch.tensor([[1784.0, 1784.0, 1784.0]]),
        torch.tensor([[160.0, 1200.0, 240.0]]),
        torch.tensor([[16.0, 880.0, 104.0]]),
    )
    for forward in _batch_forwards(net).values():
        kwargs = {"additional_forward_args": (1,), "feature_mask": masks}
        ours = FeatureAblation(forward).attribute(inputs, **kwargs)
        _close(ours, expected)
        _close(ours, captum.FeatureAblation(forward).attribute(inputs, **kwargs))
        windows = {"sliding_window_shapes": ((2,), (1,), (3,)), "additional_forward_args": (1,)}
        _close(Occlusion(forward).attribute(inputs, **windows), captum.Occlusion(forward).attribute(inputs, **windows))


def test_feature_permutation_of_a_batch_loss():
    # A loss over the batch: shuffling feature i across the batch changes it by sum_j w_i (x_ji - x_pi(j)i) = 0
    # for a linear model, and by a non-zero amount for a squared error.
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randn(16)
    linear_sum = FeaturePermutation(lambda t: (t @ W).sum()).attribute(x)
    assert linear_sum.shape == (1, 3)
    torch.testing.assert_close(linear_sum, torch.zeros(1, 3), atol=1e-5, rtol=0)
    loss = FeaturePermutation(lambda t: ((t @ W - y) ** 2).mean()).attribute(x)
    assert loss.shape == (1, 3) and (loss.abs() > 1e-3).all()


def test_aggregate_forward_refuses_a_target_and_per_example_masks():
    forward = lambda x: (x @ W).sum()  # noqa: E731
    with pytest.raises(ValueError, match="target: forward_func returns one value for the whole batch"):
        FeatureAblation(forward).attribute(X2, target=0)
    with pytest.raises(ValueError, match="feature_mask: forward_func returns one value .* shared by the batch"):
        FeatureAblation(forward).attribute(X2, feature_mask=torch.tensor([[0, 0, 1], [0, 1, 1]]))


def test_a_forward_that_returns_one_value_for_one_example_per_example_is_batched():
    calls = []

    def per_example(x):
        calls.append(x.shape[0])
        return (x @ W)[:, None]  # (n, 1): one value per example

    attrs = FeatureAblation(per_example).attribute(X1, target=0, perturbations_per_eval=3)
    _close(attrs, X1 * W)
    assert max(calls) == 3  # the three ablated copies went through one forward


# --------------------------------------------------------------------------- NaN and infinity


def _poisoned(x, value, index=(0, 1)):
    x = x.clone()
    x[index] = value
    return x


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", registry.available())
def test_non_finite_inputs_are_refused_before_any_forward(name, bad):
    calls = []
    mlp = seeded(MLP)

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = mlp.fc1
            self.rest = nn.Sequential(mlp.act, mlp.fc2)

        def forward(self, x):
            calls.append(1)
            return self.rest(self.fc1(x))

    x = torch.randn(2, 6)
    with pytest.raises(ValueError, match=r"^inputs: expected finite values, got 1 NaN or infinite"):
        _explain(name, Counting(), _poisoned(x, bad))
    if name in _with_baselines():
        with pytest.raises(ValueError, match=r"^baselines: expected finite values"):
            _explain(name, Counting(), x, baselines=_poisoned(torch.zeros(1, 6), bad))
    assert calls == []


@pytest.mark.parametrize("name", sorted(PERTURBATION) + ["integrated_gradients", "gradient_shap", "saliency"])
def test_non_finite_values_in_the_second_input_or_baseline_are_named(name):
    model = seeded(TwoInput)
    image, table = torch.randn(2, 1, 6, 6), torch.randn(2, 5)
    options = {"sliding_window_shapes": ((1, 2, 2), (1,))} if name == "occlusion" else {}
    explainer = registry.build(name, model)
    with pytest.raises(ValueError, match=r"^inputs\[1\]: expected finite values"):
        explainer.attribute((image, _poisoned(table, float("nan"))), target=0, **options)
    if "baselines" in inspect.signature(explainer.attribute).parameters:
        with pytest.raises(ValueError, match=r"^baselines\[1\]: expected finite values"):
            explainer.attribute((image, table), baselines=(0.0, float("-inf")), target=0, **options)


def test_integer_inputs_skip_the_check_and_finite_floats_pass():
    ids = torch.tensor([[1, 4, 7, 2]])
    FeatureAblation(Recorder()).attribute(ids, baselines=0)
    IntegratedGradients(weighted_sum).attribute(torch.randn(2, 3), baselines=torch.finfo(torch.float32).max / 4)


def test_cross_tensor_feature_ids_are_one_feature_as_in_captum():
    """Captum's ``enable_cross_tensor_attribution=True`` is accepted and is what we always do: an id in
    several inputs' masks is ablated in all of them at once; False (Captum's removed mode) is refused."""
    from attribution import ArgumentError, FeatureAblation
    from tests.models import TwoInput, seeded

    model = seeded(TwoInput)
    inputs = (torch.rand(2, 1, 6, 6), torch.rand(2, 5))
    masks = ((torch.arange(36) % 2).view(1, 1, 6, 6), torch.tensor([[0, 0, 1, 1, 1]]))
    ablation = FeatureAblation(model)
    shared = ablation.attribute(inputs, target=0, feature_mask=masks)
    flagged = ablation.attribute(inputs, target=0, feature_mask=masks, enable_cross_tensor_attribution=True)
    apart = ablation.attribute(inputs, target=0, feature_mask=(masks[0], masks[1] + 2))
    for s, f, a in zip(shared, flagged, apart):
        torch.testing.assert_close(s, f)
        assert not torch.allclose(s, a)  # the shared ids really are ablated together
    with pytest.raises(ArgumentError, match="enable_cross_tensor_attribution"):
        ablation.attribute(inputs, target=0, feature_mask=masks, enable_cross_tensor_attribution=False)
    captum = pytest.importorskip("captum.attr")
    theirs = captum.FeatureAblation(model).attribute(inputs, target=0, feature_mask=masks)
    for s, t in zip(shared, theirs):
        torch.testing.assert_close(s, t)


def test_target_none_on_several_outputs_explains_each_output_element_as_captum_does():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(3, 3)
    ablated = FeatureAblation(model).attribute(x)
    assert ablated.shape == (6, 3)  # one row per output element, example-major
    for k in range(2):  # row i * K + k holds the attributions of output k of example i
        torch.testing.assert_close(ablated[k::2], FeatureAblation(model).attribute(x, target=k))
    mask = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0]])  # per-example masks work too (Captum: shared only)
    torch.testing.assert_close(
        FeatureAblation(model).attribute(x, feature_mask=mask)[1::2],
        FeatureAblation(model).attribute(x, target=1, feature_mask=mask),
    )
    exact = ShapleyValues(model).attribute(x)
    assert exact.shape == (3, 2, 3)  # Captum's Shapley layout for this mode
    torch.testing.assert_close(exact[:, 1], ShapleyValues(model).attribute(x, target=1))
    captum = pytest.importorskip("captum.attr")
    torch.testing.assert_close(ablated, captum.FeatureAblation(model).attribute(x))
    torch.testing.assert_close(Occlusion(model).attribute(x, (1,)), captum.Occlusion(model).attribute(x, (1,)))
    # Lime fits one surrogate per output element on its example's coalitions (Captum refuses this mode);
    # tests/attribution/methods/test_aggregate_outputs.py checks the numbers.
    assert Lime(model).attribute(x, n_samples=10).shape == (3, 2, 3)
