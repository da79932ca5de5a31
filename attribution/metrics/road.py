"""ROAD: RemOve And Debias (Rong et al., 2022), with its noisy linear imputation.

:func:`road` removes the most (MoRF) or least (LeRF) relevant pixels of each image, a given percentage at
a time, fills them in with :func:`noisy_linear_imputation` and records how the model's score for the target
(or its accuracy) changes: a faithful explanation makes a MoRF curve fall fast and a LeRF curve slowly.

The imputation follows the paper and Quantus's ``noisy_linear_imputation``: every removed pixel takes the
weighted average of its 8 neighbours (weight 1/6 for the direct neighbours, 1/12 for the diagonal ones,
renormalised over the neighbours inside the image), which couples neighbouring removed pixels into one
sparse linear system over all removed pixels of an image, solved for every channel; then Gaussian noise of
standard deviation ``noise`` is added to the removed pixels.  Away from the border the average reproduces
any linear image exactly; at the border only the neighbours inside the image count, so a ramp is not
reproduced there.

The system is solved in torch by conjugate gradients, batched over percentages, examples and channels: it
is symmetric and positive definite whenever at least one pixel is kept (hence percentages below 100).  We
chose CG over a dense solve (cubic in the number of removed pixels: out of reach at 224x224) and over Jacobi
iterations (which need about as many sweeps as the square of a hole's diameter, CG about its diameter).  It
stops at a relative residual of 1e-6 (float32) or 1e-12 (float64) for every system, each system frozen as
soon as it gets there, so one example's result does not depend on the others in the batch.  In float32
the imputed values of a 224x224 image with 99% of it removed (one hole) come within about 1e-3 of the
float64 solution, well below the default noise.  CG needs about as many iterations as the largest hole is
wide (about 500 for that image), each a 3x3 convolution of the whole batch of ``P * N`` images: on a CPU
with 2 threads that is about 0.6 s for one 3x224x224 image and 30 s for 4 images at 4 percentages; on a GPU
much less.  The memory is about six copies of the ``P * N`` images.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attribution._internal import canonical as canon
from attribution._internal.canonical import TargetType, describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice
from attribution._internal.chunking import ThreadGovernor

ROAD_ORDERS = ("morf", "lerf")
"""Which pixels :func:`road` removes first: the most relevant (``"morf"``) or the least (``"lerf"``)."""

ROAD_SCORES = ("output", "accuracy")
"""What :func:`road` records: the model's output for the target, or whether the arg-max is the target."""

