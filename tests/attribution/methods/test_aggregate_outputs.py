"""Forwards with several values, per example or for the whole batch, and inputs of different batch sizes
(issue 13: the last groups of Captum's suite).

A forward that returns ``(K,)`` or ``(1, K)`` values for the whole batch (Captum's aggregate mode with several
outputs) gets one row of attributions per value: ``(K, ...)`` from the ablation family, the forward's own
output shape in front from the Shapley classes, Lime and KernelShap.  Lime and KernelShap also fit one
surrogate per output element for ``target=None`` on several values per example (Captum refuses both).  An
aggregate forward may take inputs whose first dimensions differ (sparse index lists with offsets, an empty
tensor).  Oracles: closed forms of sums of linear models, agreement with explaining each output on its own,
invariance to ``perturbations_per_eval``, and Captum where it is right (skipped without Captum).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attribution import (
    FeatureAblation,
    FeaturePermutation,
    IntegratedGradients,
    KernelShap,
    LayerFeatureAblation,
    Lime,
    Occlusion,
    ShapleyValues,
    ShapleyValueSampling,
)
from attribution.methods.surrogate import LinearRegression

A = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])  # (D=3 features, K=2 outputs)
X = torch.tensor([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0], [4.0, 1.0, 0.5]])
CLOSED_FORM = (X.sum(0)[:, None] * A).t()  # (K, D): output k loses A[j, k] * sum_i x_ij when feature j is 0


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """``(K,)`` for the whole batch: a linear model summed over the examples."""
    return (x @ A).sum(0)


def batch_sum_row(x: torch.Tensor) -> torch.Tensor:
    """``(1, K)`` for the whole batch."""
    return (x @ A).sum(0, keepdim=True)


def _close(actual, expected, **kwargs):
    torch.testing.assert_close(actual, torch.as_tensor(expected).to(actual), **kwargs)


def _captum():
    return pytest.importorskip("captum.attr")


ABLATION_FAMILY = {
    "feature_ablation": lambda f, x, **kw: FeatureAblation(f).attribute(x, **kw),
    "occlusion": lambda f, x, **kw: Occlusion(f).attribute(x, sliding_window_shapes=(1,), **kw),
}
SHAPLEY_FAMILY = {
    "shapley_values": lambda f, x, **kw: ShapleyValues(f).attribute(x, **kw),
    "shapley_value_sampling": lambda f, x, **kw: ShapleyValueSampling(f).attribute(x, n_samples=3, **kw),
    "kernel_shap": lambda f, x, **kw: KernelShap(f).attribute(x, n_samples=30, **kw),
    "lime": lambda f, x, **kw: Lime(f, LinearRegression()).attribute(x, n_samples=30, **kw),
}


# --------------------------------------------------------------------------- several values for the whole batch


@pytest.mark.parametrize("per_eval", [1, 2, None])
@pytest.mark.parametrize("name", sorted(ABLATION_FAMILY))
def test_ablations_of_several_batch_values_have_one_row_per_value(name, per_eval):
    for forward in (batch_sum, batch_sum_row):  # (K,) and (1, K): Captum flattens both to K rows
        _close(ABLATION_FAMILY[name](forward, X, perturbations_per_eval=per_eval), CLOSED_FORM)


@pytest.mark.parametrize("name", sorted(SHAPLEY_FAMILY))
def test_shapley_values_of_several_batch_values_are_laid_out_like_the_output(name):
    # An additive model: every Shapley value equals the ablation drop, whatever orders or coalitions are drawn.
    _close(SHAPLEY_FAMILY[name](batch_sum, X), CLOSED_FORM, atol=1e-4, rtol=1e-4)
    _close(SHAPLEY_FAMILY[name](batch_sum_row, X), CLOSED_FORM[None], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted({**ABLATION_FAMILY, **SHAPLEY_FAMILY}))
def test_each_batch_value_is_explained_as_on_its_own(name):
    method = {**ABLATION_FAMILY, **SHAPLEY_FAMILY}[name]
    forward = lambda x: torch.stack([torch.tanh(x).sum(), (x**2).mean()])  # noqa: E731
    torch.manual_seed(0)
    together = method(forward, X)
    for k in range(2):
        torch.manual_seed(0)  # the same orders / coalitions: one draw serves every value
        _close(together[k : k + 1], method(lambda x, k=k: forward(x)[k], X), atol=1e-5, rtol=1e-5)


def test_surrogate_coefficients_of_batch_values():
    for explainer in (KernelShap(batch_sum), Lime(batch_sum, LinearRegression())):
        coefs = explainer.attribute(X, n_samples=30, return_input_shape=False)
        _close(coefs, CLOSED_FORM, atol=1e-4, rtol=1e-4)  # (K, F)
    mask = torch.tensor([[0, 0, 1]])
    grouped = KernelShap(batch_sum_row).attribute(X, feature_mask=mask, n_samples=30, return_input_shape=False)
    _close(grouped, torch.stack([CLOSED_FORM[:, :2].sum(1), CLOSED_FORM[:, 2]], dim=1)[None], atol=1e-4, rtol=1e-4)


def test_feature_permutation_of_several_batch_values():
    y = torch.tensor([0.5, -1.0, 2.0])
    forward = lambda x: torch.stack([((x @ A[:, 0] - y) ** 2).mean(), (x @ A[:, 1]).sum()])  # noqa: E731
    torch.manual_seed(0)
    together = FeaturePermutation(forward).attribute(X)
    assert together.shape == (2, 3)
    _close(together[1], torch.zeros(3), atol=1e-5, rtol=0)  # a sum over the batch does not see a shuffle
    torch.manual_seed(0)
    _close(together[:1], FeaturePermutation(lambda x: forward(x)[0]).attribute(X))


def test_layer_ablation_of_several_batch_values():
    layer = nn.Linear(3, 4)
    B = torch.tensor([[1.0, 0.0], [2.0, -1.0], [0.0, 3.0], [-1.0, 1.0]])

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return (self.layer(x) @ B).sum(0)  # (K,) for the batch

    model = Model()
    with torch.no_grad():
        units = layer(X).sum(0)  # ablating unit u to 0 takes units[u] * B[u, k] from output k
    ours = LayerFeatureAblation(model, model.layer).attribute(X)
    _close(ours, (units[:, None] * B).t())
    _close(ours, _captum().LayerFeatureAblation(model, model.layer).attribute(X))


def test_batch_values_match_captum():
    captum = _captum()
    for forward in (batch_sum, batch_sum_row, lambda x: x[0].unsqueeze(0)):
        _close(FeatureAblation(forward).attribute(X), captum.FeatureAblation(forward).attribute(X))
        windows = {"sliding_window_shapes": (2,)}
        _close(Occlusion(forward).attribute(X, **windows), captum.Occlusion(forward).attribute(X, **windows))
        _close(ShapleyValues(forward).attribute(X), captum.ShapleyValues(forward).attribute(X), atol=1e-4, rtol=1e-5)


# --------------------------------------------------------------------------- several values per example


def test_surrogates_fit_one_model_per_output_element():
    model = nn.Linear(3, 2)
    for name in ("kernel_shap", "lime"):
        torch.manual_seed(0)
        together = SHAPLEY_FAMILY[name](model, X)
        assert together.shape == (3, 2, 3)  # (n, K, features), as ShapleyValues lays this mode out
        for k in range(2):
            torch.manual_seed(0)  # the same coalitions per example, so each output's fit is the same
            _close(together[:, k], SHAPLEY_FAMILY[name](model, X, target=k))
    with torch.no_grad():
        contributions = X[:, None, :] * model.weight[None]  # linear: KernelShap is exact, (n, K, D)
    _close(SHAPLEY_FAMILY["kernel_shap"](model, X), contributions, atol=1e-4, rtol=1e-4)


def test_one_example_with_several_values_is_told_apart_from_a_batch_value():
    calls = []

    def per_example(x):
        calls.append(x.shape[0])
        return x @ A  # (n, K)

    ablated = FeatureAblation(per_example).attribute(X[:1], perturbations_per_eval=3)
    _close(ablated, (X[:1].t() * A).t())  # K rows for the one example
    assert max(calls) == 3  # two copies told it is per example; then the copies went through one forward
    calls.clear()
    pooled = FeatureAblation(lambda x: per_example(x).sum(0, keepdim=True)).attribute(X[:1], perturbations_per_eval=3)
    _close(pooled, ablated)
    assert max(calls) == 2 and calls.count(1) == 4  # the check, then one forward per ablated copy


# --------------------------------------------------------------------------- inputs of different batch sizes


class SparseModel(nn.Module):
    """A dense batch ``(n, 3)`` and a sparse index list of any length; one value for the whole batch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.tensor([3.0, 1.0, 2.0])

    def forward(self, dense, sparse):
        return (dense @ self.weight + (sparse[0] if sparse.numel() else 0)).sum()


