"""What the gradient attacks share: one boundary for their arguments, and the gradient of the attack loss.

The loss is Captum's: ``loss_func(outputs, target)`` when one is given, else the negative log of the
target output (the model is taken to return probabilities).  Its gradient is taken with
``torch.autograd.grad`` with respect to fresh leaves, so the caller's tensors, ``param.grad`` and the
``requires_grad`` flags are never touched.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attribution._internal.autograd import fresh_leaf, grad, grad_enabled
from attribution._internal.canonical import describe, format_target
from attribution._internal.checks import ArgumentError, ArgumentTypeError

LossFunc = Callable[[Any, Any], Tensor]
"""``(model outputs, target) -> loss``; every element of the loss is summed before the gradient."""


def check_number(value: Any, name: str, *, minimum: float = 0.0) -> float:
    """``value`` as a float; raise unless it is a finite real number >= ``minimum``."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < minimum:
        raise ArgumentError(f"{name}: expected a finite number >= {minimum:g}, got {describe(value)}")
    return float(value)


def check_bounds(lower_bound: Any, upper_bound: Any) -> tuple[float, float]:
    """The input bounds as floats; infinite bounds are allowed (no bound)."""
    bounds = []
    for value, name in ((lower_bound, "lower_bound"), (upper_bound, "upper_bound")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            raise ArgumentTypeError(f"{name}: expected a number (float('inf') for none), got {describe(value)}")
        bounds.append(float(value))
    if bounds[0] > bounds[1]:
        raise ArgumentError(f"lower_bound: {bounds[0]} is above upper_bound {bounds[1]}")
    return bounds[0], bounds[1]


def format_masks(mask: Any, inputs: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    """One mask per input (``None``: every element may change) in the input's dtype and on its device.

    A mask holds ones where the attack may change the input and zeros where it may not; its shape must
    broadcast to the input's.
    """
    if mask is None:
        return (None,) * len(inputs)
    masks = (mask,) if isinstance(mask, Tensor) else mask
    if not isinstance(masks, (tuple, list)) or len(masks) != len(inputs):
        raise ArgumentError(
            f"mask: expected {'a tensor' if len(inputs) == 1 else ''} or a tuple of {len(inputs)} tensors "
            f"(one per input), got {describe(mask)}"
        )
    formatted: list[Tensor | None] = []
    for i, (m, x) in enumerate(zip(masks, inputs)):
        name = "mask" if isinstance(mask, Tensor) else f"mask[{i}]"
        if not isinstance(m, Tensor):
            raise ArgumentTypeError(f"{name}: expected a tensor of zeros and ones, got {describe(m)}")
        if m.dim() > x.dim() or any(a not in (1, b) for a, b in zip(reversed(m.shape), reversed(x.shape))):
            raise ArgumentError(
                f"{name}: shape {tuple(m.shape)} does not broadcast to the input's shape {tuple(x.shape)}"
            )
        formatted.append(m.to(device=x.device, dtype=x.dtype))
    return tuple(formatted)


def loss_gradients(
    forward_func: Callable[..., Any],
    loss_func: LossFunc | None,
    inputs: tuple[Tensor, ...],
    target: Any,
    additional_args: tuple[Any, ...],
) -> tuple[Tensor, ...]:
    """The gradient of the summed attack loss with respect to each input.

    Raises:
        TypeError: the forward (without ``loss_func``) or ``loss_func`` does not return a tensor.
        ValueError: ``target`` does not pick one output per example (default loss only).
    """
    with grad_enabled():
        leaves = tuple(fresh_leaf(x) for x in inputs)
        outputs = forward_func(*leaves, *additional_args)
        if loss_func is not None:
            loss = loss_func(outputs, target)
            if not isinstance(loss, Tensor):
                raise ArgumentTypeError(f"loss_func: expected it to return a tensor, got {describe(loss)}")
        else:
            if not isinstance(outputs, Tensor):
                raise ArgumentTypeError(
                    f"forward_func: the default loss (negative log of the target output) needs a tensor output, "
                    f"got {describe(outputs)}; pass loss_func"
                )
            loss = -torch.log(format_target(target, len(inputs[0])).select(outputs))
        return grad(loss, leaves, torch.ones_like(loss))
