"""IntegratedGradients and GradientShap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from attribution import functional
from attribution._internal.canonical import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    canonical_call,
    format_baseline_distribution,
    format_baselines,
    format_stdevs,
)
from attribution._internal.checks import check_int
from attribution.methods.base import GradientAttribution, WithDelta, check_path_arguments, with_delta
from attribution.registry import register


class _PathAttribution(GradientAttribution):
    returns_delta = True
    needs_float_inputs = True

    def __init__(self, forward_func: Callable[..., Tensor], multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func)
        self._multiply_by_inputs = multiply_by_inputs


@register("integrated_gradients", probe_options={"n_steps": 16})
class IntegratedGradients(_PathAttribution):
    """Integrated Gradients (Sundararajan et al., 2017).

    ``(x - baseline) * integral_0^1 grad f(baseline + a (x - baseline)) da``,
    computed with a quadrature rule.  Attributions sum to
    ``f(x) - f(baseline)`` up to the quadrature error (the convergence delta).

    Args:
        forward_func: the model.
        multiply_by_inputs: multiply the integrated gradient by
            ``inputs - baselines`` (default); False gives the bare integral.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import IntegratedGradients
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> ig = IntegratedGradients(model)
        >>> attr, delta = ig.attribute(images, target=2, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 3, 8, 8]), torch.Size([2]))
        >>> gap = model(images)[:, 2] - model(torch.zeros_like(images))[:, 2]  # f(x) - f(baseline)
        >>> torch.allclose(attr.sum((1, 2, 3)), gap, atol=1e-3)
        True
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> WithDelta:
        """Integrate gradients from ``baselines`` to ``inputs``.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: the path's start: None (zeros), a number, a tensor of
                the input's shape or with a leading 1; one per input in a tuple.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            n_steps: number of quadrature nodes (>= 1; >= 2 for trapezoid).
            method: ``"gausslegendre"`` or ``"riemann_left"``, ``"riemann_right"``,
                ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size: rows per forward; by default chunks are sized
                to a memory budget, so memory does not grow with ``n_steps``.
            return_convergence_delta: also return ``sum(attr) - (f(x) - f(b))``
                per example.

        Returns:
            Attributions shaped like ``inputs``, and the delta if requested.

        Raises:
            ValueError: bad ``n_steps``, ``method``, baselines or target.
        """
        check_path_arguments(n_steps, method, internal_batch_size)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, delta = functional.integrated_gradients(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
        )
        return with_delta(call.restore(attrs), delta, return_convergence_delta)


@register("gradient_shap", probe_options={"n_samples": 16, "stdevs": 0.1})
class GradientShap(_PathAttribution):
    """GradientSHAP: expected gradients from a baseline distribution (Lundberg & Lee, 2017).

    The expectation of ``grad f(b + a (x' - b)) * (x' - b)`` over baselines
    ``b`` drawn from the distribution, ``a ~ U(0, 1)`` and noisy inputs
    ``x' = x + N(0, stdevs^2)``.  Draws come from torch's global generator:
    seed it with ``torch.manual_seed`` for reproducible results.

    Args:
        forward_func: the model.
        multiply_by_inputs: multiply gradients by ``inputs - baselines`` (default).
    """

    draws_random_numbers = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        n_samples: int = 5,
        stdevs: float | tuple[float, ...] = 0.0,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> WithDelta:
        """Estimate SHAP values with ``n_samples`` samples per example.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: the distribution: a tensor of ``k`` baseline rows shaped
                like one example each (per input in a tuple); None is zeros.
            n_samples: samples per example (>= 1).
            stdevs: standard deviation of the Gaussian noise added to the
                inputs (one per input in a tuple).
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            return_convergence_delta: also return, per example and sample,
                ``sum(attr) - (f(x') - f(b))``, example-major.

        Returns:
            Attributions shaped like ``inputs``, and the delta if requested.
        """
        check_int(n_samples, "n_samples")
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, delta = functional.gradient_shap(
            call.objective,
            call.inputs,
            format_baseline_distribution(baselines, call.inputs),
            n_samples=n_samples,
            stdevs=format_stdevs(stdevs, len(call.inputs)),
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
        )
        return with_delta(call.restore(attrs), delta, return_convergence_delta)
