"""Rule-based backpropagation: DeepLift, DeepLiftShap (at the inputs or at a layer), guided backprop,
deconvolution, guided GradCAM."""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attribution._internal.autograd import grad_enabled, gradients, layer_gradients
from attribution._internal.canonical import Objective, describe
from attribution._internal.checks import ArgumentError
from attribution._internal.chunking import run_chunked
from attribution._internal.rules import DeepLiftRules, ReLURules, deconvolution_rule, guided_rule
from attribution.functional.layer.gradient import layer_gradcam
from attribution.functional.path import convergence_delta


@contextmanager
def batch_norm_in_eval(model: Callable[..., Any]) -> Iterator[None]:
    """Batch statistics would let examples (and references) influence each other; use running ones."""
    modules = model.modules() if isinstance(model, nn.Module) else ()
    norms = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.training = False
    try:
        yield
    finally:
        for m in norms:
            m.training = True


def _forward_under(objective: Objective, mode: Callable[[], torch.overrides.TorchFunctionMode]) -> Objective:
    """The objective with ``mode`` active during the model's forward only (backward runs the rules' own code),
    and batch normalisation in eval mode."""
    forward_func = objective.forward_func

    def forward(*args: Any) -> Tensor:
        with mode(), batch_norm_in_eval(forward_func):
            return forward_func(*args)

    return dataclasses.replace(objective, forward_func=forward)


UNEXPLAINED_TOLERANCE = 1e-3
"""Share of ``f(x) - f(baseline)`` that attributions may miss before DeepLift warns."""


def _forward_with_rules(objective: Objective, rules: DeepLiftRules, n_inputs: int) -> Objective:
    """The objective with DeepLift's rules active during the model's forward, tracking the stacked inputs."""
    forward_func = objective.forward_func

    def forward(*args: Any) -> Tensor:
        with rules, batch_norm_in_eval(forward_func):
            rules.track(*args[:n_inputs])
            return forward_func(*args)

    return dataclasses.replace(objective, forward_func=forward)


@dataclasses.dataclass
class _DeepLiftPass:
    """One forward and backward of ``[inputs; baselines]``, read at the inputs or at a layer."""

    multipliers: tuple[Tensor, ...]
    ends: tuple[Tensor, ...]  # what is attributed: the inputs, or the layer's activations for them
    starts: tuple[Tensor, ...]  # its reference: the baselines, or the layer's activations for them
    contributions: tuple[Tensor, ...]  # multipliers * (ends - starts)
    start: Tensor  # f(baseline) per row
    end: Tensor  # f(input) per row
    unruled: set[str]
    was_tuple: bool = False  # the layer produced (or took) a tuple


