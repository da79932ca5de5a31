"""Stochastic gates with a Gaussian distribution (Yamada et al., 2020, "Feature Selection using Stochastic
Gates", https://arxiv.org/abs/1810.04247); Captum's ``GaussianStochasticGates``.

A gate draws ``mu + N(0, std^2)`` and folds it into [0, 1] with the hard sigmoid. It is active (non-zero)
when the draw exceeds 0, with probability ``Phi(mu / std)``, Phi the standard normal distribution function.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.checks import ArgumentError
from attribution.module.stochastic_gates_base import StochasticGatesBase, check_pretrained, check_real


def normal_noise(batch_size: int, n_gates: int, std: float, device: torch.device) -> Tensor:
    """``N(0, std^2)`` draws of shape ``(batch_size, n_gates)`` in the default dtype (Captum's draws, bit for
    bit on a fixed seed); wrapped for ``torch.fx``, to which ``batch_size`` is a traced value."""
    return torch.empty(batch_size, n_gates, device=device).normal_(mean=0.0, std=std)


torch.fx.wrap("normal_noise")


class GaussianStochasticGates(StochasticGatesBase):
    """Stochastic gates with a Gaussian distribution of fixed ``std`` (Captum's name and signature).

    Each gate has one learned parameter, its mean ``mu``, initialised from ``N(0.5, 0.01^2)`` (gates half
    open). Training draws a gate per example; eval mode uses ``mu`` folded into [0, 1].

    Args:
        n_gates: the number of gates.
        mask: optional integer tensor broadcastable to the input, mapping each input element to its gate
            (0 .. ``n_gates`` - 1); without it, each element of an example has its own gate.
        reg_weight: the factor of the L0 regulariser.
        std: the standard deviation of the gates' noise, positive and fixed.
        reg_reduction: ``"sum"``, ``"mean"`` or ``"none"`` of the active probabilities.

    Raises:
        ValueError: ``std`` not positive, or a bad ``n_gates``, mask or ``reg_reduction``
            (see :class:`StochasticGatesBase`).
        TypeError: a number given as something else, or a mask that is not an integer tensor.

    Example:
        >>> import torch
        >>> from attribution.module import GaussianStochasticGates
        >>> gates = GaussianStochasticGates(5, reg_weight=0.01)
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
        std: float = 0.5,
        reg_reduction: str = "sum",
    ) -> None:
        super().__init__(n_gates, mask=mask, reg_weight=reg_weight, reg_reduction=reg_reduction)
        check_real(std, "std")
        if not std > 0:
            raise ArgumentError(f"std: expected a positive standard deviation, got {std!r}")
        self.mu = nn.Parameter(torch.empty(self.n_gates).normal_(0.5, 0.01))
        self.std = std

    def _sample_gate_values(self, batch_size: int) -> Tensor:
        if self.training:
            return self.mu + normal_noise(batch_size, self.n_gates, self.std, self.mu.device)
        return self.mu.expand(batch_size, self.n_gates)

    def _get_gate_values(self) -> Tensor:
        return self.mu

    def _get_gate_active_probs(self) -> Tensor:
        # Phi(mu / std), written with erf as Captum does so that the numbers agree to the bit
        return 0.5 * (1 + torch.erf(self.mu / self.std / math.sqrt(2)))

    @classmethod
    def _from_pretrained(cls, mu: Tensor, *args: Any, **kwargs: Any) -> GaussianStochasticGates:
        """Gates with a learned ``mu`` (1-D, one mean per gate); the other arguments are the constructor's
        after ``n_gates``. Like Captum, the new gates first draw their initial parameter.

        Raises:
            ValueError: ``mu`` not 1-dimensional, or a bad constructor argument.
            TypeError: ``mu`` not a float tensor.
        """
        check_pretrained(mu, "mu")
        gates = cls(mu.numel(), *args, **kwargs)
        gates.load_state_dict({"mu": mu}, strict=False)
        return gates
