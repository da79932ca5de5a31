"""Lime and LimeBase with Captum-style interpretable models and per-sample functions.

Oracles: a Captum-style model fitted on the same data as our batched one gives the same coefficients;
per-sample similarity and perturbation functions give what their batched twins give; LimeBase recovers a
linear model's weights; with the sampling made identical (the same seed for Lime's default draws, fixed
perturbations for LimeBase) Captum's classes give the same numbers.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

import attribution
from attribution import Lime, LimeBase
from attribution.functional.surrogate import BATCHED, PER_SAMPLE, function_form, lime_coalitions
from attribution.methods.surrogate import (
    Lasso,
    LinearRegression,
    batched,
    get_exp_kernel_similarity_function,
    per_sample,
)
from tests.models import MLP, seeded

W = torch.tensor([1.5, -2.0, 0.5, 3.0, -1.0])


def linear(x: torch.Tensor) -> torch.Tensor:
    return x @ W + 0.7


class TinyLeastSquares:
    """A Captum-style interpretable model: weighted least squares fitted from a DataLoader of (X, y, w)."""

    def __init__(self) -> None:
        self.weight = self.intercept = None
        self.batches: list[tuple[torch.Tensor, ...]] = []

    def fit(self, train_data: DataLoader, **kwargs) -> None:
        assert isinstance(train_data, DataLoader)
        self.batches = [tuple(batch) for batch in train_data]
        X, y, w = (torch.cat(parts).double() for parts in zip(*self.batches))
        design = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1) * w.sqrt()[:, None]
        solution = torch.linalg.lstsq(design, (y * w.sqrt())[:, None]).solution[:, 0]
        self.weight, self.intercept = solution[:-1].float()[None], solution[-1:].float()

    def representation(self) -> torch.Tensor:
        return self.weight

    def bias(self) -> torch.Tensor:
        return self.intercept


# --------------------------------------------------------------------------- interpretable models


def test_a_captum_style_model_fits_what_our_batched_model_fits():
    model, x = seeded(MLP, n_in=5), torch.randn(3, 5)
    tiny = TinyLeastSquares()
    torch.manual_seed(1)
    theirs = Lime(model, interpretable_model=tiny).attribute(x, target=[0, 1, 2], n_samples=60)
    torch.manual_seed(1)
    ours = Lime(model, interpretable_model=LinearRegression()).attribute(x, target=[0, 1, 2], n_samples=60)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    # Captum's data contract: one float32 batch of (X (S, F) of 0/1, y (S,), weights (S,)) per example.
    (X, y, w), *rest = tiny.batches
    assert not rest and X.shape == (60, 5) and y.shape == w.shape == (60,)
    assert X.dtype == y.dtype == w.dtype == torch.float32 and set(X.unique().tolist()) <= {0.0, 1.0}


def test_captums_sklearn_lasso_fits_what_our_lasso_fits():
    pytest.importorskip("sklearn")
    models = pytest.importorskip("captum._utils.models.linear_model")
    model, x = seeded(MLP, n_in=5), torch.randn(2, 5)
    results = []
    for interpretable in (models.SkLearnLasso(alpha=0.01, tol=1e-10, max_iter=100_000), Lasso(0.01, tol=1e-10)):
        torch.manual_seed(2)
        results.append(Lime(model, interpretable_model=interpretable).attribute(x, target=1, n_samples=80))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)


def test_fitting_a_captum_style_model_leaves_the_global_generator_alone():
    coalitions, x = torch.rand(20, 1, 5) < 0.5, torch.randn(1, 5)
    state = torch.get_rng_state()
    Lime(linear, interpretable_model=TinyLeastSquares(), perturb_func=lambda x, s, f: coalitions).attribute(
        x, n_samples=20
    )
    assert torch.equal(torch.get_rng_state(), state)  # iterating a DataLoader would draw a seed from it


# --------------------------------------------------------------------------- per-sample vs batched functions


def _flat(value) -> torch.Tensor:
    return torch.cat([t.flatten() for t in (value if isinstance(value, tuple) else (value,))]).double()


def _cosine_kernel(original, perturbed, sample, **kwargs):
    """Captum's per-sample form of our default kernel (cosine distance, width 1)."""
    a, b = _flat(original), _flat(perturbed)
    distance = 1 - float(a @ b / (a.norm() * b.norm()).clamp_min(1e-8))
    return math.exp(-(distance**2) / 2)


