"""FeatureAblation, FeaturePermutation, ShapleyValues and ShapleyValueSampling against oracles.

Oracles: an additive model (every method gives ``g(x_i) - g(b_i)`` per feature),
the Shapley axioms and a brute-force permutation average, naive one-forward-per-
feature ablation loops (which the local re-evaluation of image models must
match), and Captum where it computes the same thing.
"""

import itertools
import math

import pytest
import torch
from torch import nn

from attribution import FeatureAblation, FeaturePermutation, ShapleyValues, ShapleyValueSampling, registry
from attribution._internal.local_forward import LocalForward
from tests.models import MLP, Linear, SmallCNN, TwoInput, seeded

# --------------------------------------------------------------------------- helpers


def _g(x):
    return x**2 + torch.sin(x)


class Additive(nn.Module):
    """f(x) = sum of g over every element of every input: no interactions between features."""

    def forward(self, *inputs):
        return sum(_g(x).flatten(1).sum(1) for x in inputs)


class Interacting(nn.Module):
    """Products and a max; symmetric in x2 and x3, ignores x5."""

    def forward(self, x):
        x0, x1, x2, x3, x4 = x[:, :5].unbind(1)
        return x0 * x1 + torch.maximum(x2, x3) + x4 * x2 * x3 + torch.sin(x0 * x4)


class Scaled(nn.Module):
    """Linear in x with a per-row scale and a python offset passed as forward arguments."""

    def forward(self, x, scale, offset):
        return (x * scale).sum(1) + offset


def _tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _batched_masks(masks, inputs):
    """Masks with the batch dimension, broadcastable to their inputs."""
    return tuple(m if m.dim() == x.dim() else m.unsqueeze(0) for m, x in zip(_tuple(masks), inputs))


def _count(masks):
    return int(max(m.max() for m in masks)) + 1


def _group_sum(per_element, masks, count):
    """Per element, the sum of ``per_element`` over its whole feature group (across inputs)."""
    n = per_element[0].shape[0]
    ids = [m.expand_as(v).reshape(n, -1) for m, v in zip(masks, per_element)]
    totals = torch.zeros(n, count, dtype=per_element[0].dtype)
    for i, v in zip(ids, per_element):
        totals.scatter_add_(1, i, v.reshape(n, -1))
    return _spread(totals, masks, per_element)


def _spread(per_feature, masks, inputs):
    """Per-feature values ``(n, F)`` onto every element of each input."""
    n = per_feature.shape[0]
    return tuple(
        per_feature.gather(1, m.expand_as(x).reshape(n, -1)).view_as(x).to(x.dtype) for m, x in zip(masks, inputs)
    )


def _with_present(present, inputs, baselines, masks):
    """Inputs with the features in ``present`` (a set of ids) kept and the rest at the baseline."""
    ids = torch.tensor(sorted(present), dtype=torch.long)
    return tuple(torch.where(torch.isin(m, ids), x, b) for x, b, m in zip(inputs, baselines, masks))


def _naive_ablation(f, inputs, baselines, masks):
    """One forward per feature: set it to the baseline, record the drop on its elements."""
    count = _count(masks)
    reference = f(inputs)
    out = [torch.zeros_like(x) for x in inputs]
    for k in range(count):
        drop = reference - f(_with_present(set(range(count)) - {k}, inputs, baselines, masks))
        for o, m, x in zip(out, masks, inputs):
            o += (m == k).expand_as(x) * drop.view(-1, *([1] * (x.dim() - 1)))
    return tuple(out)


def _brute_force_shapley(f, inputs, baselines, masks):
    """Average marginal contribution over all orders of the features, from the definition."""
    count = _count(masks)
    value = {}
    for size in range(count + 1):
        for subset in itertools.combinations(range(count), size):
            value[frozenset(subset)] = f(_with_present(set(subset), inputs, baselines, masks))
    phi = torch.zeros(inputs[0].shape[0], count, dtype=torch.float64)
    for order in itertools.permutations(range(count)):
        before = frozenset()
        for feature in order:
            after = before | {feature}
            phi[:, feature] += (value[after] - value[before]).double()
            before = after
    return _spread(phi / math.factorial(count), masks, inputs)


