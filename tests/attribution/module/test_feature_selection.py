"""Learned feature selection works: trained with its regulariser on a linear target that uses 2 of 6
features, each kind of gate closes the 4 irrelevant gates and keeps the 2 relevant ones open; without the
regulariser the irrelevant gates stay mostly open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from attribution.module import BinaryConcreteStochasticGates, GaussianStochasticGates, StochasticGatesBase

RELEVANT = [1, 4]
IRRELEVANT = [0, 2, 3, 5]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tensors of 256 x 6 gain nothing from intra-op threads, which cost seconds on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(kind: type[StochasticGatesBase], reg_weight: float, steps: int = 200) -> Tensor:
    """Active probabilities of the gates in front of a linear model fitted to y = 3 x1 - 2 x4."""
    x = torch.randn(256, 6, generator=torch.Generator().manual_seed(0))
    y = 3 * x[:, 1] - 2 * x[:, 4]
    torch.manual_seed(0)  # the gates' initial parameters, the linear layer and every draw of the gates
    gates = kind(6, reg_weight=reg_weight)  # type: ignore[call-arg]
    linear = torch.nn.Linear(6, 1)
    optimizer = torch.optim.Adam([*gates.parameters(), *linear.parameters()], lr=0.05)
    for _ in range(steps):
        gated, reg = gates(x)
        loss = (linear(gated).squeeze(1) - y).square().mean() + reg
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return gates.get_gate_active_probs()


@pytest.mark.parametrize("kind", [BinaryConcreteStochasticGates, GaussianStochasticGates])
def test_regularised_gates_select_the_relevant_features(kind: type[StochasticGatesBase]) -> None:
    probs = _train(kind, reg_weight=0.1)
    assert (probs[RELEVANT] > 0.95).all(), probs
    assert (probs[IRRELEVANT] < 0.1).all(), probs
    unregularised = _train(kind, reg_weight=0.0)
    assert (unregularised[RELEVANT] > 0.95).all(), unregularised
    assert unregularised[IRRELEVANT].mean() > 0.5, unregularised