def _two_inputs(a, b):
    return a @ W[:3] + b @ W[3:]


@pytest.mark.parametrize("case", ["batch", "tuple", "one value per batch"])
def test_per_sample_similarity_weighs_as_the_batched_one(case):
    mlp = seeded(MLP, n_in=5)
    forward, x = {
        "batch": (mlp, torch.randn(3, 5)),
        "tuple": (_two_inputs, (torch.randn(3, 3), torch.randn(3, 2))),
        "one value per batch": (lambda b: mlp(b)[:, 0].sum(), torch.randn(3, 5)),
    }[case]
    target = [0, 1, 2] if case == "batch" else None
    results = []
    for similarity in (_cosine_kernel, None):
        torch.manual_seed(4)
        explainer = Lime(forward, Lasso(0.01, tol=1e-10), similarity_func=similarity)
        results.append(explainer.attribute(x, target=target, n_samples=40, return_input_shape=False))
    assert results[0].shape == (1 if case == "one value per batch" else 3, 5)
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)


def test_per_sample_perturbations_and_generators_give_the_batched_results():
    model, x, S = seeded(MLP, n_in=5), torch.randn(3, 5), 30
    coalitions = torch.rand(S, 3, 5) < 0.5
    example = lambda original: int((x == original).all(1).nonzero())  # noqa: E731

    def perturb_generator(original, **kwargs):  # Captum's form: a generator of (1, F) 0/1 samples
        yield from coalitions[:, example(original), None].long()

    draws = {}

    def perturb_function(original, **kwargs):  # Captum's form: one (1, F) sample per call
        r = example(original)
        draws[r] = draws.get(r, -1) + 1
        return coalitions[draws[r], r][None].long()

    results = [
        Lime(model, LinearRegression(), perturb_func=perturb).attribute(x, target=0, n_samples=S)
        for perturb in (lambda inputs, n_samples, n_features: coalitions, perturb_generator, perturb_function)
    ]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], atol=1e-5, rtol=1e-5)


def test_per_sample_functions_get_captums_keyword_arguments_cut_to_the_example():
    x, mask = torch.randn(2, 5), torch.tensor([[0, 0, 1, 1, 2], [0, 1, 1, 2, 2]])
    seen = []

    def perturb(original, **kwargs):
        seen.append((original.shape, kwargs["baselines"].shape, kwargs["feature_mask"], kwargs["num_interp_features"]))
        return torch.ones(1, kwargs["num_interp_features"])

    Lime(linear, LinearRegression(), perturb_func=perturb).attribute(x, baselines=x * 0, feature_mask=mask, n_samples=3)
    assert len(seen) == 6 and all(s[0] == (1, 5) and s[1] == (1, 5) and s[3] == 3 for s in seen)
    assert torch.equal(seen[0][2], mask[:1]) and torch.equal(seen[-1][2], mask[1:])


def test_which_form_a_function_takes():
    def plain(inputs, perturbed, coalitions):
        return coalitions

    def captum_style(original, perturbed, sample, **kwargs):
        return 1.0

    def generator(original, **kwargs):
        yield torch.ones(1, 3)

    assert function_form(plain, BATCHED) == BATCHED and function_form(plain, PER_SAMPLE) == PER_SAMPLE
    assert function_form(captum_style, BATCHED) == PER_SAMPLE and function_form(generator, BATCHED) == PER_SAMPLE
    assert function_form(batched(captum_style), PER_SAMPLE) == BATCHED
    assert function_form(per_sample(plain), BATCHED) == PER_SAMPLE
    assert function_form(get_exp_kernel_similarity_function(), PER_SAMPLE) == BATCHED
    assert function_form(plain, BATCHED) == BATCHED  # marking wraps; the caller's function is unchanged


# --------------------------------------------------------------------------- LimeBase


def _noise(original, **kwargs):
    return original + torch.randn_like(original)


def _identity(perturbed, original, **kwargs):
    return perturbed


def _unit(original, perturbed, sample, **kwargs):
    return 1.0


def test_lime_base_recovers_a_linear_models_weights():
    x = torch.randn(1, 5)
    explainer = LimeBase(linear, LinearRegression(), _unit, _noise, False, None, _identity)
    weights = explainer.attribute(x, n_samples=30)
    torch.testing.assert_close(weights, W[None], atol=1e-4, rtol=0)
    # Several examples: one row each; a forward with one value per batch: one row for the batch.
    rows = explainer.attribute(torch.randn(3, 5), n_samples=30)
    torch.testing.assert_close(rows, W.expand(3, 5), atol=1e-4, rtol=0)
    total = LimeBase(lambda b: linear(b).sum(), LinearRegression(), _unit, _noise, False, None, lambda p, o: p.sum(0))
    torch.testing.assert_close(total.attribute(torch.randn(3, 5), n_samples=30), W[None], atol=1e-4, rtol=0)


