"""Path methods to a layer: InternalInfluence, LayerConductance, LayerIntegratedGradients and
LayerGradientShap, the layer gradient integrated (or averaged) along paths from the baselines to the inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from attribution._internal.canonical import (
    BaselineType,
    TargetType,
    TensorOrTuple,
    canonical_call,
    format_baseline_distribution,
    format_baselines,
    format_stdevs,
)
from attribution._internal.checks import check_grad_kwargs, check_int
from attribution.functional.layer.path import (
    internal_influence,
    layer_conductance,
    layer_gradient_shap,
    layer_integrated_gradients,
)
from attribution.methods.base import (
    GradientAttribution,
    LayerAttribution,
    MultipliedLayerAttribution,
    WithDelta,
    check_path_arguments,
    layer_output,
    with_delta,
)
from attribution.registry import register


@register("internal_influence", probe_options={"n_steps": 16})
class InternalInfluence(LayerAttribution, GradientAttribution):
    """Internal influence (Leino et al., 2018): the layer gradient integrated along the input path.

    ``integral_0^1 d f / d a (a(b + t (x - b))) dt``, not multiplied by anything.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name. It must run exactly once per forward.
    """

    needs_float_inputs = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple:
        """Integrate the layer gradient from ``baselines`` to ``inputs``.

        Args:
            inputs, baselines, target, additional_forward_args, n_steps, method, internal_batch_size: as in
                :meth:`IntegratedGradients.attribute`.
            attribute_to_layer_input: attribute to the layer's input instead.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the activations; a tuple if the layer's output is one.

        Raises:
            ValueError: bad ``n_steps``, ``method``, baselines or target, or a
                layer that does not run exactly once per forward.
        """
        check_path_arguments(n_steps, method, internal_batch_size)
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, was_tuple = internal_influence(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            self._one_layer(),
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        return layer_output(attrs, was_tuple)


@register("layer_conductance", probe_options={"n_steps": 16})
class LayerConductance(LayerAttribution, GradientAttribution):
    """Conductance (Dhamdhere et al., 2018): how much of the input path integral flows through each unit.

    ``sum_k grad_a f(x_k) * (a(x_{k+1}) - a(x_k))`` over the ``n_steps + 1``
    points ``x_k`` that the rule places on the path from the baseline to the
    input; summed over the layer it approximates ``f(x) - f(baseline)``.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name. It must run exactly once per forward.
    """

    returns_delta = True
    needs_float_inputs = True
    _multiply_by_inputs = True

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
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> WithDelta:
        """Conductance of every unit of the layer's output (or input).

        Args:
            inputs, baselines, target, additional_forward_args, method, internal_batch_size, return_convergence_delta:
                as in :meth:`IntegratedGradients.attribute`.
            n_steps: number of steps; the rule places ``n_steps + 1`` points.
            attribute_to_layer_input: attribute to the layer's input instead.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the activations (a tuple if the layer's
            output is one), and the delta per example if requested.

        Raises:
            ValueError: bad ``n_steps``, ``method``, baselines or target, or a
                layer that does not run exactly once per forward.
        """
        check_path_arguments(n_steps, method, internal_batch_size, nodes=n_steps + 1)
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        attrs, delta, was_tuple = layer_conductance(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            self._one_layer(),
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        return with_delta(layer_output(attrs, was_tuple), delta, return_convergence_delta)


@register("layer_integrated_gradients", probe_options={"n_steps": 16})
class LayerIntegratedGradients(MultipliedLayerAttribution):
    """Integrated gradients in a layer's activation space (e.g. over token embeddings).

    The layer's output is moved from its value at the baseline to its value
    at the input while the rest of the model sees the original inputs, so
    the inputs may be integer token ids feeding an embedding layer.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name, or a list of layers that do not feed one another: they move
            along their paths together, as in Captum, and ``attribute`` returns a list, one entry per layer.
            Each must run exactly once per forward.
        multiply_by_inputs: multiply by ``a(x) - a(baseline)`` (default).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import LayerIntegratedGradients
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(5 * 4, 2))  # 5 tokens, 2 classes
        >>> token_ids, pad_id = torch.randint(1, 10, (2, 5)), 0
        >>> lig = LayerIntegratedGradients(model, model[0])
        >>> attr, delta = lig.attribute(
        ...     token_ids, baselines=pad_id, target=1, return_convergence_delta=True
        ... )
        >>> attr.shape, attr.sum(2).shape  # per embedding dimension; summed: one score per token
        (torch.Size([2, 5, 4]), torch.Size([2, 5]))
        >>> bool(delta.abs().max() < 1e-4)  # exact here: the model is linear in the embeddings
        True
    """

    returns_delta = True
    accepts_layer_lists = True

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
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> TensorOrTuple | list[TensorOrTuple] | tuple[TensorOrTuple | list[TensorOrTuple], Tensor]:
        """Integrate the layer gradient from ``a(baselines)`` to ``a(inputs)``.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0, of any dtype.
            baselines: as in :meth:`IntegratedGradients.attribute`, in the
                inputs' dtype (for token ids: a pad id, or a tensor of them).
            target, additional_forward_args, n_steps, method, internal_batch_size, return_convergence_delta: as in
                :meth:`IntegratedGradients.attribute`.
            attribute_to_layer_input: integrate over the layer's input instead.
            grad_kwargs: further options of ``torch.autograd.grad`` (e.g. ``{"materialize_grads": True}``).

        Returns:
            Attributions shaped like the activations (a tuple if the layer's
            output is one), and the delta per example if requested.

        Raises:
            ValueError: bad ``n_steps``, ``method``, baselines or target, or a
                layer that does not run exactly once per forward.
        """
        check_path_arguments(n_steps, method, internal_batch_size)
        check_grad_kwargs(grad_kwargs)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        attrs, delta, was_tuple = layer_integrated_gradients(
            call.objective,
            call.inputs,
            format_baselines(baselines, call.inputs),
            self.layer,
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        if isinstance(self.layer, list):
            return with_delta([layer_output(*one) for one in zip(attrs, was_tuple)], delta, return_convergence_delta)
        return with_delta(layer_output(attrs, was_tuple), delta, return_convergence_delta)


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
        >>> import torch
        >>> from torch import nn
        >>> from attribution import LayerGradientShap
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images, background = torch.rand(2, 3, 8, 8), torch.rand(5, 3, 8, 8)  # 5 baselines to draw from
        >>> attr = LayerGradientShap(model, model[0]).attribute(
        ...     images, baselines=background, n_samples=16, target=2
        ... )
        >>> attr.shape  # shaped like the layer's output
        torch.Size([2, 4, 8, 8])
    """

    draws_random_numbers = True
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
    ) -> WithDelta:
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
            self._one_layer(),
            n_samples=n_samples,
            stdevs=format_stdevs(stdevs, len(call.inputs)),
            multiply_by_inputs=self.multiplies_by_inputs,
            return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
        return with_delta(attrs if was_tuple else attrs[0], delta, return_convergence_delta)