class _Recording:
    """An objective that keeps its last target values (``layer_gradients`` returns only the gradients)."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.values: Tensor | None = None

    def __call__(self, inputs: tuple[Tensor, ...], repeats: int = 1) -> Tensor:
        values = self.objective(inputs, repeats)
        self.values = values.detach()
        return values


@dataclasses.dataclass(frozen=True)
class _AtLayer:
    """Where a layer DeepLift reads its multipliers."""

    layer: nn.Module
    use_input: bool = False
    grad_kwargs: Mapping[str, Any] | None = None


def _deep_lift_pass(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    repeats: int,
    eps: float,
    at: _AtLayer | None = None,
) -> _DeepLiftPass:
    """DeepLift's multipliers at the inputs, or (``at``) at a layer's output or input.

    At a layer, the rules run everywhere as for the inputs, and the layer's
    activations for the stacked batch are made leaves: their gradient is the
    multiplier of everything downstream, as Captum reads it.
    """
    rows = inputs[0].shape[0]
    with grad_enabled():  # inference tensors become normal ones, so the graph may save them
        stacked = tuple(torch.cat([x.detach(), b.expand_as(x).to(x)]) for x, b in zip(inputs, baselines))
    seed = torch.cat([torch.ones(rows), torch.zeros(rows)]).to(inputs[0].device)
    rules = DeepLiftRules(eps)
    ruled = _forward_with_rules(objective, rules, len(inputs))
    if at is None:
        grads, outputs = gradients(ruled, stacked, 2 * repeats, seed)
        ends, starts, was_tuple = tuple(x.detach() for x in inputs), baselines, False
    else:
        recording = _Recording(ruled)
        acts, grads, was_tuple = layer_gradients(
            recording, stacked, at.layer, at.use_input, 2 * repeats, seed, grad_kwargs=at.grad_kwargs
        )
        assert recording.values is not None  # layer_gradients ran the objective
        outputs = recording.values
        ends, starts = tuple(a[:rows] for a in acts), tuple(a[rows:] for a in acts)
    multipliers = tuple(g[:rows] for g in grads)
    contributions = tuple(m * (e - s) for m, e, s in zip(multipliers, ends, starts))
    return _DeepLiftPass(
        multipliers, ends, starts, contributions, outputs[rows:], outputs[:rows], rules.unruled, was_tuple
    )


def _warn_if_incomplete(delta: Tensor, start: Tensor, end: Tensor, unruled: set[str]) -> None:
    """One warning when attributions leave more than a tolerance of ``f(x) - f(baseline)`` unexplained.

    Float rounding is allowed for: a thousand ulps of the outputs; and a difference below the tolerance
    times the outputs' size counts as that size.
    """
    size = (start.abs() + end.abs()).to(delta)
    rounding = 1e3 * torch.finfo(delta.dtype).eps * size
    # A difference far below the outputs' size is itself rounding-level: a share of it means nothing.
    difference = torch.maximum((end - start).to(delta).abs(), UNEXPLAINED_TOLERANCE * size)
    unexplained = delta.abs() - rounding
    share = (unexplained / difference).nan_to_num(0.0, posinf=math.inf).max()
    if not share > UNEXPLAINED_TOLERANCE:  # one host sync per call, for the warning only
        return
    worst = min(float(share), 1.0)
    ops = ", ".join(sorted(unruled)) if unruled else "none seen; does every op keep the batch on dim 0?"
    warnings.warn(
        f"DeepLift: attributions explain {100 * (1 - worst):.3g}% of f(x) - f(baseline); {100 * worst:.3g}% is "
        f"left unexplained (worst example) by ops without an exact rule ({ops})",
        UserWarning,
        stacklevel=5,  # the user's call: _warn_if_incomplete, _single or _averaged, the core function, attribute
    )


CustomAttribution = Callable[..., Tensor | tuple[Tensor, ...]]
"""Captum's ``custom_attribution_func``: ``f(multipliers[, inputs[, baselines]])`` -> attributions (tuples)."""