def _objective(model, target=None, args=()):
    """The target value per example of ``model(*inputs, *args)`` (plain torch, no library code)."""

    def f(inputs):
        with torch.no_grad():
            out = model(*inputs, *args)
        if target is None:
            return out
        index = torch.as_tensor(target).expand(out.shape[0])
        return out.gather(1, index[:, None]).squeeze(1)

    return f


def _close(ours, expected, atol=1e-5, rtol=1e-4):
    ours, expected = _tuple(ours), _tuple(expected)
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol)


def _superpixels(size=8, cell=2):
    """Ids of ``cell x cell`` squares on a ``size x size`` grid, row-major."""
    rows = torch.arange(size) // cell
    return rows[:, None] * (size // cell) + rows[None, :]


# --------------------------------------------------------------------------- additive model


def _additive_cases():
    torch.manual_seed(0)
    table = torch.randn(4, 5, dtype=torch.float64)
    image = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    per_example = torch.stack([_superpixels(4), _superpixels(4).t(), 3 - _superpixels(4)])[:2, None]
    pair = (torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64))
    return {
        "table": (table, None),
        "table_grouped": (table, torch.tensor([[0, 1, 1, 2, 0]])),
        "image_superpixels": (image, _superpixels(4)[None, None]),
        "image_per_example_mask": (image, per_example),
        "pair_shared_ids": (pair, (_superpixels(4)[None, None], torch.tensor([[0, 4, 3]]))),
    }


ADDITIVE = _additive_cases()


def _baselines(kind, inputs):
    torch.manual_seed(1)
    if kind == "scalar":
        return 0.5
    values = tuple(torch.randn(x.shape if kind == "per_example" else (1, *x.shape[1:]), dtype=x.dtype) for x in inputs)
    return values if len(values) > 1 else values[0]


METHODS = {
    "ablation": lambda m: (FeatureAblation(m), {}),
    "exact": lambda m: (ShapleyValues(m), {}),
    "sampling_1": lambda m: (ShapleyValueSampling(m), {"n_samples": 1}),
    "sampling_6": lambda m: (ShapleyValueSampling(m), {"n_samples": 6}),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("baseline", ["scalar", "per_example", "broadcast"])
@pytest.mark.parametrize("case", sorted(ADDITIVE))
def test_additive_model_gets_each_features_own_change(case, baseline, method):
    inputs, mask = ADDITIVE[case]
    xs = _tuple(inputs)
    baselines = _baselines(baseline, xs)
    explainer, kwargs = METHODS[method](Additive())
    attrs = explainer.attribute(inputs, baselines=baselines, feature_mask=mask, **kwargs)

    bs = tuple(torch.as_tensor(b, dtype=torch.float64) for b in _tuple(baselines))
    bs = bs * len(xs) if len(bs) == 1 else bs
    change = tuple(_g(x) - _g(b) for x, b in zip(xs, bs))
    if mask is None:
        expected = change
    else:
        masks = _batched_masks(mask, xs)
        expected = _group_sum(change, masks, _count(masks))
    _close(attrs, expected if len(xs) > 1 else expected[0], atol=1e-10, rtol=1e-10)


# --------------------------------------------------------------------------- exact Shapley values


def test_exact_shapley_axioms_on_a_model_with_interactions():
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=torch.float64)
    x[:, 3] = x[:, 2]
    b = torch.randn(5, 6, dtype=torch.float64)
    b[:, 3] = b[:, 2]
    model = Interacting()
    phi = ShapleyValues(model).attribute(x, baselines=b)
    torch.testing.assert_close(phi.sum(1), model(x) - model(b), atol=1e-12, rtol=0)  # efficiency
    torch.testing.assert_close(phi[:, 2], phi[:, 3], atol=1e-12, rtol=0)  # symmetry
    assert torch.equal(phi[:, 5], torch.zeros(5, dtype=torch.float64))  # null player
    assert (phi[:, :5].abs() > 1e-6).any(0).all()  # and the other features are not trivially zero


def _brute_force_cases():
    torch.manual_seed(0)
    quadrants = _superpixels(8, 4)[None, None]
    return {
        "interacting": (Interacting(), torch.randn(3, 6), torch.tensor([[0, 1, 2, 3, 4, 4]]), None, ()),
        "mlp": (seeded(MLP), torch.randn(3, 6), torch.tensor([[0, 1, 2, 3, 4, 4]]), 1, ()),
        "cnn": (seeded(SmallCNN), torch.randn(2, 3, 8, 8), quadrants, 3, ()),
        "two_input": (
            seeded(TwoInput),
            (torch.randn(3, 1, 6, 6), torch.randn(3, 5)),
            (_superpixels(6, 3)[None, None], torch.tensor([[0, 4, 4, 3, 1]])),
            2,
            (torch.tensor([[1.0], [2.0], [0.5]]),),
        ),
    }


