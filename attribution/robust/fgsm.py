"""Fast Gradient Sign Method (Goodfellow et al., 2015; Captum's ``FGSM``): one step of size ``epsilon`` along
the sign of the loss gradient, away from the true label or (targeted) towards the target.

    untargeted:  x' = x + epsilon * sign(grad_x L(x, y))
    targeted:    x' = x - epsilon * sign(grad_x L(x, t))

Elements whose gradient is at most ``zero_thresh`` in magnitude, and elements a mask excludes, keep their
value; the result is clamped to ``[lower_bound, upper_bound]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attribution._internal.canonical import format_additional_args, format_inputs, restore_structure
from attribution._internal.checks import ArgumentTypeError
from attribution.robust._attack import LossFunc, check_bounds, check_number, format_masks, loss_gradients
from attribution.robust.perturbation import Perturbation

ZERO_THRESH = 1e-6
"""Gradients at most this large in magnitude count as zero (Captum's value)."""


def sign_step(
    x: Tensor, gradient: Tensor, step: float, mask: Tensor | None, zero_thresh: float = ZERO_THRESH
) -> Tensor:
    """``x`` moved in place by ``step`` times the sign of ``gradient`` where the gradient exceeds
    ``zero_thresh`` in magnitude and the mask is set (a negative ``step`` descends)."""
    # hardshrink zeroes exactly the gradients with |g| <= zero_thresh: two passes instead of abs, >, sign, where
    direction = F.hardshrink(gradient, zero_thresh).sign_() if zero_thresh > 0 else gradient.sign()
    if mask is not None:
        direction.mul_(mask)
    return x.add_(direction, alpha=step)


class Clamp:
    """The default ``bound`` of the attacks: clamp to ``[lower, upper]`` (a no-op for infinite bounds)."""

    def __init__(self, lower: float, upper: float) -> None:
        self.lower = lower
        self.upper = upper

    def __call__(self, x: Tensor) -> Tensor:
        if self.lower == float("-inf") and self.upper == float("inf"):
            return x
        return x.clamp(min=self.lower, max=self.upper)


class FGSM(Perturbation):
    """Fast Gradient Sign Method: a one-step adversarial example (Captum's class and arguments).

    Args:
        forward_func: the model, or any function of the inputs (and ``additional_forward_args``).
        loss_func: ``(outputs, target) -> loss``; the gradient of its summed elements is followed.  Default:
            the negative log of the target output (for a model that returns probabilities).
        lower_bound: the smallest value an input element may take. Default: no bound.
        upper_bound: the largest value an input element may take (e.g. 1 for images in [0, 1]).

    Attributes:
        bound: the function that clamps a perturbed input to the bounds; may be replaced.
        zero_thresh: gradients at most this large in magnitude count as zero (1e-6).

    Example:
        >>> import torch
        >>> from attribution.robust import FGSM
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
        >>> x = torch.zeros(4, 3)
        >>> adversarial = FGSM(model, lower_bound=-1, upper_bound=1).perturb(x, epsilon=0.1, target=0)
        >>> bool(((adversarial - x).abs() <= 0.1 + 1e-6).all())
        True
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        loss_func: LossFunc | None = None,
        lower_bound: float = float("-inf"),
        upper_bound: float = float("inf"),
    ) -> None:
        if not callable(forward_func):
            raise ArgumentTypeError(f"forward_func: expected a model or a callable, got {type(forward_func).__name__}")
        if loss_func is not None and not callable(loss_func):
            raise ArgumentTypeError(
                f"loss_func: expected None or a callable (outputs, target) -> loss, got {loss_func!r}"
            )
        self.forward_func = forward_func
        self.loss_func = loss_func
        self.bound: Callable[[Tensor], Tensor] = Clamp(*check_bounds(lower_bound, upper_bound))
        self.zero_thresh = ZERO_THRESH

    def perturb(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        epsilon: float,
        target: Any,
        additional_forward_args: Any = None,
        targeted: bool = False,
        mask: Tensor | tuple[Tensor, ...] | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """The adversarial inputs, in the structure of ``inputs``.

        Args:
            inputs: a tensor or a tuple of tensors with the batch first.
            epsilon: the size of the step for every element.
            target: the true labels (untargeted) or the labels to reach (targeted), passed to ``loss_func``;
                for the default loss an int, a tuple, a list or tensor with one entry per example.
            additional_forward_args: further arguments of ``forward_func``, passed unchanged.
            targeted: descend the loss of ``target`` instead of ascending it.
            mask: ones where an input may change, zeros where it may not (one per input; broadcastable).

        Returns:
            The perturbed inputs, detached, in the structure of ``inputs``.

        Raises:
            ValueError: a negative or non-finite ``epsilon``, a mask of the wrong shape, or a target the
                default loss cannot read.
            TypeError: inputs that are not floating-point tensors.
        """
        formatted, given_as_tensor = format_inputs(inputs, require_float=True)
        step = check_number(epsilon, "epsilon")
        masks = format_masks(mask, formatted)
        args = format_additional_args(additional_forward_args)
        grads = loss_gradients(self.forward_func, self.loss_func, formatted, target, args)
        sign = -1.0 if targeted else 1.0
        with torch.no_grad():
            perturbed = [
                self.bound(sign_step(x.detach().clone(), g, sign * step, m, self.zero_thresh))
                for x, g, m in zip(formatted, grads, masks)
            ]
        return restore_structure(perturbed, given_as_tensor)
