"""Sparseness and complexity: closed forms, hand-computed values, invariances, errors, parity with Quantus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attribution.metrics import complexity, sparseness

f64 = torch.float64


def _one_hot(n: int, at: int = 0) -> torch.Tensor:
    return torch.zeros(1, n, dtype=f64).index_fill_(1, torch.tensor([at]), -3.0)


@pytest.mark.parametrize("n", [2, 5, 64])
def test_closed_forms(n: int) -> None:
    constant = torch.full((1, n), 0.7, dtype=f64)
    assert sparseness(_one_hot(n, n // 2)).item() == pytest.approx((n - 1) / n, abs=1e-15)
    assert sparseness(constant).item() == pytest.approx(0.0, abs=1e-15)
    assert complexity(_one_hot(n, n // 2)).item() == 0.0
    assert complexity(constant).item() == pytest.approx(math.log(n), abs=1e-14)


def test_hand_computed_values() -> None:
    a = torch.tensor([[3.0, -1.0, 0.0, 2.0]], dtype=f64)  # |a| sorted: 0, 1, 2, 3; sum 6; n 4
    gini = ((2 * 1 - 5) * 0 + (2 * 2 - 5) * 1 + (2 * 3 - 5) * 2 + (2 * 4 - 5) * 3) / (4 * 6)  # 10 / 24
    assert sparseness(a).item() == pytest.approx(10 / 24, abs=1e-15) == pytest.approx(gini)
    p = [1 / 6, 2 / 6, 3 / 6]
    assert complexity(a).item() == pytest.approx(-sum(q * math.log(q) for q in p), abs=1e-15)


def test_batched_shapes_dtypes_and_tuples() -> None:
    torch.manual_seed(0)
    a = torch.randn(5, 3, 4, 4)
    for metric in (sparseness, complexity):
        batch = metric(a)
        assert batch.shape == (5,) and batch.dtype == torch.float32
        assert torch.allclose(batch, torch.cat([metric(a[i : i + 1]) for i in range(5)]))
        assert metric(a.double()).dtype == f64
        # a tuple of inputs is one vector per example
        split = metric((a[:, :1], a[:, 1:].reshape(5, -1)))
        assert torch.allclose(split, batch)


def test_scale_invariance_and_signs() -> None:
    torch.manual_seed(1)
    a = torch.randn(4, 10, dtype=f64)
    for metric in (sparseness, complexity):
        assert torch.allclose(metric(a * 123.4), metric(a))
        assert torch.allclose(metric(-0.01 * a), metric(a))
        assert torch.allclose(metric(a.abs()), metric(a))


def test_more_concentrated_scores_as_such() -> None:
    spread = torch.tensor([[1.0, 1.0, 1.0, 0.9]])
    peaked = torch.tensor([[0.1, 0.1, 0.1, 5.0]])
    assert sparseness(peaked) > sparseness(spread)
    assert complexity(peaked) < complexity(spread)


def test_all_zero_map_is_nan_and_others_unaffected() -> None:
    a = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for metric in (sparseness, complexity):
        scores = metric(a)
        assert scores[0].isnan() and not scores[1].isnan()


def test_inputs_not_changed_and_no_grad_needed() -> None:
    a = torch.randn(2, 6, requires_grad=True)
    before = a.detach().clone()
    for metric in (sparseness, complexity):
        assert not metric(a).requires_grad
    assert torch.equal(a.detach(), before)


@pytest.mark.parametrize("metric", [sparseness, complexity])
@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([1.0, 2.0], TypeError, r"attributions\[0\]: expected a real-valued tensor"),
        ("map", TypeError, "attributions: expected a tensor"),
        (torch.tensor(1.0), ValueError, "attributions: expected a batch"),
        (torch.zeros(0, 3), ValueError, "attributions: expected a batch"),
        (torch.zeros(2, 0), ValueError, "attributions: expected non-empty"),
        (torch.zeros(2, 3, dtype=torch.complex64), TypeError, "attributions: expected a real-valued"),
        ((torch.zeros(2, 3), torch.zeros(3, 3)), ValueError, "same batch size"),
        ((torch.zeros(2, 3), "x"), TypeError, r"attributions\[1\]"),
        ((), TypeError, "non-empty tuple"),
    ],
)
def test_bad_arguments(metric, value, error, match) -> None:
    with pytest.raises(error, match=match):
        metric(value)


def test_agrees_with_quantus() -> None:
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 8, 8)).astype(np.float32)
    a = rng.normal(size=(6, 1, 8, 8))
    a[0] = 0.0
    a[0, 0, 3, 3] = 2.0  # one feature
    a[1] = 0.5  # constant
    y = np.zeros(6, dtype=int)
    options = {"normalise": False, "abs": True, "disable_warnings": True, "display_progressbar": False}
    expected_sparseness = np.asarray(
        quantus.Sparseness(**options)(model=None, x_batch=x, y_batch=y, a_batch=a.copy(), device="cpu")
    )
    expected_complexity = np.asarray(
        quantus.Complexity(**options)(model=None, x_batch=x, y_batch=y, a_batch=a.copy(), device="cpu")
    )
    ours = torch.from_numpy(a)
    # Quantus adds 1e-7 to every |a_i| (Sparseness) and 1e-12 inside the log (Complexity)
    np.testing.assert_allclose(sparseness(ours).numpy(), expected_sparseness, atol=1e-5)
    np.testing.assert_allclose(complexity(ours).numpy(), expected_complexity, atol=1e-9)
