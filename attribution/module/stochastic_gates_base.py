"""What every stochastic gate shares (Captum's ``StochasticGatesBase``): the checks of its arguments, how a
batch is gated (sample, rectify, spread over the input by the mask, multiply) and the L0 regulariser.

A stochastic gate is a smoothed Bernoulli variable: a continuous distribution whose samples are folded into
[0, 1] by the hard sigmoid ``min(1, max(0, z))``. Its probability of being non-zero is a differentiable
function of the distribution's parameters, so the expected L0 norm of the gates (how many inputs are let
through) can be minimised with the model's loss by stochastic gradients. A subclass names the distribution:
how to sample raw gate values, their means, and the probability that a gate is active.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice, check_int, describe

REG_REDUCTIONS = ("none", "mean", "sum")
"""The reductions of the regulariser: the active probabilities as they are, their mean, their sum."""


def check_gated_input(input_tensor: Tensor, n_gates: int, has_mask: bool) -> None:
    """Raise unless ``input_tensor`` is a batch that the gates can cover.

    Wrapped for ``torch.fx`` below: a traced module records this call and runs the check on real tensors.

    Raises:
        ArgumentTypeError: not a tensor.
        ArgumentError: no batch dimension, or (without a mask) not one gate per element of an example.
    """
    if not isinstance(input_tensor, Tensor):
        raise ArgumentTypeError(f"input_tensor: expected a tensor, got {describe(input_tensor)}")
    if input_tensor.dim() < 2:
        raise ArgumentError(
            "input_tensor: expected a batch, with more than 1 dimension and the batch first; "
            f"got shape {tuple(input_tensor.shape)}"
        )
    n_elements = input_tensor[0].numel()
    if not has_mask and n_elements != n_gates:
        raise ArgumentError(
            f"input_tensor: without a mask each example needs one element per gate ({n_gates}); got "
            f"{n_elements} elements per example (shape {tuple(input_tensor.shape)}); pass a mask to share gates"
        )


torch.fx.wrap("check_gated_input")


def _expand_mask(mask: Tensor, input_tensor: Tensor) -> Tensor:
    """``mask`` broadcast to the input's shape (``expand_as``, which ``torch.fx`` traces), or a named error."""
    try:
        return mask.expand_as(input_tensor)
    except RuntimeError as error:
        raise ArgumentError(
            f"mask: shape {tuple(mask.shape)} does not broadcast to the input's shape {tuple(input_tensor.shape)}"
        ) from error


