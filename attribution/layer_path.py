"""Path methods to a layer: LayerGradientShap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from attribution._base import GradientAttribution, LayerAttribution, with_delta
from attribution._canonical import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    canonical_call,
    format_baseline_distribution,
    format_stdevs,
)
from attribution._checks import check_grad_kwargs, check_int
from attribution.functional.layer import layer_gradient_shap
from attribution.registry import register


@register("layer_gradient_shap", probe_options={"n_samples": 16, "stdevs": 0.1})
class LayerGradientShap(LayerAttribution, GradientAttribution):
    """GradientSHAP at a layer: expected layer gradients times ``a(x') - a(b)``.

    The expectation of ``grad_a f(b + t (x' - b)) * (a(x') - a(b))`` over
    baselines ``b`` drawn from the distribution, ``t ~ U(0, 1)`` and noisy
    inputs ``x' = x + N(0, stdevs^2)``; the points move in input space, the
    gradient and the differences are the layer's.  Draws come from torch's
    global generator (seed it for reproducible results); with the same seed a
    layer that passes the inputs through gives :class:`GradientShap`'s numbers.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name. It must run exactly once per forward.
        multiply_by_inputs: multiply by ``a(x') - a(b)`` (default); False averages the layer gradients.

    Example:
        >>> attr = LayerGradientShap(model, "layer3").attribute(  # doctest: +SKIP
        ...     images, baselines=background, n_samples=16, target=3
        ... )
    """

    returns_delta = True
    needs_float_inputs = True

    def __init__(
        self, forward_func: Callable[..., Tensor], layer: nn.Module | str, multiply_by_inputs: bool = True
    ) -> None:
        super().__init__(forward_func, layer)
        self._multiply_by_inputs = multiply_by_inputs

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        n_samples: int = 5,
        stdevs: float | tuple[float, ...] = 0.0,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ):
        """Estimate the layer units' SHAP values with ``n_samples`` samples per example.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: the distribution: ``k`` baseline rows shaped like one example each (per input in a
                tuple), or a callable returning them (called with ``inputs`` if it takes an argument);
                None is zeros.
            n_samples: samples per example (>= 1).
            stdevs: standard deviation of the Gaussian noise added to the inputs (one per input in a tuple).
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            return_convergence_delta: also return, per example and sample, ``sum(attr) - (f(x') - f(b))``,
                example-major.
            attribute_to_layer_input: attribute to the layer's input instead.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the layer's activations (a tuple if the layer's output is one), and
            the delta if requested.

        Raises:
            ValueError: bad ``n_samples``, ``stdevs``, baselines or target, or a layer that does not run
                exactly once per forward.
        """
        check_int(n_samples, "n_samples")
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, delta, was_tuple = layer_gradient_shap(
            call.objective,
            call.inputs,
            format_baseline_distribution(baselines, call.inputs),
            self.layer,
            n_samples=n_samples,
            stdevs=format_stdevs(stdevs, len(call.inputs)),
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        return with_delta(attrs if was_tuple else attrs[0], delta, return_convergence_delta)
