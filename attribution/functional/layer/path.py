"""Layer path methods' core: internal influence, layer conductance, layer integrated gradients and layer
GradientSHAP, each integrating the layer gradient along a path from the baselines to the inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.autograd import (
    _check_single_run,
    grad,
    grad_enabled,
    layer_activations,
    layer_gradients,
    no_gradient_error,
    plain_inputs,
    substitute_layer,
)
from attribution._internal.canonical import Objective, repeat_rows
from attribution._internal.chunking import run_chunked
from attribution.functional.path import convergence_delta, endpoint_outputs, gradient_shap_draws, integration_nodes


def _path_points(starts: tuple[Tensor, ...], diffs: tuple[Tensor, ...], alphas: Tensor, n: int) -> tuple[Tensor, ...]:
    """``start + alpha * diff`` for each alpha, stacked repeat-major into ``len(alphas) * n`` rows.

    Built outside inference mode, so the points can join a graph even when the caller is in it.
    """
    steps = alphas.shape[0]
    with grad_enabled(), torch.no_grad():
        return tuple(
            (s.unsqueeze(0) + alphas.to(d).view(-1, *([1] * d.dim())) * d.unsqueeze(0)).reshape(steps * n, *d.shape[1:])
            for s, d in zip(starts, diffs)
        )


def _by_step(values: tuple[Tensor, ...], steps: int) -> tuple[Tensor, ...]:
    """Split repeat-major rows into a leading step dimension: ``(steps * n, ...) -> (steps, n, ...)``."""
    return tuple(v.view(steps, -1, *v.shape[1:]) for v in values)


def internal_influence(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    attribute_to_layer_input: bool = False,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], bool]:
    """The layer gradient integrated along the straight input path from ``baselines`` to ``inputs``.

    ``integral_0^1 d f / d a (a(b + t (x - b))) dt`` by quadrature, not
    multiplied by anything (Leino et al., 2018).

    Returns:
        ``(attributions, layer_returned_tuple)``.
    """
    n = inputs[0].shape[0]
    alphas, weights = integration_nodes(n_steps, method)
    inputs = tuple(x.detach() for x in inputs)
    diffs = tuple(x - b for x, b in zip(inputs, baselines))
    totals: list[Tensor] = []
    was_tuple = False

    def integrate(lo: int, hi: int) -> None:
        nonlocal was_tuple
        points = _path_points(baselines, diffs, alphas[lo:hi], n)
        row_weights = weights[lo:hi].to(inputs[0].device).repeat_interleave(n)
        _, grads, was_tuple = layer_gradients(
            objective,
            points,
            layer,
            attribute_to_layer_input,
            repeats=hi - lo,
            row_weights=row_weights,
            grad_kwargs=grad_kwargs,
        )
        _accumulate(totals, tuple(g.sum(0) for g in _by_step(grads, hi - lo)))

    run_chunked(n_steps, integrate, rows_per_item=n, internal_batch_size=internal_batch_size, device=inputs[0].device)
    return tuple(totals), was_tuple


def _accumulate(totals: list[Tensor], parts: tuple[Tensor, ...]) -> None:
    """Add ``parts`` to the running ``totals`` (which start empty: layer shapes are known only after a forward)."""
    if totals:
        for total, part in zip(totals, parts):
            total += part
    else:
        totals.extend(parts)


def layer_conductance(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    return_convergence_delta: bool = False,
    attribute_to_layer_input: bool = False,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], Tensor | None, bool]:
    """Conductance (Dhamdhere et al., 2018): the flow of the path integral through each layer unit.

    With the ``n_steps + 1`` points ``x_k`` of the rule on the input path,
    ``sum_k grad_a f(x_k) * (a(x_{k+1}) - a(x_k))``, as the reference
    implementation discretises it.  The last point's activation and gradient
    are carried over chunk boundaries, so chunking does not change the sum.

    Returns:
        ``(attributions, delta, layer_returned_tuple)``; ``delta`` is None unless requested.
    """
    n = inputs[0].shape[0]
    alphas, _ = integration_nodes(n_steps + 1, method)
    inputs = tuple(x.detach() for x in inputs)
    diffs = tuple(x - b for x, b in zip(inputs, baselines))
    totals: list[Tensor] = []
    carried: list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = []
    was_tuple = False

    def conduct(lo: int, hi: int) -> None:
        nonlocal was_tuple
        points = _path_points(baselines, diffs, alphas[lo:hi], n)
        acts, grads, was_tuple = layer_gradients(
            objective, points, layer, attribute_to_layer_input, repeats=hi - lo, grad_kwargs=grad_kwargs
        )
        acts, grads = _by_step(acts, hi - lo), _by_step(grads, hi - lo)
        if carried:
            last_acts, last_grads = carried.pop()
            acts = tuple(torch.cat([p.unsqueeze(0), a]) for p, a in zip(last_acts, acts))
            grads = tuple(torch.cat([p.unsqueeze(0), g]) for p, g in zip(last_grads, grads))
        carried.append((tuple(a[-1] for a in acts), tuple(g[-1] for g in grads)))
        _accumulate(totals, tuple((g[:-1] * (a[1:] - a[:-1])).sum(0) for a, g in zip(acts, grads)))

    run_chunked(n_steps + 1, conduct, rows_per_item=n, internal_batch_size=internal_batch_size, device=inputs[0].device)
    attrs = tuple(totals)
    if not return_convergence_delta:
        return attrs, None, was_tuple
    return attrs, convergence_delta(attrs, *endpoint_outputs(objective, baselines, inputs)), was_tuple


def layer_integrated_gradients(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    layer: nn.Module | Sequence[nn.Module],
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    attribute_to_layer_input: bool = False,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Any, Tensor | None, Any]:
    """Integrated gradients in the layer's activation space.

    The activations ``a(x)`` and ``a(b)`` of the inputs and the baselines come
    from one forward; then, at each quadrature node, the model runs on the
    original inputs with the layer's output replaced by
    ``a(b) + alpha (a(x) - a(b))``.  Inputs need not be floats (token ids
    into an embedding layer, say).  ``layer`` may be a list of layers that do
    not feed one another: they move along their paths together, as in the
    reference, and the delta covers all of them.

    Returns:
        ``(attributions, delta, layer_returned_tuple)``, the first and last a list per layer when ``layer``
        is a list; ``delta`` is None unless requested.
    """
    several = not isinstance(layer, nn.Module)
    layers = (layer,) if isinstance(layer, nn.Module) else tuple(layer)
    n = inputs[0].shape[0]
    alphas, weights = integration_nodes(n_steps, method)
    ends = tuple(torch.cat([b.expand_as(x), x]) for b, x in zip(baselines, inputs))
    values = [
        layer_activations(objective, ends, one, attribute_to_layer_input, repeats=2, with_target=i == 0)
        for i, one in enumerate(layers)
    ]
    outputs = values[0][2]
    starts = [tuple(a[:n] for a in activations) for activations, _, _ in values]
    diffs = [tuple(a[n:] - a[:n] for a in activations) for activations, _, _ in values]
    totals: list[list[Tensor]] = [[] for _ in layers]

    def integrate(lo: int, hi: int) -> None:
        steps = hi - lo
        row_weights = weights[lo:hi].to(inputs[0].device).repeat_interleave(n)
        with grad_enabled():
            repeated = tuple(repeat_rows(x, steps) for x in plain_inputs(inputs))
            leaves = [
                tuple(p.requires_grad_() for p in _path_points(start, diff, alphas[lo:hi], n))
                for start, diff in zip(starts, diffs)
            ]
            with ExitStack() as substituted:  # every listed layer takes its path point in the same forward
                records = []
                for one, layer_leaves in zip(layers, leaves):
                    # Clones go downstream, so in-place ops there leave the leaves alone.
                    clones = tuple(leaf.clone() for leaf in layer_leaves)
                    records.append(substituted.enter_context(substitute_layer(one, clones, attribute_to_layer_input)))
                out = objective(repeated, steps)
                for one, record in zip(layers, records):
                    _check_single_run(one, record.calls)
                off = [one for one, record in zip(layers, records) if record.grad_off]
                unreached = no_gradient_error(off[0], attribute_to_layer_input) if off else None
                wrt = tuple(leaf for group in leaves for leaf in group)
                # Still substituting: non-reentrant checkpointing reruns the forward in the backward.
                grads = grad(out, wrt, row_weights.to(out), grad_kwargs, unreached)
        first = 0
        for total, group in zip(totals, leaves):
            mine, first = grads[first : first + len(group)], first + len(group)
            _accumulate(total, tuple(g.sum(0) for g in _by_step(mine, steps)))

    run_chunked(n_steps, integrate, rows_per_item=n, internal_batch_size=internal_batch_size, device=inputs[0].device)
    attrs = [
        tuple(t * d for t, d in zip(total, diff)) if multiply_by_inputs else tuple(total)
        for total, diff in zip(totals, diffs)
    ]
    was_tuple = [tupled for _, tupled, _ in values]
    delta = None
    if return_convergence_delta:
        assert outputs is not None  # the first layer's forward was asked for the target
        start_out, end_out = outputs.chunk(2)
        delta = convergence_delta(tuple(a for layer_attrs in attrs for a in layer_attrs), start_out, end_out)
    return (attrs, delta, was_tuple) if several else (attrs[0], delta, was_tuple[0])


def layer_gradient_shap(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baseline_distribution: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    n_samples: int = 5,
    stdevs: tuple[float, ...] = (0.0,),
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    attribute_to_layer_input: bool = False,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], Tensor | None, bool]:
    """GradientSHAP at a layer: the expected ``grad_a f(p) * (a(x') - a(b))``.

    Per sample, as :func:`~attribution.functional.gradient_shap` draws them
    (same draws for the same seed), a noisy input ``x'``, a baseline ``b`` and
    a point ``p`` on the input-space segment between them; the layer gradient
    is taken at ``p``, and ``a(x')``, ``a(b)`` come from forwards without
    autograd (which also give ``f(x') - f(b)`` for the delta).

    Returns:
        ``(attributions, delta, layer_returned_tuple)``; ``delta`` has one
        entry per (example, sample), example-major, or is None unless requested.
    """
    n = inputs[0].shape[0]
    noisy, starts, alphas = gradient_shap_draws(inputs, baseline_distribution, n_samples, stdevs)
    totals: list[Tensor] = []
    row_deltas: list[Tensor] = []
    was_tuple = False
    use_input, with_target = attribute_to_layer_input, return_convergence_delta
    needs_ends = multiply_by_inputs or return_convergence_delta
    # Without noise every sample's end is the input itself: a(x) and f(x) are computed once.
    fixed = (
        layer_activations(objective, inputs, layer, use_input, 1, with_target)
        if needs_ends and not any(stdevs)
        else None
    )

    def sample(lo: int, hi: int) -> None:
        nonlocal was_tuple
        steps, part = hi - lo, slice(lo * n, hi * n)
        ends, begins = tuple(x[part] for x in noisy), tuple(b[part] for b in starts)
        with grad_enabled(), torch.no_grad():
            points = tuple(
                b + alphas[part].to(e).view(-1, *([1] * (e.dim() - 1))) * (e - b) for b, e in zip(begins, ends)
            )
        _, grads, was_tuple = layer_gradients(
            objective, points, layer, attribute_to_layer_input, repeats=steps, grad_kwargs=grad_kwargs
        )
        contribs, outputs = grads, None
        if needs_ends:
            rows = begins if fixed is not None else tuple(torch.cat([e, b]) for e, b in zip(ends, begins))
            acts, _, outputs = layer_activations(
                objective, rows, layer, use_input, steps if fixed is not None else 2 * steps, with_target
            )
            if fixed is not None:
                acts = tuple(torch.cat([repeat_rows(a, steps), b]) for a, b in zip(fixed[0], acts))
                if fixed[2] is not None and outputs is not None:  # (with_target)
                    outputs = torch.cat([repeat_rows(fixed[2], steps), outputs])
            if multiply_by_inputs:
                contribs = tuple(g * (a[: steps * n] - a[steps * n :]) for g, a in zip(grads, acts))
        _accumulate(totals, tuple(c.view(steps, n, *c.shape[1:]).sum(0) for c in contribs))
        if return_convergence_delta:
            assert outputs is not None  # with_target is return_convergence_delta
            row_deltas.append(convergence_delta(contribs, outputs[steps * n :], outputs[: steps * n]))

    run_chunked(n_samples, sample, rows_per_item=n, internal_batch_size=None, device=inputs[0].device)
    attrs = tuple(t / n_samples for t in totals)
    if not return_convergence_delta:
        return attrs, None, was_tuple
    return attrs, torch.cat(row_deltas).view(n_samples, n).t().reshape(-1), was_tuple