DENSE = torch.tensor([[1.0, -2.0, 3.0], [2.0, -1.0, 3.0]])
SPARSE = torch.tensor([1, 7, 2, 4, 5, 3, 6])
SPARSE_EXPECTED = (torch.tensor([[9.0, -3.0, 12.0]]), torch.tensor([2.0]))  # ablating the list: n * sparse[0]


@pytest.mark.parametrize("name", ["feature_ablation", "shapley_values", "kernel_shap", "lime"])
def test_an_aggregate_forward_takes_inputs_of_different_batch_sizes(name):
    method = {**ABLATION_FAMILY, **SHAPLEY_FAMILY}[name]
    dense, sparse = method(SparseModel(), (DENSE, SPARSE))
    _close(dense, SPARSE_EXPECTED[0], atol=1e-4, rtol=1e-4)
    _close(sparse, SPARSE_EXPECTED[1], atol=1e-4, rtol=1e-4)
    dense, empty = method(SparseModel(), (DENSE, torch.tensor([])))  # an empty list: nothing to ablate
    _close(dense, SPARSE_EXPECTED[0], atol=1e-4, rtol=1e-4)
    _close(empty, torch.zeros(1), atol=1e-4, rtol=0)


def test_occlusion_and_permutation_of_inputs_of_different_batch_sizes():
    windows = {"sliding_window_shapes": ((1,), ())}
    _close(Occlusion(SparseModel()).attribute((DENSE, SPARSE), **windows)[1], SPARSE_EXPECTED[1])
    dense, sparse = FeaturePermutation(SparseModel()).attribute((DENSE, SPARSE))
    _close(dense, torch.zeros(1, 3))  # a sum over the batch does not see a shuffle of the dense rows
    assert sparse.shape == (1,) and float(sparse) in {2.0 * (1 - v) for v in SPARSE.tolist()}
    dense, empty = FeaturePermutation(SparseModel()).attribute((DENSE, torch.tensor([])))
    assert dense.shape == (1, 3) and empty.shape == (1,)


