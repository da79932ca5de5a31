"""Plain gradient methods: one forward and one backward."""

from __future__ import annotations

from torch import Tensor

from attribution._internal.autograd import gradients
from attribution._internal.canonical import Objective


def saliency(objective: Objective, inputs: tuple[Tensor, ...], abs: bool = True) -> tuple[Tensor, ...]:
    """Gradient of the target with respect to each input feature (its magnitude if ``abs``)."""
    grads, _ = gradients(objective, inputs)
    return tuple(g.abs() for g in grads) if abs else grads


def input_x_gradient(objective: Objective, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Input times the gradient of the target: a linear model's exact per-feature contribution."""
    grads, _ = gradients(objective, inputs)
    return tuple(x.detach() * g for x, g in zip(inputs, grads))
