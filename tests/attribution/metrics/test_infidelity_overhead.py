"""How infidelity splits its forwards: sized by the model's widest tensor on CPU, near-equal, hooks gone after."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import attribution.metrics.quality as quality
from attribution.metrics import default_infidelity_perturb_func, infidelity


class _Rows(nn.Module):
    """A 1-to-16-channel CNN (its widest tensor is 16 times its input) that records each forward's batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 4))
        self.rows: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.rows.append(x.shape[0])
        return self.net(x)


def _score(model: nn.Module, **kwargs) -> Tensor:
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    attrs = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    return infidelity(model, default_infidelity_perturb_func, x, attrs, target=[0, 1, 3], **kwargs)


def test_cpu_forwards_keep_the_widest_tensor_under_the_budget_in_near_equal_chunks(monkeypatch):
    model = _Rows()
    widest_per_copy = 3 * 16 * 8 * 8 * 4  # the conv's output for one copy of the batch, in bytes
    monkeypatch.setattr(quality, "CPU_LARGEST_TENSOR_BYTES", 3 * widest_per_copy)
    chunked = _score(model, n_perturb_samples=10)
    assert model.rows[0] == 3  # f(x) alone, measured
    assert sorted(model.rows[1:]) == [6, 6, 9, 9]  # 10 copies in 4 forwards of 2 or 3, not 3 + 3 + 3 + 1
    model.rows.clear()
    again = _score(model, n_perturb_samples=10)
    assert sorted(model.rows) == [6, 9, 9, 9]  # the width is known now: f(x) goes in front of the copies
    model.rows.clear()
    whole = _score(model, n_perturb_samples=10, max_examples_per_batch=33)
    assert model.rows == [33]  # the caller's size: f(x) goes in front of the copies
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(again, whole, rtol=1e-4, atol=1e-9)


def test_a_forward_that_is_no_module_is_sized_by_its_inputs():
    model = _Rows()
    calls: list[int] = []
    counted = lambda x: calls.append(x.shape[0]) or model(x)  # noqa: E731
    by_inputs = _score(counted, n_perturb_samples=5)
    assert calls == [18]  # small inputs: f(x) and every copy in one forward
    torch.testing.assert_close(by_inputs, _score(model, n_perturb_samples=5), rtol=1e-4, atol=1e-9)


def test_measuring_hooks_are_removed_also_after_an_error():
    model = _Rows()
    _score(model, n_perturb_samples=4)
    assert all(not m._forward_hooks for m in model.modules())
    broken = _Rows()
    broken.net[3] = nn.Linear(5, 4)  # the wrong width: the measured forward fails
    with pytest.raises(RuntimeError):
        _score(broken, n_perturb_samples=4)
    assert all(not m._forward_hooks for m in broken.modules())
