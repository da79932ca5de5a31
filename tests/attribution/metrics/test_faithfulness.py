"""Deletion / insertion curves and faithfulness correlation: closed forms, invariances, errors, Quantus parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attribution.metrics import (
    area_under_curve,
    deletion_curve,
    faithfulness_correlation,
    insertion_curve,
)
from attribution.metrics.faithfulness import _prepare, correlation_of
from tests.models import seeded

f64 = torch.float64


def _line(weights: Tensor, bias: float = 0.5) -> nn.Module:
    """f(x) = w·x + bias on flattened inputs, in float64."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weights.numel(), 1)).double()
    with torch.no_grad():
        model[1].weight.copy_(weights.reshape(1, -1))
        model[1].bias.fill_(bias)
    return model


@pytest.fixture
def line() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """A linear model on (N, 2, 3, 3) inputs, a batch, a baseline and the exact attributions w * (x - b)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(2, 3, 3, generator=gen, dtype=f64)
    x = torch.randn(4, 2, 3, 3, generator=gen, dtype=f64)
    baseline = torch.randn(1, 2, 3, 3, generator=gen, dtype=f64)
    return _line(w), x, baseline, w * (x - baseline)


# --------------------------------------------------------------------------- closed forms


def test_deletion_of_exact_attributions_drops_by_the_deleted_contributions(line):
    model, x, baseline, exact = line
    curve = deletion_curve(model, x, exact, baselines=baseline)
    contributions = exact.flatten(1).sort(dim=1, descending=True).values
    start = model(x)[:, 0]
    expected = torch.cat([start[:, None], start[:, None] - contributions.cumsum(1)], dim=1)
    torch.testing.assert_close(curve.values, expected)
    torch.testing.assert_close(curve.fractions, torch.arange(19, dtype=f64) / 18)
    torch.testing.assert_close(curve.values[:, -1], model(baseline.expand_as(x))[:, 0])


def test_insertion_is_the_mirror_of_deletion(line):
    model, x, baseline, exact = line
    inserted = insertion_curve(model, x, exact, baselines=baseline).values
    contributions = exact.flatten(1).sort(dim=1, descending=True).values
    start = model(baseline.expand_as(x))[:, 0]
    expected = torch.cat([start[:, None], start[:, None] + contributions.cumsum(1)], dim=1)
    torch.testing.assert_close(inserted, expected)
    # on a linear model, deletion + insertion at each step is f(x) + f(baseline)
    deleted = deletion_curve(model, x, exact, baselines=baseline).values
    torch.testing.assert_close(deleted + inserted, (model(x) + start[:, None]).expand_as(deleted))


def test_steps_group_features_and_channel_summed_maps_move_pixels_together(line):
    model, x, baseline, exact = line
    summed = exact.sum(1, keepdim=True)  # (N, 1, 3, 3): one feature per pixel, both channels move together
    curve = deletion_curve(model, x, summed, baselines=baseline, n_steps=3)
    by_pixel = summed.flatten(1).sort(dim=1, descending=True).values.cumsum(1)[:, [2, 5, 8]]
    start = model(x)[:, 0, None]
    torch.testing.assert_close(curve.values, torch.cat([start, start - by_pixel], dim=1))
    # a feature mask of the same pixels gives the same curve; step_size=3 the same steps
    mask = torch.arange(9).reshape(1, 1, 3, 3)
    masked = deletion_curve(model, x, exact, baselines=baseline, feature_mask=mask, step_size=3)
    torch.testing.assert_close(masked.values, curve.values)
    torch.testing.assert_close(masked.fractions, torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=f64))


def test_uneven_steps_end_with_every_feature_moved(line):
    model, x, baseline, exact = line
    curve = deletion_curve(model, x, exact, baselines=baseline, step_size=5)  # 18 features: 5, 10, 15, 18
    torch.testing.assert_close(curve.fractions, torch.tensor([0, 5, 10, 15, 18], dtype=f64) / 18)
    torch.testing.assert_close(curve.values[:, -1], model(baseline.expand_as(x))[:, 0])
    area = area_under_curve(curve)
    torch.testing.assert_close(area, torch.trapezoid(curve.values, curve.fractions, dim=1))


def test_ties_are_broken_in_index_order():
    model = _line(torch.tensor([1.0, 2.0, 3.0]), bias=0.0)
    x = torch.ones(1, 3, dtype=f64)
    curve = deletion_curve(model, x, torch.zeros(1, 3, dtype=f64))  # all tied: delete 0, 1, 2 in turn
    torch.testing.assert_close(curve.values, torch.tensor([[6.0, 5.0, 3.0, 0.0]], dtype=f64))


def test_random_order_deletes_more_slowly_than_the_exact_order():
    gen = torch.Generator().manual_seed(1)
    w = torch.rand(64, generator=gen, dtype=f64)
    model = _line(w)
    x = torch.rand(8, 64, generator=gen, dtype=f64) + 0.1  # every contribution w * x is positive
    exact = deletion_curve(model, x, w * x, n_steps=16)
    shuffled = deletion_curve(model, x, torch.rand(8, 64, generator=gen, dtype=f64), n_steps=16)
    assert (area_under_curve(shuffled) > area_under_curve(exact)).all()
    inverted = deletion_curve(model, x, -w * x, n_steps=16)  # least important first: the largest area
    assert (area_under_curve(inverted) > area_under_curve(shuffled)).all()


def test_faithfulness_correlation_of_exact_attributions_is_one(line):
    model, x, baseline, exact = line
    scores = faithfulness_correlation(model, x, exact, baselines=baseline, n_perturb_samples=30, subset_size=5, seed=0)
    torch.testing.assert_close(scores, torch.ones(4, dtype=f64))


def test_faithfulness_correlation_of_random_attributions_is_about_zero():
    # Over the subsets, the correlation tends to that of the attributions with the true contributions across
    # features, which for independent random attributions is about 0 (within ~1/sqrt(features)).
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(2000, generator=gen, dtype=f64)
    model, x = _line(w), torch.randn(4, 2000, generator=gen, dtype=f64)
    noise = torch.randn(x.shape, generator=gen, dtype=f64)
    scores = faithfulness_correlation(model, x, noise, n_perturb_samples=2000, subset_size=200, seed=1)
    assert scores.abs().max() < 0.15  # standard errors ~0.03
    exact = faithfulness_correlation(model, x, w * x, n_perturb_samples=2000, subset_size=200, seed=1)
    torch.testing.assert_close(exact, torch.ones(4, dtype=f64))


def test_faithfulness_correlation_by_hand_on_an_mlp(mlp):
    """Drops and sums computed one subset at a time, by hand, on the subsets the call draws."""
    model = mlp.double()
    gen = torch.Generator().manual_seed(4)
    x, attr = torch.randn(3, 6, generator=gen, dtype=f64), torch.randn(3, 6, generator=gen, dtype=f64)
    keys = torch.rand((12, 6), generator=torch.Generator().manual_seed(7))
    subsets = torch.zeros(12, 6, dtype=torch.bool).scatter_(1, keys.argsort(1)[:, :2], True)
    with torch.no_grad():
        drops = torch.stack([model(x)[:, 1] - model(torch.where(s, 0.0, x))[:, 1] for s in subsets], 1)
    sums = (attr[:, None] * subsets).sum(-1)
    expected = torch.stack([torch.corrcoef(torch.stack([s, d]))[0, 1] for s, d in zip(sums, drops)])
    got = faithfulness_correlation(model, x, attr, target=1, n_perturb_samples=12, subset_size=2, seed=7)
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("per_eval", [1, 3, 7, None])
def test_results_do_not_depend_on_chunking_or_batching(cnn, per_eval):
    model = cnn.double().eval()
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 6, 6, generator=gen, dtype=f64)
    attr = torch.randn(3, 1, 6, 6, generator=gen, dtype=f64)
    labels = torch.tensor([0, 2, 3])
    kwargs = {"target": labels, "baselines": 0.5}
    reference = deletion_curve(model, x, attr, n_steps=6, perturbations_per_eval=100, **kwargs).values
    chunked = deletion_curve(model, x, attr, n_steps=6, perturbations_per_eval=per_eval, **kwargs).values
    torch.testing.assert_close(chunked, reference)
    ins = insertion_curve(model, x, attr, n_steps=6, perturbations_per_eval=per_eval, **kwargs).values
    corr = faithfulness_correlation(
        model, x, attr, n_perturb_samples=10, subset_size=8, seed=2, perturbations_per_eval=per_eval, **kwargs
    )
    for i in range(3):  # one example at a time
        alone = {"target": int(labels[i]), "baselines": 0.5}
        torch.testing.assert_close(
            deletion_curve(model, x[i : i + 1], attr[i : i + 1], n_steps=6, **alone).values, reference[i : i + 1]
        )
        torch.testing.assert_close(
            insertion_curve(model, x[i : i + 1], attr[i : i + 1], n_steps=6, **alone).values, ins[i : i + 1]
        )
        single = faithfulness_correlation(
            model, x[i : i + 1], attr[i : i + 1], n_perturb_samples=10, subset_size=8, seed=2, **alone
        )
        torch.testing.assert_close(single, corr[i : i + 1])


def test_global_rng_model_and_inputs_untouched(mlp):
    model = mlp.train()
    x, attr = torch.randn(2, 6), torch.randn(2, 6)
    before, x_before = torch.get_rng_state(), x.clone()
    first = faithfulness_correlation(model, x, attr, target=0, n_perturb_samples=8, subset_size=3, seed=11)
    deletion_curve(model, x, attr, target=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training and torch.equal(x, x_before)
    again = faithfulness_correlation(model, x, attr, target=0, n_perturb_samples=8, subset_size=3, seed=11)
    torch.testing.assert_close(first, again)
    assert not first.requires_grad and not first.is_inference()


# --------------------------------------------------------------------------- errors


def test_bad_arguments_are_named(linear):
    x, attr = torch.randn(2, 6), torch.randn(2, 6)
    with pytest.raises(ValueError, match=r"attributions: expected a tensor of the input's shape \(2, 6\)"):
        deletion_curve(linear, x, attr[:, :5], target=0)
    with pytest.raises(ValueError, match="attributions: .* the same batch"):
        deletion_curve(linear, x, attr[:1], target=0)
    with pytest.raises(TypeError, match="attributions: expected a tensor"):
        deletion_curve(linear, x, attr.tolist(), target=0)
    with pytest.raises(TypeError, match="inputs: expected one tensor"):
        deletion_curve(linear, (x, x), attr, target=0)
    with pytest.raises(ValueError, match="n_steps, step_size: expected one of them"):
        deletion_curve(linear, x, attr, target=0, n_steps=2, step_size=2)
    with pytest.raises(ValueError, match=r"n_steps: expected at most the number of features \(6\)"):
        insertion_curve(linear, x, attr, target=0, n_steps=7)
    with pytest.raises(ValueError, match="step_size: expected an int >= 1"):
        insertion_curve(linear, x, attr, target=0, step_size=0)
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        deletion_curve(linear, x, attr, target=0, perturbations_per_eval=0)
    with pytest.raises(TypeError, match="feature_mask: expected an integer or bool tensor"):
        deletion_curve(linear, x, attr, target=0, feature_mask=torch.zeros(1, 6))
    with pytest.raises(ValueError, match="baselines"):
        deletion_curve(linear, x, attr, target=0, baselines=torch.zeros(3))
    with pytest.raises(ValueError, match="target"):
        deletion_curve(linear, x, attr, target=[0, 1, 2])
    with pytest.raises(ValueError, match=r"subset_size: expected fewer than the 6 features"):
        faithfulness_correlation(linear, x, attr, target=0, subset_size=6)
    with pytest.raises(ValueError, match="n_perturb_samples: expected an int >= 2"):
        faithfulness_correlation(linear, x, attr, target=0, subset_size=2, n_perturb_samples=1)
    with pytest.raises(TypeError, match="seed: expected an int or None"):
        faithfulness_correlation(linear, x, attr, target=0, subset_size=2, seed=0.5)
    with pytest.raises(ValueError, match="curve: expected values of shape"):
        area_under_curve(torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"fractions: expected a tensor of shape \(3,\)"):
        area_under_curve(torch.zeros(2, 3), torch.zeros(2))


def test_constant_drops_give_nan():
    model = _line(torch.zeros(4))  # nothing changes the output
    scores = faithfulness_correlation(model, torch.ones(2, 4, dtype=f64), torch.randn(2, 4, dtype=f64), subset_size=2)
    assert scores.isnan().all()


# --------------------------------------------------------------------------- parity with Quantus


@pytest.fixture
def quantus():
    return pytest.importorskip("quantus")


def _image_setup() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    model = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 3))).eval()
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(4, 2, 4, 4, generator=gen)
    attr = torch.randn(4, 2, 4, 4, generator=gen)
    return model, x, attr, torch.tensor([0, 1, 2, 1])


@pytest.mark.slow
def test_deletion_curve_matches_quantus_pixel_flipping(quantus):
    model, x, attr, labels = _image_setup()
    metric = quantus.PixelFlipping(
        features_in_step=2, perturb_baseline=0.25, normalise=False, abs=False, disable_warnings=True
    )
    theirs = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=labels.numpy(),
        a_batch=attr.numpy(),
        device="cpu",
        softmax=False,
        channel_first=True,
    )
    ours = deletion_curve(model, x, attr, target=labels, baselines=0.25, step_size=2)
    # Quantus records the score after each step, without the unperturbed input in front
    torch.testing.assert_close(ours.values[:, 1:], torch.tensor(np.array(theirs), dtype=torch.float32))


@pytest.mark.slow
def test_faithfulness_correlation_matches_quantus_on_its_own_subsets(quantus):
    """Quantus draws per-example subsets from numpy's global generator: replay its draws and score them."""
    model, x, attr, labels = _image_setup()
    runs, size = 20, 6
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=runs,
        subset_size=size,
        perturb_baseline=0.25,
        normalise=False,
        abs=False,
        return_aggregate=False,
        disable_warnings=True,
    )
    state = np.random.get_state()
    try:
        np.random.seed(0)
        kwargs = {"x_batch": x.numpy(), "y_batch": labels.numpy(), "a_batch": attr.numpy(), "device": "cpu"}
        theirs = metric(model=model, softmax=False, channel_first=True, **kwargs)
        np.random.seed(0)
        drawn = [[np.random.choice(32, size, replace=False) for _ in range(4)] for _ in range(runs)]
    finally:
        np.random.set_state(state)
    subsets = torch.zeros(4, runs, 32, dtype=torch.bool)
    for r, per_run in enumerate(drawn):
        for i, chosen in enumerate(per_run):
            subsets[i, r, torch.from_numpy(chosen)] = True
    objective, x_, baseline, features = _prepare(model, x, attr, labels, 0.25, None, None)
    ours = correlation_of(objective, x_, baseline, features, subsets, per_eval=7)
    torch.testing.assert_close(ours, torch.tensor(theirs, dtype=torch.float32), atol=1e-5, rtol=1e-5)