def _check_mask(mask: Any, n_gates: int) -> None:
    """Raise unless ``mask`` is None or an integer tensor of gate indices 0 .. n_gates - 1 whose largest is used."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype == torch.bool or mask.is_floating_point() or mask.is_complex():
        raise ArgumentTypeError(f"mask: expected None or an integer tensor of gate indices, got {describe(mask)}")
    if mask.numel() == 0:
        raise ArgumentError("mask: expected gate indices, got an empty tensor")
    low, high = int(mask.min()), int(mask.max())
    if low < 0 or high != n_gates - 1:
        raise ArgumentError(
            f"mask: expected gate indices from 0 to n_gates - 1 = {n_gates - 1}, each index a gate, got indices "
            f"from {low} to {high}"
        )


def check_real(value: Any, name: str) -> None:
    """Raise unless ``value`` is a real number (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: expected a real number, got {describe(value)}")


class StochasticGatesBase(nn.Module, ABC):
    """Base of the stochastic gates (Captum's name and signature): gates the input of a model and returns
    the L0 regulariser to add to the loss.

    Args:
        n_gates: the number of gates.
        mask: optional integer tensor broadcastable to the input's shape (batch dimension included), whose
            values 0 .. ``n_gates`` - 1 say which gate each input element shares; without it, each element
            of an example has its own gate and an example must have ``n_gates`` elements.
        reg_weight: the factor of the regulariser.
        reg_reduction: ``"sum"`` (default) or ``"mean"`` of the gates' active probabilities, or ``"none"``
            for the probabilities themselves.

    Raises:
        ValueError: ``n_gates`` below 1, a mask whose indices are not 0 .. ``n_gates`` - 1 with the last
            used, or an unknown ``reg_reduction``.
        TypeError: a mask that is not an integer tensor, or a ``reg_weight`` that is not a number.
    """

    mask: Tensor | None

    def __init__(
        self,
        n_gates: int,
        mask: Tensor | None = None,
        reg_weight: float = 1.0,
        reg_reduction: str = "sum",
    ) -> None:
        super().__init__()
        check_int(n_gates, "n_gates")
        _check_mask(mask, n_gates)
        check_real(reg_weight, "reg_weight")
        check_choice(reg_reduction, "reg_reduction", REG_REDUCTIONS)
        self.n_gates = int(n_gates)
        self.reg_weight = reg_weight
        self.reg_reduction = reg_reduction
        # a buffer, so that it follows the module's device and is saved with it (``gather`` needs int64)
        self.register_buffer("mask", None if mask is None else mask.detach().clone().long())

    def forward(self, input_tensor: Tensor) -> tuple[Tensor, Tensor]:
        """Gate ``input_tensor`` with one draw of the gates per example (the gates' rectified means in eval mode).

        Args:
            input_tensor: a batch, the batch dimension first.

        Returns:
            The gated input (``input_tensor`` times its gates, same shape) and the L0 regulariser, to add to
            the model's loss: ``reg_weight`` times the reduction of the gates' active probabilities.

        Raises:
            ValueError: no batch dimension, an example without one element per gate when there is no mask,
                or a mask that does not broadcast to the input.
        """
        check_gated_input(input_tensor, self.n_gates, self.mask is not None)
        input_size = input_tensor.size()
        batch_size = input_size[0]
        gate_values = torch.clamp(self._sample_gate_values(batch_size), min=0, max=1)  # hard sigmoid
        if self.mask is not None:
            gate_index = _expand_mask(self.mask, input_tensor).reshape(batch_size, -1)
            gate_values = torch.gather(gate_values, 1, gate_index)
        gated_input = input_tensor * gate_values.reshape(input_size)
        return gated_input, self._regulariser()

    def _regulariser(self) -> Tensor:
        """The reduced active probabilities times ``reg_weight`` (out of place: autograd may need them)."""
        active_probs = self._get_gate_active_probs()
        if self.reg_reduction == "sum":
            active_probs = active_probs.sum()
        elif self.reg_reduction == "mean":
            active_probs = active_probs.mean()
        return active_probs * self.reg_weight

    def get_gate_values(self, clamp: bool = True) -> Tensor:
        """The gates' values, the means of their distributions, of shape ``(n_gates,)`` and detached.

        Args:
            clamp: fold them into [0, 1] as the gates are (default); ``False`` gives the raw means, which
                still rank gates that are all fully open or all closed.
        """
        gate_values = self._get_gate_values()
        if clamp:
            gate_values = torch.clamp(gate_values, min=0, max=1)
        return gate_values.detach()

    def get_gate_active_probs(self) -> Tensor:
        """The probability that each gate is non-zero, of shape ``(n_gates,)`` and detached."""
        return self._get_gate_active_probs().detach()

    @abstractmethod
    def _get_gate_values(self) -> Tensor:
        """The raw (unclamped) means of the gates' distributions, shape ``(n_gates,)``."""

    @abstractmethod
    def _sample_gate_values(self, batch_size: int) -> Tensor:
        """Raw gate values, one row per example, shape ``(batch_size, n_gates)``: drawn in training mode,
        the distributions' means in eval mode."""

    @abstractmethod
    def _get_gate_active_probs(self) -> Tensor:
        """The probability that each gate is non-zero, shape ``(n_gates,)``, differentiable."""

    def _get_numel_of_input(self, input_tensor: Tensor) -> int:
        """The number of elements of one example of the batch ``input_tensor`` (Captum's helper)."""
        check_gated_input(input_tensor, self.n_gates, has_mask=True)
        return input_tensor[0].numel()


def check_pretrained(param: Any, name: str) -> None:
    """Raise unless ``param``, the pretrained parameter of a ``_from_pretrained``, is a 1-D float tensor."""
    if not isinstance(param, Tensor) or not param.is_floating_point():
        raise ArgumentTypeError(f"{name}: expected a 1-dimensional float tensor, got {describe(param)}")
    if param.dim() != 1 or param.numel() == 0:
        raise ArgumentError(f"{name}: expected a non-empty 1-dimensional tensor, got shape {tuple(param.shape)}")
