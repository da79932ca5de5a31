"""Our stochastic gates against Captum's ``captum.module`` on fixed seeds: the same random draws, so the same
gated inputs, regularisers, gate values, active probabilities and gradients, bit for bit on the CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attribution import module as ours

captum_module = pytest.importorskip("captum.module")

KINDS = ["BinaryConcreteStochasticGates", "GaussianStochasticGates"]
MASK = torch.tensor([[0, 1], [1, 1], [0, 2]])  # 3 gates over examples of shape (3, 2)


def _pair(kind: str, n_gates: int, seed: int = 7, **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    """Captum's gates and ours, each built right after seeding, so their initial parameters are drawn alike."""
    torch.manual_seed(seed)
    theirs = getattr(captum_module, kind)(n_gates, **kwargs)
    torch.manual_seed(seed)
    mine = getattr(ours, kind)(n_gates, **kwargs)
    return theirs, mine


def _run(gates: nn.Module, x: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Two forward passes (the second draws fresh gates) after seeding; the gradient of a loss on them."""
    torch.manual_seed(seed)
    gated_1, reg = gates(x)
    gated_2, _ = gates(x)
    loss = gated_1.sum() + gated_2.square().sum() + reg.sum()
    (grad,) = torch.autograd.grad(loss, next(gates.parameters()))
    return torch.stack([gated_1, gated_2]), reg, grad


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("reg_reduction", ["sum", "mean"])
def test_forward_matches_captum_bitwise(kind: str, masked: bool, training: bool, reg_reduction: str) -> None:
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(1))
    mask = MASK if masked else None
    theirs, mine = _pair(kind, 3 if masked else 6, mask=mask, reg_weight=0.3, reg_reduction=reg_reduction)
    theirs.train(training)
    mine.train(training)
    for a, b in zip(_run(theirs, x, seed=11), _run(mine, x, seed=11), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(theirs.get_gate_values(), mine.get_gate_values())
    assert torch.equal(theirs.get_gate_values(clamp=False), mine.get_gate_values(clamp=False))
    assert torch.equal(theirs.get_gate_active_probs(), mine.get_gate_active_probs())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_unreduced_regulariser_matches_captum(kind: str, training: bool) -> None:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    theirs, mine = _pair(kind, 4, reg_weight=2.0, reg_reduction="none")
    theirs.train(training)
    mine.train(training)
    torch.manual_seed(3)
    gated_theirs, reg_theirs = theirs(x)
    torch.manual_seed(3)
    gated_mine, reg_mine = mine(x)
    assert torch.equal(gated_theirs, gated_mine)
    assert reg_mine.shape == (4,)
    assert torch.equal(reg_theirs, reg_mine)


def test_unreduced_binary_concrete_regulariser_backpropagates_where_captums_does_not() -> None:
    """Captum scales the sigmoid's output in place, which autograd needs for the backward pass; ours does not."""
    theirs, mine = _pair("BinaryConcreteStochasticGates", 3, reg_reduction="none")
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="inplace operation"):
        theirs(x)[1].sum().backward()
    mine(x)[1].sum().backward()
    expected = torch.sigmoid(mine.log_alpha_param.detach() - mine.active_prob_offset)
    assert torch.allclose(mine.log_alpha_param.grad, expected * (1 - expected))


@pytest.mark.parametrize(
    ("kind", "param", "kwargs"),
    [
        ("BinaryConcreteStochasticGates", [3.0, -2.0, 0.5, 0.0], {"temperature": 0.5, "lower_bound": -0.5}),
        ("GaussianStochasticGates", [0.1, 0.9, -0.3, 1.4], {"std": 0.2, "reg_reduction": "mean"}),
    ],
)
def test_from_pretrained_matches_captum(kind: str, param: list[float], kwargs: dict[str, Any]) -> None:
    pretrained = torch.tensor(param)
    mask = torch.tensor([0, 1, 1, 2, 3, 3])
    torch.manual_seed(0)
    theirs = getattr(captum_module, kind)._from_pretrained(pretrained, mask=mask, **kwargs)
    next_theirs = torch.rand(3)
    torch.manual_seed(0)
    mine = getattr(ours, kind)._from_pretrained(pretrained, mask=mask, **kwargs)
    assert torch.equal(torch.rand(3), next_theirs)  # the same draws from the global generator as Captum
    assert torch.equal(next(mine.parameters()).detach(), pretrained)
    x = torch.randn(3, 6)
    for training in (True, False):
        theirs.train(training)
        mine.train(training)
        torch.manual_seed(5)
        expected = theirs(x)
        torch.manual_seed(5)
        actual = mine(x)
        assert torch.equal(expected[0], actual[0]) and torch.equal(expected[1], actual[1])
    assert theirs.state_dict().keys() == mine.state_dict().keys()