DEFAULT_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""The percentages of removed pixels the paper reports."""

_NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))
_CHECK_EVERY = 8  # CG iterations between convergence checks: each check is a host sync


def road(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    order: str = "morf",
    score: str = "output",
    noise: float = 0.01,
    seed: int = 0,
    additional_forward_args: Any = None,
) -> Tensor:
    """The model's score after removing and imputing a percentage of each image's pixels, per percentage.

    For each percentage ``p``, the ``int(H * W * p / 100)`` pixels (all channels of each) with the highest
    (``order="morf"``) or lowest (``"lerf"``) attribution are replaced by :func:`noisy_linear_imputation`,
    and the model scores the result.  Pixels are ranked by the attribution summed over channels; ties go to
    the pixel first in row-major order.  With ``score="accuracy"`` and ``order="morf"`` this is Quantus's
    ``ROAD`` per example (Quantus averages over the batch).

    The noise comes from a :class:`torch.Generator` seeded with ``seed`` on the inputs' device; the global
    generator is left alone.  One draw covers the whole batch, so with ``noise > 0`` an example's result
    depends on its place in the batch (with ``noise=0`` it does not).

    Args:
        forward_func: the model.
        inputs: images ``(N, C, H, W)``, floating point.
        attributions: ``(N, C, H, W)``, ``(N, 1, H, W)`` or ``(N, H, W)`` at the images' size.
        target: which output to score (see :meth:`~attribution.Saliency.attribute`): an int, one per example,
            or None for a model with one output.  ``score="accuracy"`` needs class indices (an int or one
            per example): the true labels for Quantus's accuracy, the predicted classes to ask whether the
            prediction is kept.
        percentages: percentages of pixels to remove, each in ``[0, 100)``.
        order: one of :data:`ROAD_ORDERS`.
        score: one of :data:`ROAD_SCORES`: the output for the target, or 1.0 where the arg-max of the
            model's output (``(N, K)`` scores) is the target class and 0.0 elsewhere.
        noise: standard deviation of the Gaussian noise added to the imputed pixels (>= 0).
        seed: seed of the noise.
        additional_forward_args: extra arguments passed to the model.

    Returns:
        A tensor of shape ``(N, len(percentages))``.

    Raises:
        TypeError: a non-callable ``forward_func``, inputs that are not one floating-point tensor,
            attributions that are not a tensor, or a target of a type no target form takes.
        ValueError: bad shapes, percentages, ``order``, ``score``, ``noise`` or ``seed``, or a target that
            does not fit.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution.metrics import road
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(torch.arange(16.0)[None]), model[1].bias.zero_()
        >>> x = torch.ones(1, 1, 4, 4)  # a constant image: imputation gives it back
        >>> road(model, x, model[1].weight.view(1, 1, 4, 4), percentages=(0, 25, 50), noise=0.0)
        tensor([[120., 120., 120.]])
    """
    call = canon.canonical_call(forward_func, inputs, target, additional_forward_args)
    if not call.given_as_tensor or call.inputs[0].dim() != 4 or not call.inputs[0].is_floating_point():
        raise ArgumentTypeError(
            f"inputs: expected one floating-point tensor of images (N, C, H, W), got {describe(inputs)}"
        )
    images = call.inputs[0].detach()
    n, channels, height, width = images.shape
    maps = _pixel_maps(attributions, images)
    fractions = _percentages(percentages)
    check_choice(order, "order", ROAD_ORDERS)
    check_choice(score, "score", ROAD_SCORES)
    _check_noise(noise)
    _check_seed(seed)
    labels = _labels(target, n, images.device) if score == "accuracy" else None

    pixels = height * width
    ranking = maps.reshape(n, pixels).argsort(dim=1, descending=order == "morf", stable=True)
    rank = torch.empty_like(ranking).scatter_(1, ranking, torch.arange(pixels, device=images.device).expand(n, -1))
    counts = torch.tensor([int(pixels * p / 100) for p in fractions], device=images.device)
    removed = rank[None] < counts[:, None, None]  # (P, N, H * W)
    copies = len(fractions)
    with torch.no_grad():
        stacked = images.expand(copies, *images.shape).reshape(copies * n, channels, height, width)
        perturbed = noisy_linear_imputation(stacked, removed.view(copies * n, height, width), noise, seed)
        if labels is None:
            values = call.objective((perturbed,), copies)
        else:
            values = _accuracy(call.objective.forward((perturbed,), copies), labels.repeat(copies))
    return values.reshape(copies, n).T


def noisy_linear_imputation(images: Tensor, removed: Tensor, noise: float = 0.0, seed: int = 0) -> Tensor:
    """Fill the removed pixels of each image by noisy linear imputation (Rong et al., 2022).

    Each removed pixel becomes the weighted average of its 8 neighbours (1/6 direct, 1/12 diagonal,
    renormalised over those inside the image), kept and removed ones alike, solved jointly for all removed
    pixels (see the module docstring), plus Gaussian noise of standard deviation ``noise`` drawn from a
    :class:`torch.Generator` seeded with ``seed`` on the images' device.  Kept pixels are returned unchanged.

    Args:
        images: ``(N, C, H, W)``, floating point.
        removed: ``(N, H, W)`` or ``(N, 1, H, W)``, bool or 0/1: the pixels to impute, in all channels.
            Each image must keep at least one pixel.
        noise: standard deviation of the noise (>= 0).
        seed: seed of the noise.

    Returns:
        A new tensor like ``images``.

    Raises:
        TypeError: ``images`` or ``removed`` is not a tensor, or ``images`` is not floating point.
        ValueError: shapes that do not fit, an image with every pixel removed, or a bad ``noise``/``seed``.

    Example:
        >>> import torch
        >>> from attribution.metrics import noisy_linear_imputation
        >>> ramp = torch.arange(5.0).expand(1, 1, 5, 5)  # columns 0..4
        >>> holes = torch.zeros(1, 5, 5, dtype=torch.bool)
        >>> holes[0, 1:4, 1:4] = True  # a 3x3 hole: recovered exactly
        >>> noisy_linear_imputation(ramp, holes)[0, 0, 2].round(decimals=4)
        tensor([0., 1., 2., 3., 4.])
    """
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise ArgumentTypeError(f"images: expected a floating-point tensor, got {describe(images)}")
    if not isinstance(removed, Tensor) or removed.is_complex():
        raise ArgumentTypeError(f"removed: expected a bool or 0/1 tensor, got {describe(removed)}")
    if images.dim() != 4 or images.numel() == 0:
        raise ArgumentError(f"images: expected non-empty images (N, C, H, W), got shape {tuple(images.shape)}")
    mask = removed[:, 0] if removed.dim() == 4 and removed.shape[1] == 1 else removed
    if mask.shape != (images.shape[0], *images.shape[2:]):
        raise ArgumentError(
            f"removed: expected shape {(images.shape[0], *images.shape[2:])} (or with a channel of 1), "
            f"got {tuple(removed.shape)}"
        )
    if mask.device != images.device:
        raise ArgumentError(f"removed: expected a tensor on the images' device ({images.device}), got {mask.device}")
    mask = mask != 0
    if bool(mask.flatten(1).all(1).any()):
        raise ArgumentError("removed: every pixel of an image is removed; keep at least one to impute from")
    _check_noise(noise)
    _check_seed(seed)
    unknown = mask[:, None].to(images.dtype)
    filled = _linear_imputation(images.detach(), unknown)
    if noise > 0:
        generator = torch.Generator(device=images.device).manual_seed(seed)
        draws = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        filled = filled + noise * draws * unknown
    return filled


def _linear_imputation(images: Tensor, unknown: Tensor) -> Tensor:
    """Solve ``D_i u_i - sum_j w_ij u_j = sum_k w_ik x_k`` (``j`` removed, ``k`` kept neighbours of ``i``) for
    the removed pixels ``u`` of every image and channel by conjugate gradients; ``unknown`` is ``(N, 1, H, W)``.

    The operator works on whole images with zeros at the kept pixels, a 3x3 convolution (zero padding: no
    neighbours outside the image) gathering the neighbours.
    """
    channels, height, width = images.shape[1:]
    kernel = torch.tensor(_NEIGHBOUR_WEIGHTS, dtype=images.dtype, device=images.device).expand(channels, 1, 3, 3)

    def gather(values: Tensor) -> Tensor:
        return F.conv2d(values, kernel, padding=1, groups=channels)

    inside = gather(torch.ones(1, channels, height, width, dtype=images.dtype, device=images.device))

    def operator(u: Tensor) -> Tensor:
        return unknown * (inside * u - gather(u))

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum((2, 3), keepdim=True)

    rhs = unknown * gather(images * (1 - unknown))
    tol = 1e-12 if images.dtype == torch.float64 else 1e-6
    threshold = tol**2 * dot(rhs, rhs)
    solution = torch.zeros_like(images)
    residual = rhs.clone()
    direction = residual.clone()
    squares = dot(residual, residual)
    # Each step is a dozen small ops: beside a busy process their threads wait on each other, so the governor
    # drops to fewer threads when the cores are contended (and restores the count after).
    with ThreadGovernor(images.device) as governor:
        for step in range(height * width):  # CG ends in as many steps as unknowns in exact arithmetic
            active = squares > threshold
            if step % _CHECK_EVERY == 0 and not bool(active.any()):
                break
            with governor.chunk():
                moved = operator(direction)
                curvature = dot(direction, moved)
                safe = torch.where(curvature > 0, curvature, torch.ones_like(curvature))
                alpha = torch.where(active, squares / safe, 0)
                solution = solution + alpha * direction
                residual = residual - alpha * moved
                new_squares = dot(residual, residual)
                beta = new_squares / torch.where(squares > 0, squares, torch.ones_like(squares))
                direction = residual + beta * direction
                squares = torch.where(active, new_squares, squares)
    return images * (1 - unknown) + unknown * solution


def _pixel_maps(attributions: Any, images: Tensor) -> Tensor:
    """Attributions summed over channels, ``(N, H, W)``, after checking they fit the images."""
    if not isinstance(attributions, Tensor) or attributions.is_complex():
        raise ArgumentTypeError(f"attributions: expected a real-valued tensor, got {describe(attributions)}")
    n, channels, height, width = images.shape
    shapes = [(n, channels, height, width), (n, 1, height, width), (n, height, width)]
    if tuple(attributions.shape) not in shapes:
        raise ArgumentError(f"attributions: expected one of the shapes {shapes}, got {tuple(attributions.shape)}")
    if attributions.device != images.device:
        raise ArgumentError(
            f"attributions: expected a tensor on the inputs' device ({images.device}), got {attributions.device}"
        )
    maps = attributions.detach().to(torch.float64 if attributions.dtype == torch.float64 else torch.float32)
    return maps.sum(1) if maps.dim() == 4 else maps


def _percentages(percentages: Any) -> tuple[float, ...]:
    valid = (
        isinstance(percentages, Sequence)
        and len(percentages) > 0
        and all(isinstance(p, numbers.Real) and not isinstance(p, bool) and 0 <= float(p) < 100 for p in percentages)
    )
    if not valid:
        raise ArgumentError(
            f"percentages: expected a non-empty sequence of numbers in [0, 100) (at least one pixel is kept "
            f"to impute from), got {percentages!r}"
        )
    return tuple(float(p) for p in percentages)


def _check_noise(noise: Any) -> None:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise ArgumentError(f"noise: expected a finite number >= 0 (a standard deviation), got {noise!r}")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ArgumentError(f"seed: expected an int, got {seed!r}")


def _labels(target: Any, n: int, device: torch.device) -> Tensor:
    """Class indices ``(N,)`` for ``score="accuracy"``."""
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return torch.full((n,), int(target), device=device)
    if isinstance(target, (list, tuple)) and all(isinstance(t, numbers.Integral) for t in target):
        target = torch.tensor(target)
    if isinstance(target, Tensor) and not target.is_floating_point() and not target.is_complex():
        if target.dim() == 0:
            return target.to(device).expand(n)
        if target.shape == (n,):
            return target.to(device)
    raise ArgumentError(
        f"target: score='accuracy' needs class indices, an int or one per example ({n}), got {describe(target)}"
    )


def _accuracy(output: Tensor, labels: Tensor) -> Tensor:
    if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[0] != labels.shape[0]:
        raise ArgumentError(
            f"forward_func: score='accuracy' needs class scores (rows, K) with one row per example, got "
            f"{describe(output)}"
        )
    return (output.argmax(1) == labels).to(
        torch.get_default_dtype() if not output.is_floating_point() else output.dtype
    )
