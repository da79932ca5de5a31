"""Neuron methods: how the input features drive one unit of a hidden layer.

Neuron gradient, integrated gradients, GradientSHAP, DeepLift and DeepLift
SHAP need no code of their own: they are the input methods applied to the
model *cut at the layer* (:func:`attribution._autograd.layer_output_forward`),
with the neuron selector as the target.  :func:`neuron_objective` builds that
objective; pass it to :func:`~attribution.functional.saliency` (with
``abs=False``), :func:`~attribution.functional.integrated_gradients` and so
on.  Only neuron conductance, which also needs the gradient of the model's
output with respect to the neuron, has a core here.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
from torch import Tensor, nn

from attribution._autograd import gradients, layer_gradients, layer_output_forward
from attribution._canonical import Objective, Target, describe, format_target
from attribution._checks import ArgumentError, ArgumentTypeError
from attribution._chunking import run_chunked
from attribution.functional.path import integration_nodes

NeuronSelector = Union[int, tuple, Callable[[Tensor], Tensor]]


def neuron_target(neuron_selector: NeuronSelector, n: int) -> Target:
    """The unit (one value per row of the layer's output) that ``neuron_selector`` picks.

    Accepted: an int (a layer with one dimension per example), a tuple with
    one int per dimension of the layer's output after the batch, a tuple
    holding slices (the selected units are summed, as in Captum), or a
    callable from the layer's output to one value per row.

    Raises:
        TypeError: for any other kind of selector.
    """
    if isinstance(neuron_selector, tuple) and any(isinstance(s, slice) for s in neuron_selector):
        return Target(n, fn=_SliceSum(neuron_selector), name="neuron_selector")
    is_int = isinstance(neuron_selector, numbers.Integral) and not isinstance(neuron_selector, bool)
    if not (is_int or isinstance(neuron_selector, tuple) or callable(neuron_selector)):
        raise ArgumentTypeError(
            "neuron_selector: expected an int, a tuple of ints (one per layer dimension after the batch) "
            f"or a callable from the layer output to one value per row, got {describe(neuron_selector)}"
        )
    return format_target(neuron_selector, n, name="neuron_selector")


class _SliceSum:
    """A selector with slices, as in Captum: the sum of the units it covers, per row."""

    def __init__(self, selector: tuple) -> None:
        for s in selector:
            if not isinstance(s, slice) and (isinstance(s, bool) or not isinstance(s, numbers.Integral)):
                raise ArgumentTypeError(f"neuron_selector: entries must be ints or slices, got {describe(s)}")
        self.selector = selector

    def __call__(self, output: Tensor) -> Tensor:
        if len(self.selector) > output.dim() - 1:
            raise ArgumentError(
                f"neuron_selector: {len(self.selector)} indices for a layer output of shape {tuple(output.shape)}"
            )
        try:
            picked = output[(slice(None), *self.selector)]
        except IndexError as error:
            raise ArgumentError(
                f"neuron_selector: {self.selector} does not fit the layer output of shape {tuple(output.shape)} "
                f"({error})"
            ) from None
        return picked.reshape(output.shape[0], -1).sum(1)


class _UpToLayer(nn.Module):
    """The model cut at a layer, as a module, so that model-wide context (DeepLift puts batch
    norm in eval mode) still finds the model's modules.  The model is not modified."""

    def __init__(self, model: nn.Module, cut: Callable[..., Tensor]) -> None:
        super().__init__()
        self.model = model
        self._cut = cut

    def forward(self, *args: Any) -> Tensor:
        return self._cut(*args)


def neuron_objective(
    forward_func: Callable[..., Tensor],
    layer: nn.Module,
    neuron_selector: NeuronSelector | Target,
    n: int,
    additional_args: tuple = (),
    *,
    attribute_to_neuron_input: bool = False,
) -> Objective:
    """The objective "value of the selected unit of ``layer``" for a batch of ``n``.

    The forward stops as soon as the layer has run.  Input methods applied to
    this objective are the neuron methods.

    Args:
        forward_func: the model.
        layer: the module whose output (or input) holds the unit.
        neuron_selector: see :func:`neuron_target`, or a ready :class:`Target`.
        n: the batch size.
        additional_args: extra forward arguments, already a tuple.
        attribute_to_neuron_input: select from the layer's input instead.

    Example:
        >>> objective = neuron_objective(model, model.conv2, (1, 2, 3), len(x))  # doctest: +SKIP
        >>> grads = saliency(objective, (x,), abs=False)  # doctest: +SKIP
    """
    cut = layer_output_forward(forward_func, layer, attribute_to_neuron_input)
    if isinstance(forward_func, nn.Module):
        cut = _UpToLayer(forward_func, cut)
    target = neuron_selector if isinstance(neuron_selector, Target) else neuron_target(neuron_selector, n)
    return Objective(cut, target, additional_args)


def neuron_conductance(
    objective: Objective,
    neuron: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    n_steps: int = 50,
    method: str = "riemann_trapezoid",
    internal_batch_size: int | None = None,
    multiply_by_inputs: bool = True,
    attribute_to_neuron_input: bool = False,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Tensor, ...]:
    """Conductance of every input feature through one unit (Dhamdhere et al., 2018).

    Along the straight path from ``baselines`` to ``inputs``, integrates
    ``d target / d unit * d unit / d input``, times ``inputs - baselines``.
    Summed over the input features this is the unit's layer conductance,
    ``integral d target / d unit * d unit``.

    Each chunk of path steps takes two passes: the full model with the layer
    made a leaf (``d target / d unit``), then the model cut at the layer with
    each row's backward seeded by that gradient times its quadrature weight.

    Args:
        objective: the model's output to explain (model, target, arguments).
        neuron: the unit, from :func:`neuron_objective` on the same layer.  The
            selector is applied to the layer *gradient* too, so a callable must
            only pick units (as in Captum); slices are refused.
        inputs, baselines: canonical tuples; baselines broadcast to the inputs.
        layer: the module ``neuron`` was built on.

    Returns:
        Attributions shaped like ``inputs``.

    Raises:
        ValueError: a selector with slices (it sums units, and the sum has no
            gradient of its own).
    """
    if isinstance(neuron.target.fn, _SliceSum):
        raise ArgumentError(
            "neuron_selector: conductance needs one unit; a selector with slices sums several units "
            "(pass an index of ints, or a callable that picks one unit)"
        )
    n = inputs[0].shape[0]
    alphas, weights = integration_nodes(n_steps, method)
    inputs = tuple(x.detach() for x in inputs)
    diffs = tuple(x - b for x, b in zip(inputs, baselines))
    totals = [torch.zeros_like(x) for x in inputs]

    def integrate(lo: int, hi: int) -> None:
        steps = hi - lo
        points = tuple(
            (b.unsqueeze(0) + alphas[lo:hi].to(x).view(-1, *([1] * x.dim())) * d.unsqueeze(0)).reshape(
                steps * n, *x.shape[1:]
            )
            for x, b, d in zip(inputs, baselines, diffs)
        )
        _, layer_grads, _ = layer_gradients(
            objective, points, layer, attribute_to_neuron_input, repeats=steps, grad_kwargs=grad_kwargs
        )
        # d target / d unit, per row (a layer of several tensors: the callable selector picks from all)
        unit_grads = neuron.target.select(layer_grads[0] if len(layer_grads) == 1 else tuple(layer_grads), steps)
        row_weights = weights[lo:hi].to(unit_grads).repeat_interleave(n) * unit_grads
        grads, _ = gradients(neuron, points, repeats=steps, row_weights=row_weights, grad_kwargs=grad_kwargs)
        for total, g in zip(totals, grads):
            total += g.view(steps, n, *g.shape[1:]).sum(0)

    run_chunked(n_steps, integrate, rows_per_item=n, internal_batch_size=internal_batch_size, device=inputs[0].device)
    return tuple(t * d for t, d in zip(totals, diffs)) if multiply_by_inputs else tuple(totals)