def test_inputs_of_different_batch_sizes_match_captum():
    captum = _captum()
    for sparse in (SPARSE, torch.tensor([])):
        ours = FeatureAblation(SparseModel()).attribute((DENSE, sparse))
        for a, b in zip(ours, captum.FeatureAblation(SparseModel()).attribute((DENSE, sparse))):
            _close(a, b)


# --------------------------------------------------------------------------- shapes that make no sense


def test_a_per_example_forward_refuses_inputs_of_different_batch_sizes():
    per_example = lambda dense, extra: dense @ extra  # noqa: E731  (n,) from (n, 3) and (3,)
    failing = lambda dense, extra: dense * extra  # noqa: E731  the model itself fails on (2, 3) * (5, 3)
    with pytest.raises(ValueError, match=r"inputs\[1\]: every input needs the same batch size.*whole batch") as info:
        FeatureAblation(per_example).attribute((DENSE, torch.ones(3)))
    assert isinstance(info.value, AssertionError)  # Captum's tests expect AssertionError
    with pytest.raises(ValueError, match=r"inputs\[1\]: every input needs the same batch size.*whole batch"):
        KernelShap(failing).attribute((DENSE, torch.ones(5, 3)))
    with pytest.raises(ValueError, match=r"inputs\[1\]: every input needs the same batch size"):
        IntegratedGradients(lambda a, b: a.sum(1)).attribute((DENSE, torch.ones(5, 3)))  # gradients: never


def test_batch_values_that_change_in_number_are_refused():
    drifting = lambda x: (x @ A).sum(0) if bool((x != 0).all()) else (x @ A).sum()  # noqa: E731
    with pytest.raises(ValueError, match="forward_func: returned 2 value\\(s\\) for the whole batch, then"):
        FeatureAblation(drifting).attribute(X)
    with pytest.raises(ValueError, match="forward_func: expected at least one value"):
        FeatureAblation(lambda x: x.sum(0)[:0]).attribute(X)


def test_batch_values_refuse_targets_and_per_example_masks():
    with pytest.raises(ValueError, match="forward_func: expected an output with one row per example"):
        FeatureAblation(batch_sum_row).attribute(X, target=0)
    with pytest.raises(ValueError, match="feature_mask: .* shared by the batch"):
        ShapleyValues(batch_sum).attribute(X, feature_mask=torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0]]))


def test_as_many_batch_values_as_examples_read_as_per_example_with_a_hint():
    # (n,) values for a batch of n look like one per example (Captum reads them alike); stacked copies then
    # get n values back, which says the forward pools: the error names the way out.
    forward = lambda x: torch.stack([x.sum(), x.max(), x.min()])  # noqa: E731
    with pytest.raises(ValueError, match="forward_func: .*pass perturbations_per_eval=1"):
        FeatureAblation(forward).attribute(X)
    one_per_forward = FeatureAblation(forward).attribute(X, perturbations_per_eval=1)
    _close(one_per_forward, _captum().FeatureAblation(forward).attribute(X))
