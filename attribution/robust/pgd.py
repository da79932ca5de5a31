"""Projected Gradient Descent (Madry et al., 2018; Captum's ``PGD``): FGSM steps of ``step_size``, each
followed by a projection back into the ball of ``radius`` around the original inputs and a clamp to the
input bounds.

    x_0 = x (or a uniform random point of the ball with ``random_start``)
    x_(t+1) = bound(project_r(x_t +/- step_size * sign(grad_x L(x_t, target))))

As in Captum, every step follows the gradient's sign, also for ``norm="L2"``; the norm decides the ball
the perturbation is projected into: ``"Linf"`` clamps each element's change to ``[-radius, radius]``,
``"L2"`` rescales each example's change of each input to an L2 norm of at most ``radius``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attribution._internal.canonical import format_additional_args, format_inputs, restore_structure
from attribution._internal.checks import check_choice, check_int
from attribution.robust._attack import LossFunc, check_bounds, check_number, format_masks, loss_gradients
from attribution.robust.fgsm import FGSM, Clamp, sign_step
from attribution.robust.perturbation import Perturbation

NORMS = ("Linf", "L2")


def random_point(center: Tensor, radius: float, norm: str, mask: Tensor | None) -> Tensor:
    """A uniform random point of the ``norm`` ball of ``radius`` around each example of ``center`` (the
    mask's zeros keep their value); drawn from torch's global generator, as ``torch.rand`` is."""
    if norm == "Linf":
        noise = torch.rand_like(center).mul_(2 * radius).sub_(radius)
    else:
        direction = torch.randn_like(center)
        direction /= (
            torch.linalg.vector_norm(direction.flatten(1), dim=1).clamp_min(1e-12).view(-1, *[1] * (center.dim() - 1))
        )
        # the radius of a uniform point of a d-dimensional ball is distributed as radius * U^(1/d)
        d = center[0].numel()
        scale = torch.rand(len(center), device=center.device, dtype=center.dtype).pow_(1.0 / d).mul_(radius)
        noise = direction.mul_(scale.view(-1, *[1] * (center.dim() - 1)))
    if mask is not None:
        noise.mul_(mask)
    return noise.add_(center)


def project_l2(x: Tensor, center: Tensor, radius: float) -> Tensor:
    """``x`` moved in place into the L2 ball of ``radius`` around ``center``, example by example."""
    change = x.sub_(center)
    norms = torch.linalg.vector_norm(change.flatten(1), dim=1).view(-1, *[1] * (x.dim() - 1))
    # torch.renorm's rule (Captum's projection): scale down only changes longer than the radius
    scale = torch.where(norms > radius, radius / (norms + 1e-7), 1.0)
    return change.mul_(scale).add_(center)


def linf_limits(center: Tensor, radius: float, lower: float, upper: float) -> tuple[Tensor, Tensor]:
    """Per-element limits that clamp like the projection into the L-inf ball followed by the bounds, in one
    ``torch.clamp`` (which returns ``max`` where ``min > max``: a ball entirely above the upper bound)."""
    low = (center - radius).clamp_(min=lower)
    high = (center + radius).clamp_(max=upper).clamp_(min=lower)
    return low, high


class PGD(Perturbation):
    """Projected Gradient Descent: an iterated FGSM kept in a ball around the inputs (Captum's class and
    arguments).

    Args:
        forward_func: the model, or any function of the inputs (and ``additional_forward_args``).
        loss_func: ``(outputs, target) -> loss``; the gradient of its summed elements is followed.  Default:
            the negative log of the target output (for a model that returns probabilities).
        lower_bound: the smallest value an input element may take. Default: no bound.
        upper_bound: the largest value an input element may take (e.g. 1 for images in [0, 1]).

    Attributes:
        bound: the function that clamps a perturbed input to the bounds; may be replaced.
        fgsm: the :class:`FGSM` whose ``zero_thresh`` the steps use.

    Example:
        >>> import torch
        >>> from attribution.robust import PGD
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
        >>> x = torch.zeros(4, 3)
        >>> adversarial = PGD(model).perturb(x, radius=0.1, step_size=0.02, step_num=10, target=0, norm="L2")
        >>> bool((torch.linalg.vector_norm(adversarial - x, dim=1) <= 0.1 + 1e-6).all())
        True
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        loss_func: LossFunc | None = None,
        lower_bound: float = float("-inf"),
        upper_bound: float = float("inf"),
    ) -> None:
        self.fgsm = FGSM(forward_func, loss_func)
        self.forward_func = forward_func
        self.loss_func = loss_func
        self.lower_bound, self.upper_bound = check_bounds(lower_bound, upper_bound)
        self.bound: Callable[[Tensor], Tensor] = Clamp(self.lower_bound, self.upper_bound)

    def perturb(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        radius: float,
        step_size: float,
        step_num: int,
        target: Any,
        additional_forward_args: Any = None,
        targeted: bool = False,
        random_start: bool = False,
        norm: str = "Linf",
        mask: Tensor | tuple[Tensor, ...] | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """The adversarial inputs after ``step_num`` projected steps, in the structure of ``inputs``.

        Args:
            inputs: a tensor or a tuple of tensors with the batch first.
            radius: the radius of the ball around the inputs that the perturbation stays in.
            step_size: the size of each sign step.
            step_num: the number of steps (0 returns the start point).
            target: the true labels (untargeted) or the labels to reach (targeted), passed to ``loss_func``;
                for the default loss an int, a tuple, a list or tensor with one entry per example.
            additional_forward_args: further arguments of ``forward_func``, passed unchanged.
            targeted: descend the loss of ``target`` instead of ascending it.
            random_start: start from a uniform random point of the ball instead of the inputs.
            norm: the ball's norm, ``"Linf"`` or ``"L2"`` (per example and per input).
            mask: ones where an input may change, zeros where it may not (one per input; broadcastable).

        Returns:
            The perturbed inputs, detached, in the structure of ``inputs``.

        Raises:
            ValueError: a negative or non-finite ``radius`` or ``step_size``, a negative ``step_num``, an
                unknown ``norm``, a mask of the wrong shape, or a target the default loss cannot read.
            TypeError: inputs that are not floating-point tensors.
        """
        formatted, given_as_tensor = format_inputs(inputs, require_float=True)
        radius = check_number(radius, "radius")
        step = check_number(step_size, "step_size") * (-1.0 if targeted else 1.0)
        check_int(step_num, "step_num", minimum=0)
        check_choice(norm, "norm", NORMS)
        masks = format_masks(mask, formatted)
        args = format_additional_args(additional_forward_args)
        zero_thresh = self.fgsm.zero_thresh
        fused = norm == "Linf" and type(self.bound) is Clamp  # a replaced bound is applied as given
        with torch.no_grad():
            centers = tuple(x.detach() for x in formatted)
            if random_start:
                current = [self.bound(random_point(c, radius, norm, m)) for c, m in zip(centers, masks)]
            else:
                current = [c.clone() for c in centers]
            # the L-inf ball (with the bounds, unless replaced) as per-element limits, computed once
            lower, upper = (self.lower_bound, self.upper_bound) if fused else (-math.inf, math.inf)
            limits = [linf_limits(c, radius, lower, upper) for c in centers] if norm == "Linf" else []
        for _ in range(step_num):
            grads = loss_gradients(self.forward_func, self.loss_func, tuple(current), target, args)
            with torch.no_grad():
                for i, (x, g, m) in enumerate(zip(current, grads, masks)):
                    sign_step(x, g, step, m, zero_thresh)
                    if norm == "Linf":
                        torch.clamp(x, *limits[i], out=x)
                    else:
                        project_l2(x, centers[i], radius)
                    if not fused:
                        current[i] = self.bound(x)
        return restore_structure(current, given_as_tensor)
