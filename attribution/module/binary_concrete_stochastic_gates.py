"""Stochastic gates with the stretched binary concrete distribution (Louizos et al., 2018, "Learning Sparse
Neural Networks through L0 Regularization", https://arxiv.org/abs/1712.01312); Captum's
``BinaryConcreteStochasticGates``.

A gate draws ``u ~ U(eps, 1 - eps)``, takes ``s = sigmoid((logit(u) + log_alpha) / temperature)``, stretches
it linearly onto ``(lower_bound, upper_bound)``, a range a little wider than [0, 1], and folds the overhang
back with the hard sigmoid, so that a gate is exactly 0 or 1 with non-zero probability. The gate is active
(non-zero) when the stretched ``s`` exceeds 0, that is with probability
``sigmoid(log_alpha - temperature * log(-lower_bound / upper_bound))``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.checks import ArgumentError
from attribution.module.stochastic_gates_base import StochasticGatesBase, check_pretrained, check_real


def uniform_noise(batch_size: int, n_gates: int, low: float, high: float, device: torch.device) -> Tensor:
    """``U(low, high)`` draws of shape ``(batch_size, n_gates)`` in the default dtype (Captum's draws, bit for
    bit on a fixed seed); wrapped for ``torch.fx``, to which ``batch_size`` is a traced value."""
    return torch.empty(batch_size, n_gates, device=device).uniform_(low, high)


torch.fx.wrap("uniform_noise")


class BinaryConcreteStochasticGates(StochasticGatesBase):
    """Stochastic gates with a stretched binary concrete distribution (Captum's name and signature).

    Each gate has one learned parameter, ``log_alpha_param``, initialised from ``N(0, 0.01^2)`` (gates half
    open). Training draws a gate per example; eval mode uses the gates' means,
    ``sigmoid(log_alpha) * (upper_bound - lower_bound) + lower_bound`` folded into [0, 1].

    Args:
        n_gates: the number of gates.
        mask: optional integer tensor broadcastable to the input, mapping each input element to its gate
            (0 .. ``n_gates`` - 1); without it, each element of an example has its own gate.
        reg_weight: the factor of the L0 regulariser.
        temperature: the concrete distribution's temperature, in (0, 1); towards 0 it becomes a Bernoulli.
        lower_bound: where the distribution is stretched to below 0 (negative).
        upper_bound: where it is stretched to above 1 (above 1).
        eps: keeps the uniform draws off 0 and 1, in [0, 0.5).
        reg_reduction: ``"sum"``, ``"mean"`` or ``"none"`` of the active probabilities.

    Raises:
        ValueError: a bound, temperature or ``eps`` out of its range, or a bad ``n_gates``, mask or
            ``reg_reduction`` (see :class:`StochasticGatesBase`).
        TypeError: a number given as something else, or a mask that is not an integer tensor.

    Example:
        >>> import torch
        >>> from attribution.module import BinaryConcreteStochasticGates
        >>> gates = BinaryConcreteStochasticGates(5, reg_weight=0.01)
        >>> model = torch.nn.Linear(5, 1)
        >>> gated, reg = gates(torch.randn(3, 5))  # one draw of the gates per example
        >>> loss = model(gated).pow(2).mean() + reg  # the model's loss plus the L0 regulariser
        >>> gates.get_gate_active_probs().shape
        torch.Size([5])
    """

    def __init__(
        self,
        n_gates: int,
        mask: Tensor | None = None,
        reg_weight: float = 1.0,
        temperature: float = 2 / 3,
        lower_bound: float = -0.1,
        upper_bound: float = 1.1,
        eps: float = 1e-8,
        reg_reduction: str = "sum",
    ) -> None:
        super().__init__(n_gates, mask=mask, reg_weight=reg_weight, reg_reduction=reg_reduction)
        _check_concrete(temperature, lower_bound, upper_bound, eps)
        # the parameter's name is Captum's: users (and state dicts) reach it by name
        self.log_alpha_param = nn.Parameter(torch.empty(self.n_gates).normal_(0.0, 0.01))
        self.temperature = temperature
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound
        self.eps = eps
        # P(gate > 0) = sigmoid(log_alpha - offset), the offset fixed by the temperature and the stretch
        self.active_prob_offset: float = temperature * math.log(-lower_bound / upper_bound)

    def _stretch(self, s: Tensor) -> Tensor:
        return s * (self.upper_bound - self.lower_bound) + self.lower_bound

    def _sample_gate_values(self, batch_size: int) -> Tensor:
        if self.training:
            u = uniform_noise(batch_size, self.n_gates, self.eps, 1 - self.eps, self.log_alpha_param.device)
            s = torch.sigmoid((torch.logit(u) + self.log_alpha_param) / self.temperature)
        else:
            s = torch.sigmoid(self.log_alpha_param).expand(batch_size, self.n_gates)
        return self._stretch(s)

    def _get_gate_values(self) -> Tensor:
        return self._stretch(torch.sigmoid(self.log_alpha_param))

    def _get_gate_active_probs(self) -> Tensor:
        return torch.sigmoid(self.log_alpha_param - self.active_prob_offset)

    @classmethod
    def _from_pretrained(cls, log_alpha_param: Tensor, *args: Any, **kwargs: Any) -> BinaryConcreteStochasticGates:
        """Gates with a learned ``log_alpha_param`` (1-D, one value per gate); the other arguments are the
        constructor's after ``n_gates``. Like Captum, the new gates first draw their initial parameter.

        Raises:
            ValueError: ``log_alpha_param`` not 1-dimensional, or a bad constructor argument.
            TypeError: ``log_alpha_param`` not a float tensor.
        """
        check_pretrained(log_alpha_param, "log_alpha_param")
        gates = cls(log_alpha_param.numel(), *args, **kwargs)
        gates.load_state_dict({"log_alpha_param": log_alpha_param}, strict=False)
        return gates


def _check_concrete(temperature: Any, lower_bound: Any, upper_bound: Any, eps: Any) -> None:
    """Raise unless the distribution's settings are numbers in their ranges."""
    for value, name in (
        (temperature, "temperature"),
        (lower_bound, "lower_bound"),
        (upper_bound, "upper_bound"),
        (eps, "eps"),
    ):
        check_real(value, name)
    if not 0 < temperature < 1:
        raise ArgumentError(f"temperature: expected a value between 0 and 1 (exclusive), got {temperature!r}")
    if not lower_bound < 0:
        raise ArgumentError(f"lower_bound: expected a negative stretch lower bound, got {lower_bound!r}")
    if not upper_bound > 1:
        raise ArgumentError(f"upper_bound: expected a stretch upper bound above 1, got {upper_bound!r}")
    if not 0 <= eps < 0.5:
        raise ArgumentError(f"eps: expected a value in [0, 0.5) to keep the uniform draws off 0 and 1, got {eps!r}")