def test_lime_base_in_the_interpretable_space_and_batched_functions():
    x = torch.randn(2, 5)
    samples = torch.rand(40, 2, 5) < 0.5

    def draw(original, **kwargs):
        yield from samples[:, kwargs["row"], None].float()

    def keep(sample, original, **kwargs):
        return sample * original

    results = [
        LimeBase(linear, LinearRegression(), _unit, draw, True, keep, None).attribute(x[r : r + 1], row=r, n_samples=40)
        for r in range(2)
    ]
    torch.testing.assert_close(torch.cat(results), W * x, atol=1e-4, rtol=0)  # coefficient i: W_i x_i
    explainer = LimeBase(
        linear,
        LinearRegression(),
        batched(lambda inputs, perturbed, design, **kw: torch.ones(design.shape[:2])),
        batched(lambda inputs, n_samples, **kw: samples.float()),
        True,
        batched(lambda design, inputs, **kw: design * inputs),
        None,
    )
    torch.testing.assert_close(explainer.attribute(x, n_samples=40), W * x, atol=1e-4, rtol=0)


def test_lime_base_matches_captum_on_fixed_perturbations():
    captum = pytest.importorskip("captum.attr")
    pytest.importorskip("sklearn")
    models = pytest.importorskip("captum._utils.models.linear_model")
    model, x = seeded(MLP, n_in=5), torch.randn(1, 5)
    copies = x + torch.randn(50, 5)
    kernel = lambda original, perturbed, sample, **kw: math.exp(-float((original - perturbed).square().sum()) / 4)  # noqa: E731

    def replay(original, **kwargs):
        yield from copies[:, None]

    arguments = (kernel, replay, False, None, _identity)
    theirs = captum.LimeBase(model, models.SkLearnLinearRegression(), *arguments).attribute(x, target=1, n_samples=50)
    same_model = LimeBase(model, models.SkLearnLinearRegression(), *arguments).attribute(x, target=1, n_samples=50)
    ours = LimeBase(model, LinearRegression(), *arguments).attribute(x, target=1, n_samples=50)
    assert theirs.shape == same_model.shape == ours.shape == (1, 5)
    torch.testing.assert_close(same_model, theirs)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_lime_from_the_same_seed_is_captums_lime():
    captum = pytest.importorskip("captum.attr")
    pytest.importorskip("sklearn")
    models = pytest.importorskip("captum._utils.models.linear_model")
    model, x = seeded(MLP, n_in=5), torch.randn(1, 5)
    from captum.attr._core.lime import get_exp_kernel_similarity_function as captum_kernel

    results = []
    for cls, kernel in ((Lime, get_exp_kernel_similarity_function), (captum.Lime, captum_kernel)):
        torch.manual_seed(7)
        explainer = cls(model, models.SkLearnLasso(alpha=0.01), kernel("euclidean", 2.0))
        results.append(explainer.attribute(x, target=1, n_samples=40))
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-5)


def test_lime_with_a_per_sample_generator_matches_captum_on_a_batch():
    captum = pytest.importorskip("captum.attr")
    pytest.importorskip("sklearn")
    models = pytest.importorskip("captum._utils.models.linear_model")
    model, x = seeded(MLP, n_in=5), torch.randn(2, 5)
    coalitions = (torch.rand(30, 2, 5) < 0.5).long()

    def replay(original, **kwargs):  # Captum calls it once per example, with that example alone
        yield from coalitions[:, int((x == original).all(1).nonzero()), None]

    results = [
        cls(model, models.SkLearnLasso(alpha=0.01), perturb_func=replay).attribute(x, target=[0, 2], n_samples=30)
        for cls in (Lime, captum.Lime)
    ]
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)


def test_default_coalitions_are_captums_per_sample_bernoulli_draws_in_turn():
    torch.manual_seed(5)
    drawn = lime_coalitions(7, 3, 4, torch.device("cpu"))
    after = torch.rand(1)
    torch.manual_seed(5)  # Captum's default_perturb_func: one (1, F) Bernoulli(1/2) draw per sample, example by example
    reference = torch.stack([torch.cat([torch.bernoulli(torch.ones(1, 4) * 0.5) for _ in range(7)]) for _ in range(3)])
    assert torch.equal(drawn, reference.transpose(0, 1).bool()) and torch.equal(torch.rand(1), after)


