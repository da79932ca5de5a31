"""Lime and KernelShap against closed forms, exact Shapley values, scikit-learn's solvers and Captum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attribution import KernelShap, Lime, ShapleyValues, registry
from attribution.functional.surrogate import kernel_shap_coalitions, lasso, least_squares, lime_coalitions, ridge
from attribution.methods.surrogate import Lasso, LinearRegression, Ridge, get_exp_kernel_similarity_function
from tests.models import MLP, TwoInput, seeded

W = torch.tensor([1.5, -2.0, 0.5, 3.0, -1.0, 0.25])


def linear(x: torch.Tensor) -> torch.Tensor:
    return x @ W + 0.7


def interacting(x: torch.Tensor) -> torch.Tensor:
    """Five features with pairwise and triple interactions."""
    return x @ W[:5] + 2 * x[:, 0] * x[:, 1] + torch.sin(x[:, 2] * x[:, 3]) * x[:, 4]


# --------------------------------------------------------------------------- closed forms


def test_lime_recovers_a_linear_models_coefficients():
    x = torch.randn(3, 6)
    exact = Lime(linear, interpretable_model=LinearRegression()).attribute(x, n_samples=200)
    torch.testing.assert_close(exact, W * x, atol=1e-4, rtol=0)
    # The default lasso (alpha=0.01) shrinks each coefficient by about alpha / Var(z) = 0.04 on Bernoulli(1/2)
    # coalitions (weights and sampling noise make it vary a little).
    shrunk = Lime(linear).attribute(x, n_samples=200)
    assert (shrunk - W * x).abs().max() < 0.1
    large = (W * x).abs() > 0.2
    assert (shrunk.sign() == (W * x).sign())[large].all() and (shrunk.abs() < (W * x).abs())[large].all()


def test_lime_with_grouped_features_gets_the_sum_over_each_group():
    x = torch.randn(2, 6)
    mask = torch.tensor([0, 0, 1, 2, 2, 2])
    groups = torch.stack([(W * x)[:, mask == g].sum(1) for g in range(3)], dim=1)
    coefs = Lime(linear, interpretable_model=LinearRegression()).attribute(
        x, feature_mask=mask, n_samples=100, return_input_shape=False
    )
    torch.testing.assert_close(coefs, groups, atol=1e-4, rtol=0)
    spread = Lime(linear).attribute(x, feature_mask=mask, n_samples=300)
    torch.testing.assert_close(spread, groups[:, mask], atol=0.1, rtol=0)


def test_kernel_shap_converges_to_exact_shapley_values():
    x = torch.randn(2, 5)
    exact = ShapleyValues(interacting).attribute(x)

    def error(n_samples: int) -> float:
        return sum(
            float((KernelShap(interacting).attribute(x, n_samples=n_samples) - exact).abs().max()) for _ in range(4)
        )

    coarse, fine = error(30), error(500)
    assert fine < 0.5 * coarse and fine / 4 < 0.1, (coarse, fine)


def test_kernel_shap_is_exact_on_an_additive_model_and_efficient():
    def additive(x):
        return torch.sin(x[:, 0]) + x[:, 1] ** 2 + 3 * x[:, 2] + torch.exp(x[:, 3]) - x[:, 4] * 0.5

    x, b = torch.randn(3, 5), torch.randn(1, 5)
    expected = torch.stack(
        [torch.sin(x[:, 0]) - torch.sin(b[:, 0]), x[:, 1] ** 2 - b[:, 1] ** 2, 3 * (x[:, 2] - b[:, 2])]
        + [torch.exp(x[:, 3]) - torch.exp(b[:, 3]), -0.5 * (x[:, 4] - b[:, 4])],
        dim=1,
    )
    attrs = KernelShap(additive).attribute(x, baselines=b, n_samples=40)
    torch.testing.assert_close(attrs, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(attrs.sum(1), additive(x) - additive(b), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- the linear models vs scikit-learn


@pytest.mark.parametrize("shape", [(80, 10), (25, 40)], ids=["tall", "wide"])
def test_linear_models_match_scikit_learn(shape):
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = torch.randn(3, *shape, dtype=torch.float64), torch.randn(3, shape[0], dtype=torch.float64)
    w = torch.rand(3, shape[0], dtype=torch.float64) + 0.1
    ours = {
        "lasso": lasso(X, y, w, 0.02, tol=1e-10),
        "linear": least_squares(X, y, w),
        "ridge": ridge(X, y, w, 0.5),
    }
    for k in range(3):
        theirs = {
            "lasso": sklearn.Lasso(alpha=0.02, tol=1e-12, max_iter=100_000),
            "linear": sklearn.LinearRegression(),
            "ridge": sklearn.Ridge(alpha=0.5),
        }
        for name, model in theirs.items():
            model.fit(X[k].numpy(), y[k].numpy(), sample_weight=w[k].numpy())
            coef, intercept = ours[name]
            torch.testing.assert_close(coef[k], torch.from_numpy(model.coef_), atol=1e-6, rtol=1e-6, msg=name)
            torch.testing.assert_close(intercept[k].item(), float(model.intercept_), atol=1e-6, rtol=1e-6, msg=name)


def test_model_classes_validate_and_fit():
    X, y, w = torch.rand(2, 30, 4), torch.randn(2, 30), torch.ones(2, 30)
    for model in (Lasso(), Ridge(), LinearRegression()):
        coef, intercept = model.fit(X, y, w)
        assert coef.shape == (2, 4) and intercept.shape == (2,) and coef.dtype == torch.float32
    with pytest.raises(ValueError, match="alpha: expected a number > 0"):
        Lasso(alpha=0)
    with pytest.raises(ValueError, match="max_iter"):
        Lasso(max_iter=0)


# --------------------------------------------------------------------------- parity with Captum


def test_identical_coalitions_give_captums_results():
    captum = pytest.importorskip("captum.attr")
    from captum._utils.models.linear_model import SkLearnLasso
    from captum.attr._core.lime import get_exp_kernel_similarity_function as get_captum_kernel

    model, x, n_samples = seeded(MLP), torch.randn(1, 6), 60
    torch.manual_seed(3)
    ours_ks = KernelShap(model).attribute(x, target=1, n_samples=n_samples)
    torch.manual_seed(3)
    coalitions, _ = kernel_shap_coalitions(n_samples, 1, 6, x.device)

    def replay(*_, **__):
        yield from (c.long() for c in coalitions.view(n_samples, 1, 6))

    theirs = captum.KernelShap(model)
    theirs.perturb_func = replay
    torch.testing.assert_close(ours_ks, theirs.attribute(x, target=1, n_samples=n_samples), atol=1e-4, rtol=1e-3)

    for mode in ("cosine", "euclidean"):
        ours = Lime(
            model,
            similarity_func=get_exp_kernel_similarity_function(mode, kernel_width=2.0),
            perturb_func=lambda inputs, s, f: coalitions,
        ).attribute(x, target=1, n_samples=n_samples)
        reference = captum.Lime(
            model,
            interpretable_model=SkLearnLasso(alpha=0.01, tol=1e-10, max_iter=100_000),
            similarity_func=get_captum_kernel(mode, kernel_width=2.0),
            perturb_func=replay,
        ).attribute(x, target=1, n_samples=n_samples)
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-3, msg=mode)


@pytest.mark.slow
def test_with_many_samples_captum_and_we_estimate_the_same():
    """Independent draws of 4000 coalitions per example: both are within sampling noise of the same fit.

    The coefficients are O(1); the standard error of each estimate at 4000 samples is about 0.01, so the
    tolerance 0.05 is some 3-4 standard errors of the difference.
    """
    captum = pytest.importorskip("captum.attr")
    model, x = seeded(MLP), torch.randn(2, 6)
    for ours, theirs in ((Lime(model), captum.Lime(model)), (KernelShap(model), captum.KernelShap(model))):
        a = ours.attribute(x, target=[0, 2], n_samples=4000)
        b = theirs.attribute(x, target=[0, 2], n_samples=4000, perturbations_per_eval=200)
        torch.testing.assert_close(a, b, atol=0.05, rtol=0, msg=type(ours).__name__)


# --------------------------------------------------------------------------- invariants and structure


@pytest.mark.parametrize("method", [Lime, KernelShap])
def test_results_do_not_depend_on_perturbations_per_eval(method, cnn):
    x = torch.rand(2, 3, 8, 8)
    mask = torch.arange(16).view(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)
    results = []
    for per_eval in (1, 7, None):
        torch.manual_seed(5)
        results.append(
            method(cnn).attribute(x, target=1, feature_mask=mask, n_samples=40, perturbations_per_eval=per_eval)
        )
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], atol=1e-5, rtol=1e-4)


def test_multiple_inputs_share_feature_ids():
    wa, wb = torch.randn(2, 3), torch.randn(4)

    def two_linear(a, b):
        return (a * wa).sum((1, 2)) + b @ wb

    a, b = torch.randn(2, 2, 3), torch.randn(2, 4)
    mask_a, mask_b = torch.tensor([[0, 1, 2], [0, 1, 2]]), torch.tensor([2, 3, 3, 0])
    attr_a, attr_b = Lime(two_linear, interpretable_model=LinearRegression()).attribute(
        (a, b), feature_mask=(mask_a, mask_b), n_samples=60
    )
    contrib = torch.cat([(a * wa).flatten(1), b * wb], dim=1)
    ids = torch.cat([mask_a.flatten(), mask_b])
    groups = torch.stack([contrib[:, ids == g].sum(1) for g in range(4)], dim=1)
    torch.testing.assert_close(attr_a, groups[:, mask_a], atol=1e-4, rtol=0)
    torch.testing.assert_close(attr_b, groups[:, mask_b], atol=1e-4, rtol=0)

    model = seeded(TwoInput)
    image, table = torch.rand(2, 1, 6, 6), torch.rand(2, 5)
    masks = (torch.zeros(1, 1, 6, 6, dtype=torch.long), torch.tensor([[1, 1, 2, 2, 0]]))
    for method in (Lime(model), KernelShap(model)):
        attrs = method.attribute((image, table), target=0, feature_mask=masks, additional_forward_args=(2.0,))
        assert isinstance(attrs, tuple) and attrs[0].shape == image.shape and attrs[1].shape == table.shape
        torch.testing.assert_close(attrs[0][:, 0, 0, 0], attrs[1][:, 4])  # feature 0 spans both inputs


def test_images_with_a_superpixel_mask(cnn):
    x, baseline = torch.rand(2, 3, 16, 16), 0.5
    mask = torch.arange(16).view(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1)[None, None]
    torch.manual_seed(0)
    attrs = KernelShap(cnn).attribute(x, baselines=baseline, target=2, feature_mask=mask, n_samples=100)
    torch.manual_seed(0)
    coefs = KernelShap(cnn).attribute(
        x, baselines=baseline, target=2, feature_mask=mask, n_samples=100, return_input_shape=False
    )
    assert attrs.shape == x.shape and coefs.shape == (2, 16)
    torch.testing.assert_close(attrs, coefs.gather(1, mask.expand(2, 3, 16, 16).flatten(1)).view_as(x))
    with torch.no_grad():
        gain = cnn(x)[:, 2] - cnn(torch.full_like(x, baseline))[:, 2]
    torch.testing.assert_close(coefs.sum(1), gain, atol=1e-4, rtol=1e-3)  # efficiency, held by the weight-1e6 rows
    lime_attrs = Lime(cnn).attribute(x, target=2, feature_mask=mask, n_samples=30)
    assert lime_attrs.shape == x.shape and torch.isfinite(lime_attrs).all()


def test_integer_inputs_get_float_attributions():
    embedding = nn.EmbeddingBag(10, 1, mode="sum")
    tokens = torch.tensor([[1, 4, 7, 2], [3, 3, 9, 0]])
    attrs = Lime(lambda t: embedding(t)[:, 0], interpretable_model=LinearRegression()).attribute(
        tokens, baselines=0, n_samples=50
    )
    assert attrs.dtype == torch.float32
    with torch.no_grad():
        expected = embedding.weight[tokens, 0] - embedding.weight[0, 0]
    torch.testing.assert_close(attrs, expected, atol=1e-4, rtol=0)


def test_registered_and_seeded_from_the_global_generator():
    assert registry.get("lime") is Lime and registry.get("kernel_shap") is KernelShap
    torch.manual_seed(0)
    drawn = lime_coalitions(5, 2, 3, torch.device("cpu"))
    assert drawn.shape == (5, 2, 3) and drawn.dtype == torch.bool
    coalitions, weights = kernel_shap_coalitions(6, 2, 4, torch.device("cpu"))
    assert coalitions[0].all() and not coalitions[1].any() and (weights[:2] == 1e6).all() and (weights[2:] == 1).all()
    sizes = coalitions[2:].sum(-1)
    assert ((sizes >= 1) & (sizes <= 3)).all()


# --------------------------------------------------------------------------- bad input


def test_bad_input_fails_with_named_arguments(linear):
    x = torch.randn(2, 6)
    for method in (Lime(linear), KernelShap(linear)):
        with pytest.raises(ValueError, match="n_samples: expected an int >= 1, got 0"):
            method.attribute(x, target=0, n_samples=0)
        with pytest.raises(ValueError, match="feature_mask"):
            method.attribute(x, target=0, feature_mask=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="interpretable_model: expected an object with fit"):
        Lime(linear, interpretable_model=object())
    with pytest.raises(ValueError, match=r"perturb_func: expected a tensor of shape \(10, 2, 6\)"):
        Lime(linear, perturb_func=lambda inputs, s, f: torch.ones(1, f)).attribute(x, target=0, n_samples=10)
    with pytest.raises(ValueError, match=r"similarity_func: expected weights of shape"):
        Lime(linear, similarity_func=lambda xs, ps, c: 1.0).attribute(x, target=0, n_samples=10)
    with pytest.raises(ValueError, match="distance_mode: unknown value 'cosin'"):
        get_exp_kernel_similarity_function("cosin")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(cnn):
    X, y, w = torch.randn(3, 30, 50), torch.randn(3, 30), torch.rand(3, 30) + 0.1
    for fit in (lambda *a: lasso(*a, 0.02), least_squares, lambda *a: ridge(*a, 0.5)):
        for ours, reference in zip(fit(X.cuda(), y.cuda(), w.cuda()), fit(X, y, w)):
            torch.testing.assert_close(ours.cpu(), reference, atol=1e-5, rtol=1e-5)
    x = torch.rand(2, 3, 16, 16)
    mask = torch.arange(16).view(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1)
    coalitions = lime_coalitions(50, 2, 16, torch.device("cpu"))
    on = {
        device: Lime(cnn.to(device), perturb_func=lambda inputs, s, f: coalitions).attribute(
            x.to(device), target=1, feature_mask=mask.to(device), n_samples=50
        )
        for device in ("cpu", "cuda")
    }
    torch.testing.assert_close(on["cuda"].cpu(), on["cpu"], atol=1e-4, rtol=1e-3)
    coefs = KernelShap(cnn.cuda()).attribute(
        x.cuda(), target=1, feature_mask=mask.cuda(), n_samples=80, return_input_shape=False
    )
    with torch.no_grad():
        gain = cnn(x.cuda())[:, 1] - cnn(torch.zeros_like(x).cuda())[:, 1]
    assert coefs.is_cuda and coefs.shape == (2, 16)
    torch.testing.assert_close(coefs.sum(1), gain, atol=1e-4, rtol=1e-3)