BRUTE_FORCE = _brute_force_cases()


@pytest.mark.parametrize("case", sorted(BRUTE_FORCE))
def test_exact_shapley_equals_the_permutation_average(case):
    model, inputs, mask, target, args = BRUTE_FORCE[case]
    xs = _tuple(inputs)
    baselines = tuple(torch.full_like(x[:1], 0.25) for x in xs)
    ours = ShapleyValues(model).attribute(
        inputs,
        baselines=baselines if len(xs) > 1 else baselines[0],
        target=target,
        additional_forward_args=args or None,
        feature_mask=mask,
    )
    expected = _brute_force_shapley(_objective(model, target, args), xs, baselines, _batched_masks(mask, xs))
    _close(ours, expected if len(xs) > 1 else expected[0])


# --------------------------------------------------------------------------- Shapley value sampling


def test_sampling_converges_to_the_exact_values():
    model = seeded(MLP).double()
    torch.manual_seed(0)
    x = torch.randn(3, 6, dtype=torch.float64)
    exact = ShapleyValues(model).attribute(x, target=0)
    errors = {}
    for n_samples in (5, 400):
        torch.manual_seed(1)
        estimate = ShapleyValueSampling(model).attribute(x, target=0, n_samples=n_samples)
        errors[n_samples] = (estimate - exact).abs().max().item()
    assert errors[400] < errors[5]
    assert errors[400] < 0.02 * exact.abs().max().item()


@pytest.mark.parametrize("n_samples", [1, 2, 7, 30])
@pytest.mark.parametrize("case", ["mlp", "two_input"])
def test_sampling_is_efficient_for_every_number_of_samples(case, n_samples):
    model, inputs, _, target, args = BRUTE_FORCE[case]
    xs = _tuple(inputs)
    baselines = tuple(torch.randn_like(x) for x in xs)
    attrs = ShapleyValueSampling(model).attribute(
        inputs,
        baselines=baselines if len(xs) > 1 else baselines[0],
        target=target,
        additional_forward_args=args or None,
        n_samples=n_samples,
    )
    f = _objective(model, target, args)
    total = sum(a.flatten(1).sum(1) for a in _tuple(attrs))  # no mask: one feature per element
    torch.testing.assert_close(total, f(xs) - f(baselines), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- feature permutation


def test_permutation_of_an_ignored_feature_is_exactly_zero():
    mlp = seeded(MLP)
    keep = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    model = lambda x: mlp(x * keep)
    torch.manual_seed(0)
    x = torch.randn(16, 6)
    for mask in (None, torch.tensor([[0, 1, 2, 3, 3, 0]])):
        attr = FeaturePermutation(model).attribute(x, target=1, feature_mask=mask)
        assert torch.equal(attr[:, 2], torch.zeros(16))
        assert (attr[:, [0, 1, 3]].abs() > 0).any()


def test_permutation_on_a_linear_model_is_w_times_x_minus_a_permuted_x():
    model = seeded(Linear).double()
    w = model.fc.weight[1].detach()
    assert (w.abs() > 1e-3).all()
    torch.manual_seed(0)
    x = torch.randn(50, 6, dtype=torch.float64)
    attr = FeaturePermutation(model).attribute(x, target=1)
    # attr[j, i] = w_i (x[j, i] - x[pi_i(j), i]): what is left of x after it is a permutation of x's column.
    partner = x - attr / w
    torch.testing.assert_close(partner.sort(0).values, x.sort(0).values, atol=1e-12, rtol=0)
    assert not torch.allclose(partner, x)  # some examples did get another's value


def test_permutation_of_two_examples_swaps_them_or_leaves_them():
    model = seeded(Linear)
    w = model.fc.weight[0].detach()
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0, 1.5], [-1.0, 2.0, 2.5, 1.0, 4.0, -0.5]])
    swap = w * (x - x.flip(0))
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        attr = FeaturePermutation(model).attribute(x, target=0)
        for i in range(6):
            swapped = torch.allclose(attr[:, i], swap[:, i], atol=1e-5, rtol=1e-5)
            kept = torch.allclose(attr[:, i], torch.zeros(2), atol=1e-5, rtol=0)
            assert swapped or kept, (seed, i, attr[:, i], swap[:, i])
            seen.add(swapped)
    assert any(seen)  # at least some features were really swapped