def _custom_attributions(
    func: CustomAttribution, multipliers: tuple[Tensor, ...], ends: tuple[Tensor, ...], starts: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """``func`` applied as Captum applies it: to as many of (multipliers, inputs, baselines) as it takes;
    at a layer, "inputs" and "baselines" are the layer's activations for them."""
    parameters = inspect.signature(func).parameters.values()
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    count = 3 if variadic else len(parameters)
    if not 1 <= count <= 3:
        raise ArgumentError(f"custom_attribution_func: expected 1 to 3 parameters, got {count}")
    arguments = (multipliers, ends, tuple(s.expand_as(e) for s, e in zip(starts, ends)))
    result = func(*arguments[:count])
    attrs = (result,) if isinstance(result, Tensor) else tuple(result) if isinstance(result, (tuple, list)) else None
    if (
        attrs is None
        or len(attrs) != len(ends)
        or any(not isinstance(a, Tensor) or a.shape != e.shape for a, e in zip(attrs, ends))
    ):
        shapes = [tuple(e.shape) for e in ends]
        raise ArgumentError(
            f"custom_attribution_func: expected a tuple of tensors shaped like the attributed inputs or layer "
            f"activations {shapes}, got {describe(result)}"
        )
    return attrs


def _attributions(
    result: _DeepLiftPass, multiply_by_inputs: bool, custom: CustomAttribution | None
) -> tuple[Tensor, ...]:
    if custom is not None:
        return _custom_attributions(custom, result.multipliers, result.ends, result.starts)
    return result.contributions if multiply_by_inputs else result.multipliers


def _single(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    repeats: int,
    custom: CustomAttribution | None,
    at: _AtLayer | None,
    *,
    multiply_by_inputs: bool,
    return_convergence_delta: bool,
    eps: float,
) -> tuple[tuple[Tensor, ...], Tensor | None, bool]:
    """DeepLift against one baseline per row, at the inputs or ``at`` a layer: ``(attrs, delta, was_tuple)``."""
    result = _deep_lift_pass(objective, inputs, baselines, repeats, eps, at)
    complete = convergence_delta(result.contributions, result.start, result.end)
    _warn_if_incomplete(complete, result.start, result.end, result.unruled)
    attrs = _attributions(result, multiply_by_inputs, custom)
    if not return_convergence_delta:
        return attrs, None, result.was_tuple
    delta = complete if attrs is result.contributions else convergence_delta(attrs, result.start, result.end)
    return attrs, delta, result.was_tuple


def deep_lift(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    *,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    repeats: int = 1,
    eps: float = 1e-10,
    custom_attribution_func: CustomAttribution | None = None,
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """DeepLift (Rescale rule, and exact rules for products, norms, attention and pooling; see
    ``attribution/_internal/rules.py``), from one forward and one backward of ``[inputs; baselines]``.

    Warns (a ``UserWarning``, once) when the attributions leave more than
    0.1% (``UNEXPLAINED_TOLERANCE``) of ``f(x) - f(baseline)`` unexplained, naming
    the ops that had no rule.

    Args:
        inputs: ``repeats`` stacked copies of the batch (``n * repeats`` rows).
        baselines: references broadcastable to ``inputs``.
        repeats: how many copies of the objective's batch ``inputs`` holds.
        eps: differences below this use the gradient instead of the secant.
        custom_attribution_func: attributions from the multipliers (and the inputs and baselines)
            instead of ``multipliers * (inputs - baselines)``, as in Captum.

    Returns:
        ``(attributions, delta)``; the delta (per row) comes from the same
        forward, so it costs nothing extra.
    """
    attrs, delta, _ = _single(
        objective,
        inputs,
        baselines,
        repeats,
        custom_attribution_func,
        None,
        multiply_by_inputs=multiply_by_inputs,
        return_convergence_delta=return_convergence_delta,
        eps=eps,
    )
    return attrs, delta


def layer_deep_lift(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    attribute_to_layer_input: bool = False,
    eps: float = 1e-10,
    custom_attribution_func: CustomAttribution | None = None,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], Tensor | None, bool]:
    """DeepLift's multipliers at a layer's output (or input), times ``a(inputs) - a(baselines)``.

    The same single forward and backward of ``[inputs; baselines]`` with the
    rules as :func:`deep_lift`, differentiated with respect to the layer's
    activations.  Where the ops downstream of the layer have exact rules, the
    attributions sum to ``f(x) - f(baseline)``; otherwise a warning says how
    much is missing, as for :func:`deep_lift`.  Inputs may be token ids when
    the layer sits after the embedding.

    Returns:
        ``(attributions, delta, layer_returned_tuple)``; the attributions are
        shaped like the activations, ``delta`` is None unless requested.

    Raises:
        ValueError: the layer does not run exactly once per forward.
    """
    at = _AtLayer(layer, attribute_to_layer_input, grad_kwargs)
    return _single(
        objective,
        inputs,
        baselines,
        1,
        custom_attribution_func,
        at,
        multiply_by_inputs=multiply_by_inputs,
        return_convergence_delta=return_convergence_delta,
        eps=eps,
    )


def _averaged(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baseline_distribution: tuple[Tensor, ...],
    custom: CustomAttribution | None,
    at: _AtLayer | None,
    *,
    multiply_by_inputs: bool,
    return_convergence_delta: bool,
    eps: float,
) -> tuple[tuple[Tensor, ...], Tensor | None, bool]:
    """DeepLift against every baseline row, averaged; chunks of baselines sized to the memory budget."""
    n = inputs[0].shape[0]
    k = baseline_distribution[0].shape[0]
    totals: list[Tensor] = []
    checks: list[tuple[Tensor, Tensor, Tensor]] = []
    deltas: list[Tensor] = []
    unruled: set[str] = set()
    was_tuple = False

    def attribute(lo: int, hi: int) -> None:
        nonlocal was_tuple
        copies = hi - lo
        repeated = tuple(x.detach().repeat(copies, *([1] * (x.dim() - 1))) for x in inputs)
        references = tuple(b[lo:hi].repeat_interleave(n, dim=0) for b in baseline_distribution)
        result = _deep_lift_pass(objective, repeated, references, copies, eps, at)
        attrs = _attributions(result, multiply_by_inputs, custom)
        parts = tuple(a.view(copies, n, *a.shape[1:]).sum(0) for a in attrs)
        if totals:
            for total, part in zip(totals, parts):
                total += part
        else:
            totals.extend(parts)
        checks.append((convergence_delta(result.contributions, result.start, result.end), result.start, result.end))
        unruled.update(result.unruled)
        was_tuple = result.was_tuple
        if return_convergence_delta:
            deltas.append(convergence_delta(attrs, result.start, result.end).view(copies, n))

    run_chunked(k, attribute, rows_per_item=2 * n, internal_batch_size=None, device=inputs[0].device)
    complete, start, end = (torch.cat(parts) for parts in zip(*checks))
    _warn_if_incomplete(complete, start, end, unruled)
    attrs = tuple(t / k for t in totals)
    return attrs, (torch.cat(deltas).t().reshape(-1) if deltas else None), was_tuple


def deep_lift_shap(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baseline_distribution: tuple[Tensor, ...],
    *,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    eps: float = 1e-10,
    custom_attribution_func: CustomAttribution | None = None,
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """DeepLift of every input against every baseline, averaged over the baselines.

    Baselines are processed in chunks sized to the memory budget, so memory
    stays bounded however many baselines there are.  Warns once, as
    :func:`deep_lift` does, over all (example, baseline) pairs.

    Returns:
        ``(attributions, delta)``; the delta has one entry per (example,
        baseline), example-major.
    """
    attrs, delta, _ = _averaged(
        objective,
        inputs,
        baseline_distribution,
        custom_attribution_func,
        None,
        multiply_by_inputs=multiply_by_inputs,
        return_convergence_delta=return_convergence_delta,
        eps=eps,
    )
    return attrs, delta


def layer_deep_lift_shap(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baseline_distribution: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    attribute_to_layer_input: bool = False,
    eps: float = 1e-10,
    custom_attribution_func: CustomAttribution | None = None,
    grad_kwargs: Mapping[str, Any] | None = None,
) -> tuple[tuple[Tensor, ...], Tensor | None, bool]:
    """:func:`layer_deep_lift` against every baseline row, averaged (as :func:`deep_lift_shap`).

    Returns:
        ``(attributions, delta, layer_returned_tuple)``; the delta has one
        entry per (example, baseline), example-major.
    """
    at = _AtLayer(layer, attribute_to_layer_input, grad_kwargs)
    return _averaged(
        objective,
        inputs,
        baseline_distribution,
        custom_attribution_func,
        at,
        multiply_by_inputs=multiply_by_inputs,
        return_convergence_delta=return_convergence_delta,
        eps=eps,
    )


def guided_backprop(objective: Objective, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Gradient where every ReLU passes back only positive gradients, and only where it was active."""
    grads, _ = gradients(_forward_under(objective, lambda: ReLURules(guided_rule)), inputs)
    return grads


def deconvolution(objective: Objective, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Gradient where every ReLU passes back only positive gradients, whatever its input."""
    grads, _ = gradients(_forward_under(objective, lambda: ReLURules(deconvolution_rule)), inputs)
    return grads


def guided_gradcam(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    *,
    interpolate_mode: str = "nearest",
    attribute_to_layer_input: bool = False,
) -> tuple[Tensor, ...]:
    """Guided backprop times the layer's (rectified) GradCAM upsampled to each input.

    Inputs whose spatial rank differs from the layer's get an empty tensor, with one warning, as in
    Captum: there is no map to upsample onto them.

    Raises:
        ValueError: an ``interpolate_mode`` that ``torch.nn.functional.interpolate`` has no rule for at the
            maps' rank.
    """
    (cam, *_), _ = layer_gradcam(
        objective,
        inputs,
        layer,
        attribute_to_layer_input=attribute_to_layer_input,
        relu_attributions=True,
        refuse_tokens=False,  # token maps get an empty tensor and the warning below, as in Captum
    )
    guided = guided_backprop(objective, inputs)
    results = []
    for g in guided:
        if g.dim() != cam.dim():
            results.append(g.new_empty(0))
            continue
        try:
            upsampled = F.interpolate(cam, size=g.shape[2:], mode=interpolate_mode)
        except (NotImplementedError, ValueError) as error:
            raise ArgumentError(
                f"interpolate_mode: {interpolate_mode!r} cannot upsample {cam.dim() - 2}-d maps "
                f"(torch.nn.functional.interpolate: {error})"
            ) from None
        results.append(g * upsampled)
    if any(r.numel() == 0 for r in results):
        warnings.warn(
            f"GuidedGradCam: the layer's maps have {cam.dim() - 2} spatial dimensions; inputs with another "
            f"number get an empty tensor",
            UserWarning,
            stacklevel=4,  # the user's call: guided_gradcam, attribute
        )
    return tuple(results)
