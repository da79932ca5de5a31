"""Layer methods: attributions to the activations of a hidden layer."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attribution._autograd import (
    _check_single_run,
    capture_layer,
    grad,
    grad_enabled,
    layer_gradients,
    no_gradient_error,
    substitute_layer,
)
from attribution._canonical import Objective, repeat_rows
from attribution._checks import ArgumentError, ArgumentTypeError, check_choice, describe
from attribution._chunking import run_chunked
from attribution.functional.path import convergence_delta, endpoint_outputs, gradient_shap_draws, integration_nodes


def layer_gradcam(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    attribute_to_layer_input: bool = False,
    relu_attributions: bool = False,
    attr_dim_summation: bool = True,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    grad_kwargs: Mapping[str, Any] | None = None,
    refuse_tokens: bool = True,
) -> tuple[tuple[Tensor, ...], bool]:
    """GradCAM: activations weighted by the spatial mean of their gradients.

    Each channel's weight is the mean of the target's gradient over the
    channel's spatial positions (dims 2 and up); layers without spatial dims
    use the gradient itself.  The weighted activations are summed over
    channels unless ``attr_dim_summation`` is False.  ``reshape_transform``
    turns activations and gradients alike into ``(N, C, *spatial)`` first
    (e.g. :func:`token_grid_reshape` for ViT tokens).

    Returns:
        ``(attributions, layer_returned_tuple)``, one attribution per tensor
        the layer produced.

    Raises:
        ValueError: with ``refuse_tokens``, image inputs (``(N, C, H, W)`` or more dims) and a layer that
            gives tokens ``(N, T, D)``, without ``reshape_transform``: read as ``(N, C, L)`` they would give a
            map over the embedding dimension, not over the image.  (Guided GradCAM passes False: like
            Captum, it gives such inputs an empty tensor and a warning.)
    """
    activations, grads, was_tuple = layer_gradients(
        objective, inputs, layer, attribute_to_layer_input, grad_kwargs=grad_kwargs
    )
    if reshape_transform is None:
        if refuse_tokens:
            _check_spatial(activations, inputs[0], layer)
    else:
        activations = tuple(reshape_transform(a) for a in activations)
        grads = tuple(reshape_transform(g) for g in grads)
    cams = []
    for a, g in zip(activations, grads):
        weights = g.mean(dim=tuple(range(2, g.dim())), keepdim=True) if g.dim() > 2 else g
        cam = weights * a
        if attr_dim_summation:
            cam = cam.sum(dim=1, keepdim=True)
        cams.append(F.relu(cam) if relu_attributions else cam)
    return tuple(cams), was_tuple


def _check_spatial(activations: tuple[Tensor, ...], x: Tensor, layer: nn.Module) -> None:
    """Refuse token-shaped activations ``(N, T, D)`` of a model that takes images: GradCAM would average
    the gradient over ``D`` and sum over the tokens, a "map" over the embedding dimension.  (A 3-D
    output of a model with 1-D inputs is a 1-D convolution's ``(N, C, L)`` and stays as it is.)"""
    for a in activations:
        if a.dim() == 3 and x.dim() >= 4:
            raise ArgumentError(
                f"layer: {type(layer).__name__} outputs shape {tuple(a.shape)}, tokens (N, T, D) rather than the "
                f"spatial map (N, C, h, w) GradCAM needs for inputs of shape {tuple(x.shape)}; pass "
                f"reshape_transform=attribution.utils.{_token_grid_hint(a.shape[1], x.shape[-2], x.shape[-1])} "
                f"(h x w patches after prefix_tokens class/distillation tokens), or any callable to (N, C, h, w)"
            )


def _token_grid_hint(tokens: int, height: int, width: int) -> str:
    """``token_grid_reshape(h, w, prefix)`` with a patch grid shaped like the image, when one fits."""
    for prefix in (1, 0, 2):  # a class token (ViT), none, class and distillation tokens (DeiT)
        patches = tokens - prefix
        for rows in range(1, patches + 1):
            if patches % rows == 0 and rows * width == (patches // rows) * height and patches > 1:
                return f"token_grid_reshape({rows}, {patches // rows}, {prefix})"
    return "token_grid_reshape(h, w, prefix_tokens)"


def token_grid_reshape(height: int, width: int, prefix_tokens: int = 1) -> Callable[[Tensor], Tensor]:
    """A ``reshape_transform`` for vision-transformer tokens: ``(N, prefix + height * width, D)`` to
    ``(N, D, height, width)``, dropping the ``prefix_tokens`` leading tokens (class, distillation, ...).

    Raises (when applied):
        ValueError: the layer's output is not ``(N, prefix_tokens + height * width, D)``.
    """

    def reshape(tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != prefix_tokens + height * width:
            raise ArgumentError(
                f"reshape_transform: expected tokens (N, {prefix_tokens} + {height}*{width}, D), "
                f"got {tuple(tokens.shape)}"
            )
        grid = tokens[:, prefix_tokens:].reshape(tokens.shape[0], height, width, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    return reshape


def channels_last_reshape(maps: Tensor) -> Tensor:
    """A ``reshape_transform`` for channels-last layer outputs ``(N, *spatial, C)`` (Swin, ConvNeXt
    blocks): channels moved to dim 1."""
    return maps.movedim(-1, 1)


INTERPOLATE_MODES = {
    "nearest": None,
    "nearest-exact": None,
    "area": None,
    "linear": 1,
    "bilinear": 2,
    "bicubic": 2,
    "trilinear": 3,
}
"""``F.interpolate``'s modes and the number of spatial dims each needs (None: any)."""


def interpolate(
    layer_attribution: Tensor, interpolate_dims: int | Sequence[int], interpolate_mode: str = "nearest"
) -> Tensor:
    """Resize a layer attribution ``(N, C, *spatial)`` to ``interpolate_dims`` (e.g. the input's H, W).

    Raises:
        TypeError: ``layer_attribution`` is not a tensor, or ``interpolate_dims`` is not an int or a
            sequence of ints.
        ValueError: maps without spatial dims, sizes < 1, a number of sizes other than the maps' spatial
            dims (an int serves them all), or a mode for another number of spatial dims.
    """
    if not isinstance(layer_attribution, Tensor):
        raise ArgumentTypeError(
            f"layer_attribution: expected a tensor (N, C, *spatial), got {describe(layer_attribution)}"
        )
    spatial = layer_attribution.dim() - 2
    if spatial < 1:
        raise ArgumentError(
            f"layer_attribution: expected maps (N, C, *spatial) to resize, got shape "
            f"{tuple(layer_attribution.shape)} (a layer without spatial dims has no map)"
        )
    single = isinstance(interpolate_dims, numbers.Integral)
    sizes = [interpolate_dims] if single else interpolate_dims
    if not isinstance(sizes, Sequence) or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in sizes
    ):
        raise ArgumentTypeError(
            f"interpolate_dims: expected an int or a sequence of ints (e.g. inputs.shape[2:]), "
            f"got {describe(interpolate_dims)}"
        )
    if not sizes or any(v < 1 for v in sizes):
        raise ArgumentError(f"interpolate_dims: expected sizes >= 1, got {interpolate_dims!r}")
    if not single and len(sizes) != spatial:
        hint = ""
        if spatial == 1 and len(sizes) > 1:  # the usual way here: transformer tokens (N, T, D) read as (N, C, L)
            hint = (
                "; layer outputs of tokens (N, T, D) are no image map: give LayerGradCam "
                "reshape_transform=attribution.utils.token_grid_reshape(h, w, prefix_tokens)"
            )
        raise ArgumentError(
            f"interpolate_dims: expected {spatial} size(s) for maps of shape {tuple(layer_attribution.shape)}, "
            f"got {tuple(sizes)}{hint}"
        )
    check_choice(interpolate_mode, "interpolate_mode", INTERPOLATE_MODES)
    needed = INTERPOLATE_MODES[interpolate_mode]
    if needed is not None and needed != spatial:
        raise ArgumentError(
            f"interpolate_mode: {interpolate_mode!r} resizes maps with {needed} spatial dim(s), the maps have shape "
            f"{tuple(layer_attribution.shape)}; use 'nearest' or the mode for {spatial} dim(s)"
        )
    size = int(sizes[0]) if single else tuple(int(v) for v in sizes)
    return F.interpolate(layer_attribution, size=size, mode=interpolate_mode)


# --------------------------------------------------------------------------- activations and gradients


def _plain(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Inputs that may join an autograd graph (inference tensors are cloned); call under ``grad_enabled``."""
    return tuple(x.clone() if x.is_inference() else x.detach() for x in inputs)


def _layer_values(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    use_input: bool,
    repeats: int = 1,
    with_target: bool = False,
) -> tuple[tuple[Tensor, ...], bool, Tensor | None]:
    """The layer's output (or input) in one forward without autograd, and the target values if asked.

    Returns:
        ``(activations, was_tuple, outputs)``; ``outputs`` (the target of
        every row) is None unless ``with_target``.

    Raises:
        ValueError: if the layer does not run exactly once, or yields no float tensor.
    """
    with grad_enabled(), torch.no_grad(), capture_layer(layer, use_input) as captured:
        inputs = _plain(inputs)
        outputs = objective(inputs, repeats) if with_target else objective.forward(inputs, repeats)
        _check_single_run(layer, captured.calls)
    if not captured.activations:
        raise ArgumentError(f"layer: {type(layer).__name__} produced no floating-point tensor to attribute to")
    return tuple(a.detach() for a in captured.activations), captured.was_tuple, outputs if with_target else None


def layer_activation(
    objective: Objective, inputs: tuple[Tensor, ...], layer: nn.Module, *, attribute_to_layer_input: bool = False
) -> tuple[tuple[Tensor, ...], bool]:
    """The layer's output (or input) as the model computes it, before any in-place op downstream.

    Returns:
        ``(activations, layer_returned_tuple)``.
    """
    activations, was_tuple, _ = _layer_values(objective, inputs, layer, attribute_to_layer_input)
    return activations, was_tuple


def layer_gradient_x_activation(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    multiply_by_inputs: bool = True,
    attribute_to_layer_input: bool = False,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], bool]:
    """The target's gradient with respect to the layer's activations, times the activations.

    Returns:
        ``(attributions, layer_returned_tuple)``; the bare gradients when
        ``multiply_by_inputs`` is False.
    """
    with grad_enabled():
        inputs = _plain(inputs)
    activations, grads, was_tuple = layer_gradients(
        objective, inputs, layer, attribute_to_layer_input, grad_kwargs=grad_kwargs
    )
    attrs = tuple(g * a for g, a in zip(grads, activations)) if multiply_by_inputs else grads
    return attrs, was_tuple


# --------------------------------------------------------------------------- paths through a layer


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
    several = isinstance(layer, (list, tuple))
    layers = tuple(layer) if several else (layer,)
    n = inputs[0].shape[0]
    alphas, weights = integration_nodes(n_steps, method)
    ends = tuple(torch.cat([b.expand_as(x), x]) for b, x in zip(baselines, inputs))
    values = [
        _layer_values(objective, ends, one, attribute_to_layer_input, repeats=2, with_target=i == 0)
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
            repeated = tuple(repeat_rows(x, steps) for x in _plain(inputs))
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
        _layer_values(objective, inputs, layer, use_input, 1, with_target) if needs_ends and not any(stdevs) else None
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
            acts, _, outputs = _layer_values(
                objective, rows, layer, use_input, steps if fixed is not None else 2 * steps, with_target
            )
            if fixed is not None:
                acts = tuple(torch.cat([repeat_rows(a, steps), b]) for a, b in zip(fixed[0], acts))
                outputs = torch.cat([repeat_rows(fixed[2], steps), outputs]) if with_target else None
            if multiply_by_inputs:
                contribs = tuple(g * (a[: steps * n] - a[steps * n :]) for g, a in zip(grads, acts))
        _accumulate(totals, tuple(c.view(steps, n, *c.shape[1:]).sum(0) for c in contribs))
        if return_convergence_delta:
            row_deltas.append(convergence_delta(contribs, outputs[steps * n :], outputs[: steps * n]))

    run_chunked(n_samples, sample, rows_per_item=n, internal_batch_size=None, device=inputs[0].device)
    attrs = tuple(t / n_samples for t in totals)
    if not return_convergence_delta:
        return attrs, None, was_tuple
    return attrs, torch.cat(row_deltas).view(n_samples, n).t().reshape(-1), was_tuple