# --------------------------------------------------------------------------- superpixels on an image model


def _image_masks():
    base = _superpixels(8)  # 16 features
    strips = torch.arange(8)[None, :].expand(8, 8) + 8 * (torch.arange(8)[:, None] >= 4)  # 16 vertical 4x1 strips
    per_example = torch.stack([base, torch.randperm(16, generator=torch.Generator().manual_seed(0))[base], strips])
    channels = torch.stack([base, 16 + _superpixels(8, 4), base])  # channel 1 in quadrants, 0 and 2 share ids
    return {
        "shared_1x1x8x8": base[None, None],
        "per_example_nx1x8x8": per_example[:, None],
        "no_batch_1x8x8": base[None],
        "no_batch_3x8x8": channels,
    }


IMAGE_MASKS = _image_masks()


@pytest.mark.parametrize("baseline", ["zero", "per_example"])
@pytest.mark.parametrize("mask_name", sorted(IMAGE_MASKS))
def test_superpixel_ablation_on_a_cnn_equals_a_naive_loop(mask_name, baseline):
    model = seeded(SmallCNN)
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8)
    b = torch.zeros(1, 3, 8, 8) if baseline == "zero" else torch.randn(3, 3, 8, 8)
    mask = IMAGE_MASKS[mask_name]
    target = [0, 3, 1]
    assert LocalForward.build(model, x) is not None  # the module goes through local re-evaluation
    local = FeatureAblation(model).attribute(x, baselines=b, target=target, feature_mask=mask)
    plain = FeatureAblation(lambda t: model(t)).attribute(x, baselines=b, target=target, feature_mask=mask)
    (expected,) = _naive_ablation(_objective(model, torch.tensor(target)), (x,), (b,), _batched_masks(mask, (x,)))
    _close(local, expected)
    _close(plain, expected)
    _close(local, plain)
    for per_eval in (1, 3, None):
        _close(
            FeatureAblation(model).attribute(
                x, baselines=b, target=target, feature_mask=mask, perturbations_per_eval=per_eval
            ),
            local,
            atol=1e-6,
            rtol=1e-6,
        )


@pytest.mark.parametrize("target", [1, [0, 2, 1]])
def test_shared_ids_across_inputs_are_ablated_together(target):
    model, inputs, mask, _, args = BRUTE_FORCE["two_input"]
    baselines = (torch.randn(1, 1, 6, 6), 0.3)
    ours = FeatureAblation(model).attribute(
        inputs, baselines=baselines, target=target, additional_forward_args=args, feature_mask=mask
    )
    bs = (baselines[0], torch.full((1, 5), 0.3))
    expected = _naive_ablation(_objective(model, torch.tensor(target), args), inputs, bs, _batched_masks(mask, inputs))
    _close(ours, expected)
    # Id 0 is the image's top-left block and the table's first column: both carry the same drop.
    torch.testing.assert_close(ours[0][:, 0, 0, 0], ours[1][:, 0])


# --------------------------------------------------------------------------- invariants


CHUNKED = {
    "ablation": lambda m: (FeatureAblation(m), {}),
    "exact": lambda m: (ShapleyValues(m), {}),
    "sampling": lambda m: (ShapleyValueSampling(m), {"n_samples": 4}),
    "permutation": lambda m: (FeaturePermutation(m), {}),
}