def test_a_batch_gets_what_one_call_per_example_gets_in_turn():
    model, x = seeded(MLP, n_in=5), torch.randn(3, 5)
    torch.manual_seed(3)
    batch = Lime(model).attribute(x, target=[0, 1, 2], n_samples=30)
    torch.manual_seed(3)
    one_by_one = [Lime(model).attribute(x[i : i + 1], target=i, n_samples=30) for i in range(3)]
    torch.testing.assert_close(batch, torch.cat(one_by_one), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- bad input


def test_bad_input_fails_with_named_arguments():
    x = torch.randn(2, 5)
    with pytest.raises(ValueError, match="to_interp_rep_transform: expected a callable"):
        LimeBase(linear, LinearRegression(), _unit, _noise, False, None, None)
    with pytest.raises(AssertionError, match="from_interp_rep_transform: expected a callable"):
        LimeBase(linear, LinearRegression(), _unit, _noise, True, None, _identity)  # Captum raises AssertionError
    with pytest.raises(TypeError, match="perturb_interpretable_space: expected a bool"):
        LimeBase(linear, LinearRegression(), _unit, _noise, "no", None, _identity)
    with pytest.raises(TypeError, match="similarity_func: expected a callable"):
        LimeBase(linear, LinearRegression(), None, _noise, False, None, _identity)
    with pytest.raises(TypeError, match="interpretable_model: expected an object with fit"):
        LimeBase(linear, object(), _unit, _noise, False, None, _identity)
    with pytest.raises(ValueError, match=r"perturb_func: expected a copy of the example, shaped \[\(1, 5\)\]"):
        LimeBase(linear, LinearRegression(), _unit, lambda o, **k: o[0], False, None, _identity).attribute(x)
    with pytest.raises(ValueError, match="to_interp_rep_transform: expected interpretable samples of shape"):
        LimeBase(linear, LinearRegression(), _unit, _noise, False, None, lambda p, o, **k: 3.0).attribute(x)
    with pytest.raises(ValueError, match="similarity_func: expected a number"):
        LimeBase(linear, LinearRegression(), lambda *a, **k: torch.ones(2), _noise, False, None, _identity).attribute(x)
    with pytest.raises(ValueError, match=r"from_interp_rep_transform: expected 4 copies"):
        draw = batched(lambda inputs, n, **k: torch.ones(n, 2, 5))
        LimeBase(linear, LinearRegression(), _unit, draw, True, batched(lambda d, i, **k: d[:, :1]), None).attribute(
            x, n_samples=4, perturbations_per_eval=4
        )
    with pytest.raises(ValueError, match=r"perturb_func: expected interpretable samples of shape \(1, 5\)"):
        Lime(linear, perturb_func=lambda o, **k: torch.ones(1, 4)).attribute(x, n_samples=3)
    with pytest.raises(ValueError, match="perturb_func: expected coalitions of 0/1"):
        Lime(linear, perturb_func=lambda o, **k: torch.full((1, 5), 2)).attribute(x, n_samples=3)
    with pytest.raises(ValueError, match="perturb_func: gave no samples"), pytest.warns(UserWarning, match="after 0"):
        Lime(linear, perturb_func=per_sample(lambda o, **k: iter(()))).attribute(x, n_samples=3)
    with pytest.raises(TypeError, match="func: expected a callable"):
        batched(3)


def test_a_generator_that_ends_early_warns_and_the_rest_is_fitted():
    x = torch.randn(1, 5)

    def short(original, **kwargs):
        yield from (torch.rand(12, 1, 5) < 0.5).long()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coefs = Lime(linear, LinearRegression(), perturb_func=short).attribute(x, n_samples=20)
    assert any("generator ended after 12 of n_samples=20" in str(w.message) for w in caught)
    assert coefs.shape == x.shape


def test_exported_and_captum_compatible():
    assert attribution.LimeBase is LimeBase and "LimeBase" in attribution.__all__
    explainer = LimeBase(linear, LinearRegression(), _unit, _noise, False, None, _identity)
    assert not explainer.multiplies_by_inputs and not explainer.has_convergence_delta()
    with pytest.raises(NotImplementedError):
        explainer.attribute_future()
