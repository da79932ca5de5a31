"""Neuron path methods' core: neuron conductance, the only neuron method with a core of its own (it also
needs the gradient of the model's output with respect to the unit).  The other neuron path methods are
the input methods applied to :func:`~attribution.functional.neuron_objective`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.autograd import gradients, layer_gradients
from attribution._internal.canonical import Objective
from attribution._internal.checks import ArgumentError
from attribution._internal.chunking import run_chunked
from attribution.functional.neuron.selection import SliceSum
from attribution.functional.path import integration_nodes


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
    if isinstance(neuron.target.fn, SliceSum):
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