@pytest.mark.parametrize("case", ["mlp", "cnn", "two_input"])
@pytest.mark.parametrize("method", sorted(CHUNKED))
def test_results_do_not_depend_on_perturbations_per_eval(method, case):
    model, inputs, mask, target, args = BRUTE_FORCE[case]
    results = []
    for per_eval in (1, 3, None):
        explainer, kwargs = CHUNKED[method](model)
        torch.manual_seed(7)
        results.append(
            explainer.attribute(
                inputs,
                target=target,
                additional_forward_args=args or None,
                feature_mask=mask,
                perturbations_per_eval=per_eval,
                **kwargs,
            )
        )
    for other in results[1:]:
        _close(other, results[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("per_eval", [1, 3])
@pytest.mark.parametrize("method", sorted(CHUNKED))
def test_additional_forward_args_reach_the_model_row_by_row(method, per_eval):
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.float64)
    scale = torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    explainer, kwargs = CHUNKED[method](Scaled())
    if method == "permutation":
        attr = explainer.attribute(x, additional_forward_args=(scale, 7.0), perturbations_per_eval=per_eval)
        partner = x - attr / scale  # = x[pi(j)]: a permutation of each column
        torch.testing.assert_close(partner.sort(0).values, x.sort(0).values, atol=1e-12, rtol=0)
        return
    attr = explainer.attribute(
        x, baselines=0.5, additional_forward_args=(scale, 7.0), perturbations_per_eval=per_eval, **kwargs
    )
    torch.testing.assert_close(attr, scale * (x - 0.5), atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", sorted(CHUNKED))
def test_caller_state_is_left_alone_and_results_are_ordinary_tensors(method):
    model = seeded(SmallCNN)  # the local re-evaluation path traces it
    params = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    explainer, kwargs = CHUNKED[method](model)
    rng = torch.get_rng_state()
    attr = explainer.attribute(x, target=1, feature_mask=_superpixels(8, 4)[None, None], **kwargs)
    if not registry.record(explainer.registry_name).draws_random_numbers:
        assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and x.requires_grad and x.grad is None
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert not attr.is_inference() and not attr.requires_grad
    attr.add_(1.0)  # usable like any tensor (an inference-mode tensor would refuse this)


# --------------------------------------------------------------------------- bad input


def _table_call(method, **kwargs):
    model = seeded(MLP)
    x = torch.randn(3, 6)
    explainer, extra = CHUNKED[method](model)
    return explainer.attribute(x, target=0, **{**extra, **kwargs})


BAD_MASKS = {
    "too_many_columns": (torch.zeros(1, 7, dtype=torch.long), ValueError),
    "wrong_batch": (torch.zeros(2, 6, dtype=torch.long), ValueError),
    "too_many_dims": (torch.zeros(1, 1, 6, dtype=torch.long), ValueError),
    "gap": (torch.tensor([[0, 1, 3, 3, 1, 0]]), ValueError),
    "negative": (torch.tensor([[0, 1, -1, 2, 1, 0]]), ValueError),
    "fractional": (torch.tensor([[0.0, 1.0, 2.5, 3.0, 4.0, 5.0]]), TypeError),
    "nan": (torch.tensor([[0.0, 1.0, float("nan"), 3.0, 4.0, 5.0]]), TypeError),
    "whole_floats": (torch.arange(6.0)[None], TypeError),  # ids are integers, as Captum documents: call .long()
    "bool": (torch.tensor([[True, False, True, False, True, False]]), TypeError),
    "list_of_ints": ([0, 1, 2, 3, 4, 5], (TypeError, ValueError)),  # read as one mask per input
}


@pytest.mark.parametrize("bad", sorted(BAD_MASKS))
@pytest.mark.parametrize("method", sorted(CHUNKED))
def test_bad_feature_masks_are_rejected(method, bad):
    mask, error = BAD_MASKS[bad]
    with pytest.raises(error, match="feature_mask"):
        _table_call(method, feature_mask=mask)


@pytest.mark.parametrize("method", sorted(CHUNKED))
def test_wrong_number_of_masks_for_tuple_inputs(method):
    model, inputs, mask, target, args = BRUTE_FORCE["two_input"]
    explainer, kwargs = CHUNKED[method](model)
    for masks in (mask[:1], (*mask, mask[1])):
        with pytest.raises(ValueError, match="feature_mask"):
            explainer.attribute(inputs, target=target, additional_forward_args=args, feature_mask=masks, **kwargs)


@pytest.mark.parametrize("n_samples", [0, -3, 2.5, True])
def test_sampling_needs_a_positive_int_number_of_samples(n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        _table_call("sampling", n_samples=n_samples)


@pytest.mark.parametrize("method", sorted(CHUNKED))
def test_perturbations_per_eval_must_be_positive(method):
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        _table_call(method, perturbations_per_eval=0)


def test_permutation_of_one_example_is_zero_with_a_warning():
    with pytest.warns(UserWarning, match="inputs: FeaturePermutation shuffles .* batch of one example"):
        attr = FeaturePermutation(seeded(MLP)).attribute(torch.randn(1, 6), target=0)
    assert torch.equal(attr, torch.zeros(1, 6))


def test_exact_shapley_refuses_21_features_before_evaluating_anything():
    calls = []

    def model(x):
        calls.append(x.shape)
        return x.sum(1)

    with pytest.raises(ValueError, match="feature_mask"):
        ShapleyValues(model).attribute(torch.randn(2, 21))
    with pytest.raises(ValueError, match="feature_mask"):
        ShapleyValues(model).attribute(torch.randn(2, 42), feature_mask=torch.arange(42)[None] // 2)
    assert calls == []


# --------------------------------------------------------------------------- parity with Captum


def _parity_cases():
    torch.manual_seed(0)
    cases = dict(BRUTE_FORCE)
    cases["cnn_superpixels"] = (seeded(SmallCNN), torch.randn(2, 3, 8, 8), _superpixels(8)[None, None], 3, ())
    return cases


PARITY = _parity_cases()
TARGETS = {"int": lambda n: 1, "list": lambda n: [2, 0, 1][:n]}


def _captum():
    return pytest.importorskip("captum.attr")


@pytest.mark.parametrize("with_mask", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("case", ["mlp", "cnn", "two_input", "cnn_superpixels"])
def test_feature_ablation_matches_captum(case, target, with_mask):
    captum = _captum()
    model, inputs, mask, _, args = PARITY[case]
    xs = _tuple(inputs)
    kwargs = {
        "target": TARGETS[target](xs[0].shape[0]),
        "additional_forward_args": args or None,
        "feature_mask": mask if with_mask else None,
        "baselines": 0.2 if len(xs) == 1 else (0.2, 0.2),
    }
    ours = FeatureAblation(model).attribute(inputs, **kwargs)
    theirs = captum.FeatureAblation(model).attribute(inputs, perturbations_per_eval=4, **kwargs)
    _close(ours, _tuple(theirs) if len(xs) > 1 else theirs)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("case", sorted(BRUTE_FORCE))
def test_exact_shapley_matches_captum(case, target):
    captum = _captum()
    model, inputs, mask, _, args = BRUTE_FORCE[case]
    xs = _tuple(inputs)
    kwargs = {
        "target": TARGETS[target](xs[0].shape[0]) if case != "interacting" else None,
        "additional_forward_args": args or None,
        "feature_mask": mask,
        "baselines": 0.2 if len(xs) == 1 else (0.2, 0.2),
    }
    ours = ShapleyValues(model).attribute(inputs, **kwargs)
    theirs = captum.ShapleyValues(model).attribute(inputs, perturbations_per_eval=8, **kwargs)
    _close(ours, _tuple(theirs) if len(xs) > 1 else theirs)


def test_shapley_value_sampling_agrees_with_captum_statistically():
    captum = _captum()
    model, x, mask, target, _ = BRUTE_FORCE["mlp"]
    exact = ShapleyValues(model).attribute(x, target=target, feature_mask=mask)
    torch.manual_seed(0)
    ours = ShapleyValueSampling(model).attribute(x, target=target, feature_mask=mask, n_samples=300)
    torch.manual_seed(0)
    theirs = captum.ShapleyValueSampling(model).attribute(
        x, target=target, feature_mask=mask, n_samples=300, perturbations_per_eval=5
    )
    scale = exact.abs().max().item()
    for estimate in (ours, theirs):
        assert (estimate - exact).abs().max().item() < 0.05 * scale
    assert (ours - theirs).abs().max().item() < 0.1 * scale


def test_feature_permutation_agrees_with_captum_on_zero_and_magnitude():
    captum = _captum()
    linear = seeded(Linear)
    keep = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    model = lambda x: linear(x * keep)
    torch.manual_seed(0)
    x = torch.randn(2000, 6)
    ours = FeaturePermutation(model).attribute(x, target=2)
    theirs = captum.FeaturePermutation(model).attribute(x, target=2)
    assert torch.equal(ours[:, 3], torch.zeros(2000))
    assert torch.equal(theirs[:, 3], torch.zeros(2000))
    # E|w (x - x')| = |w| * 2 / sqrt(pi) for independent standard normals x, x'.
    expected = linear.fc.weight[2].detach().abs() * keep * 2 / math.sqrt(math.pi)
    for attr in (ours, theirs):
        torch.testing.assert_close(attr.abs().mean(0), expected, atol=0.02, rtol=0.1)
