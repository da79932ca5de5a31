"""The gates against their definitions: active probabilities in closed form (and by Monte Carlo), eval-mode
gates as the rectified means, the regulariser's reductions, masks sharing a gate, the RNG use, state dicts
and ``torch.fx``."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from torch import Tensor

from attribution.module import BinaryConcreteStochasticGates, GaussianStochasticGates, StochasticGatesBase

KINDS = [BinaryConcreteStochasticGates, GaussianStochasticGates]


def _binary(log_alpha: list[float], **kwargs: object) -> BinaryConcreteStochasticGates:
    return BinaryConcreteStochasticGates._from_pretrained(torch.tensor(log_alpha), **kwargs)


def _gaussian(mu: list[float], **kwargs: object) -> GaussianStochasticGates:
    return GaussianStochasticGates._from_pretrained(torch.tensor(mu), **kwargs)


def test_gaussian_active_probability_is_phi_of_mu_over_std() -> None:
    mu, std = [-0.4, 0.0, 0.25, 1.5], 0.3
    expected = torch.tensor([NormalDist().cdf(m / std) for m in mu])
    assert torch.allclose(_gaussian(mu, std=std).get_gate_active_probs(), expected, atol=1e-6)


def test_binary_concrete_active_probability_closed_form() -> None:
    log_alpha, temperature, low, high = [-2.0, 0.0, 0.7, 3.0], 0.4, -0.2, 1.3
    gates = _binary(log_alpha, temperature=temperature, lower_bound=low, upper_bound=high)
    # stretched s > 0  <=>  s > -low / (high - low)  <=>  logit(u) > temperature * logit(-low / (high - low)) - la
    threshold = temperature * math.log(-low / high)
    expected = torch.tensor([1 / (1 + math.exp(-(a - threshold))) for a in log_alpha])
    assert torch.allclose(gates.get_gate_active_probs(), expected, atol=1e-6)


@pytest.mark.parametrize(
    "gates",
    [_binary([-1.0, 0.0, 0.8, 2.5], temperature=0.5), _gaussian([-0.2, 0.1, 0.5, 0.9], std=0.4)],
    ids=["binary_concrete", "gaussian"],
)
def test_active_probabilities_match_the_fraction_of_open_sampled_gates(gates: StochasticGatesBase) -> None:
    torch.manual_seed(0)
    gated, _ = gates(torch.ones(40_000, 4))  # a gated 1 is the gate itself
    assert torch.allclose((gated > 0).float().mean(0), gates.get_gate_active_probs(), atol=0.01)
    assert gated.min() >= 0 and gated.max() <= 1  # hard sigmoid
    assert ((gated == 0).any(0) | (gates.get_gate_active_probs() > 0.999)).all()  # exact zeros occur


def test_eval_gates_are_the_clamped_means() -> None:
    gaussian = _gaussian([-0.3, 0.2, 0.7, 1.6]).eval()
    binary = _binary([-4.0, 0.0, 1.0, 5.0]).eval()
    x = torch.randn(3, 4)
    assert torch.equal(gaussian(x)[0], x * torch.tensor([0.0, 0.2, 0.7, 1.0]))
    means = torch.sigmoid(torch.tensor([-4.0, 0.0, 1.0, 5.0])) * 1.2 - 0.1
    assert torch.allclose(binary.get_gate_values(clamp=False), means)
    assert torch.allclose(binary(x)[0], x * means.clamp(0, 1))
    assert torch.allclose(binary.get_gate_values(), means.clamp(0, 1))
    assert binary.get_gate_values()[0] == 0 and binary.get_gate_values()[3] == 1


def test_fresh_gaussian_gates_start_half_open_in_eval_mode() -> None:
    torch.manual_seed(0)
    gates = GaussianStochasticGates(50).eval()
    values = gates.get_gate_values()
    assert torch.allclose(values, torch.full((50,), 0.5), atol=0.05)
    assert torch.equal(gates(torch.ones(2, 50))[0], values.expand(2, 50))


@pytest.mark.parametrize("kind", KINDS)
def test_regulariser_reductions(kind: type[StochasticGatesBase]) -> None:
    x = torch.randn(2, 5)
    probs = {}
    for reduction in ("none", "mean", "sum"):
        torch.manual_seed(0)
        gates = kind(5, reg_weight=0.25, reg_reduction=reduction)  # type: ignore[call-arg]
        probs[reduction] = gates(x)[1]
        active = gates.get_gate_active_probs()
    assert torch.allclose(probs["none"], 0.25 * active)
    assert torch.allclose(probs["mean"], 0.25 * active.mean())
    assert torch.allclose(probs["sum"], 0.25 * active.sum())


@pytest.mark.parametrize("kind", KINDS)
def test_a_mask_shares_one_gate_per_group_within_each_example(kind: type[StochasticGatesBase]) -> None:
    mask = torch.tensor([[0, 1, 1], [2, 0, 1]])  # broadcast over the batch of (4, 2, 3)
    gates = kind(3, mask=mask)  # type: ignore[call-arg]
    torch.manual_seed(1)
    factors = gates(torch.ones(4, 2, 3))[0].reshape(4, 6)
    flat = mask.reshape(-1)
    for gate in range(3):
        group = factors[:, flat == gate]
        assert torch.equal(group, group[:, :1].expand_as(group))
    assert not torch.equal(factors[0], factors[1])  # but each example draws its own gates


@pytest.mark.parametrize("kind", KINDS)
def test_eval_mode_draws_nothing_and_training_draws_once_per_call(kind: type[StochasticGatesBase]) -> None:
    gates = kind(4).eval()  # type: ignore[call-arg]
    state = torch.get_rng_state()
    gates(torch.randn(3, 4, generator=torch.Generator()))
    assert torch.equal(torch.get_rng_state(), state)
    gates.train()
    torch.manual_seed(0)
    first, _ = gates(torch.ones(3, 4))
    torch.manual_seed(0)
    again, _ = gates(torch.ones(3, 4))
    assert torch.equal(first, again)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_keeps_parameters_and_mask(kind: type[StochasticGatesBase]) -> None:
    mask = torch.tensor([0, 1, 1, 2], dtype=torch.int32)
    source = kind(3, mask=mask)  # type: ignore[call-arg]
    target = kind(3, mask=torch.tensor([2, 1, 0, 0]))  # type: ignore[call-arg]
    target.load_state_dict(source.state_dict())
    assert target.mask is not None and torch.equal(target.mask, mask.long())
    assert all(torch.equal(a, b) for a, b in zip(source.parameters(), target.parameters(), strict=True))
    assert "mask" not in kind(3).state_dict()  # type: ignore[call-arg]
    mask.fill_(0)  # the gates keep their own copy
    assert source.mask is not None and int(source.mask.max()) == 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
def test_fx_traced_gates_give_the_same_draws(kind: type[StochasticGatesBase], masked: bool) -> None:
    gates = kind(3, mask=torch.tensor([0, 1, 2, 2]) if masked else None)  # type: ignore[call-arg]
    traced = torch.fx.symbolic_trace(gates)
    x = torch.randn(5, 4 if masked else 3)
    outputs: list[tuple[Tensor, Tensor]] = []
    for module in (gates, traced):
        torch.manual_seed(3)
        outputs.append(module(x))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    with pytest.raises(ValueError, match="input_tensor"):  # the traced module still checks its input
        traced(torch.randn(4))
