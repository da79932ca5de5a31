"""Rule-based backpropagation: DeepLift, DeepLiftShap, guided backprop, deconvolution, guided GradCAM."""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attribution._autograd import gradients
from attribution._canonical import Objective, describe
from attribution._checks import ArgumentError
from attribution._chunking import run_chunked
from attribution._rule_ops import deconvolution_rule, guided_rule
from attribution._rules import DeepLiftRules, ReLURules
from attribution.functional.layer import layer_gradcam
from attribution.functional.path import convergence_delta


@contextmanager
def _batch_norm_in_eval(model: Callable) -> Iterator[None]:
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

    def forward(*args):
        with mode(), _batch_norm_in_eval(forward_func):
            return forward_func(*args)

    return dataclasses.replace(objective, forward_func=forward)


UNEXPLAINED_TOLERANCE = 1e-3
"""Share of ``f(x) - f(baseline)`` that attributions may miss before DeepLift warns."""


def _forward_with_rules(objective: Objective, rules: DeepLiftRules, n_inputs: int) -> Objective:
    """The objective with DeepLift's rules active during the model's forward, tracking the stacked inputs."""
    forward_func = objective.forward_func

    def forward(*args):
        with rules, _batch_norm_in_eval(forward_func):
            rules.track(*args[:n_inputs])
            return forward_func(*args)

    return dataclasses.replace(objective, forward_func=forward)


@dataclasses.dataclass
class _DeepLiftPass:
    """One forward and backward of ``[inputs; baselines]``."""

    multipliers: tuple[Tensor, ...]
    contributions: tuple[Tensor, ...]  # multipliers * (inputs - baselines)
    start: Tensor  # f(baseline) per row
    end: Tensor  # f(input) per row
    unruled: set[str]


def _deep_lift_pass(
    objective: Objective, inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...], repeats: int, eps: float
) -> _DeepLiftPass:
    rows = inputs[0].shape[0]
    stacked = tuple(torch.cat([x.detach(), b.expand_as(x).to(x)]) for x, b in zip(inputs, baselines))
    seed = torch.cat([torch.ones(rows), torch.zeros(rows)]).to(inputs[0].device)
    rules = DeepLiftRules(eps)
    grads, outputs = gradients(_forward_with_rules(objective, rules, len(inputs)), stacked, 2 * repeats, seed)
    multipliers = tuple(g[:rows] for g in grads)
    contributions = tuple(m * (x.detach() - b) for m, x, b in zip(multipliers, inputs, baselines))
    return _DeepLiftPass(multipliers, contributions, outputs[rows:], outputs[:rows], rules.unruled)


def _warn_if_incomplete(delta: Tensor, start: Tensor, end: Tensor, unruled: set[str]) -> None:
    """One warning when attributions leave more than a tolerance of ``f(x) - f(baseline)`` unexplained.

    Float rounding is allowed for: a thousand ulps of the outputs.
    """
    rounding = 1e3 * torch.finfo(delta.dtype).eps * (start.abs() + end.abs())
    difference = (end - start).to(delta)
    unexplained = delta.abs() - rounding.to(delta)
    share = (unexplained / difference.abs()).nan_to_num(0.0, posinf=math.inf).max()
    if not share > UNEXPLAINED_TOLERANCE:  # one host sync per call, for the warning only
        return
    share = min(float(share), 1.0)
    ops = ", ".join(sorted(unruled)) if unruled else "none seen; does every op keep the batch on dim 0?"
    warnings.warn(
        f"DeepLift: attributions explain {100 * (1 - share):.3g}% of f(x) - f(baseline); {100 * share:.3g}% is "
        f"left unexplained (worst example) by ops without an exact rule ({ops})",
        UserWarning,
        stacklevel=4,
    )


CustomAttribution = Callable[..., Tensor | tuple[Tensor, ...]]
"""Captum's ``custom_attribution_func``: ``f(multipliers[, inputs[, baselines]])`` -> attributions (tuples)."""


def _custom_attributions(
    func: CustomAttribution, multipliers: tuple[Tensor, ...], inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """``func`` applied as Captum applies it: to as many of (multipliers, inputs, baselines) as it takes."""
    parameters = inspect.signature(func).parameters.values()
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    count = 3 if variadic else len(parameters)
    if not 1 <= count <= 3:
        raise ArgumentError(f"custom_attribution_func: expected 1 to 3 parameters, got {count}")
    arguments = (
        multipliers,
        tuple(x.detach() for x in inputs),
        tuple(b.expand_as(x) for b, x in zip(baselines, inputs)),
    )
    result = func(*arguments[:count])
    attrs = (result,) if isinstance(result, Tensor) else tuple(result) if isinstance(result, (tuple, list)) else None
    if (
        attrs is None
        or len(attrs) != len(inputs)
        or any(not isinstance(a, Tensor) or a.shape != x.shape for a, x in zip(attrs, inputs))
    ):
        shapes = [tuple(x.shape) for x in inputs]
        raise ArgumentError(
            f"custom_attribution_func: expected a tuple of tensors shaped like the inputs {shapes}, "
            f"got {describe(result)}"
        )
    return attrs


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
    :mod:`attribution._rules`), from one forward and one backward of ``[inputs; baselines]``.

    Warns (a ``UserWarning``, once) when the attributions leave more than
    :data:`UNEXPLAINED_TOLERANCE` of ``f(x) - f(baseline)`` unexplained, naming
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
    result = _deep_lift_pass(objective, inputs, baselines, repeats, eps)
    complete = convergence_delta(result.contributions, result.start, result.end)
    _warn_if_incomplete(complete, result.start, result.end, result.unruled)
    attrs = _attributions(result, inputs, baselines, multiply_by_inputs, custom_attribution_func)
    if not return_convergence_delta:
        return attrs, None
    return attrs, (complete if attrs is result.contributions else convergence_delta(attrs, result.start, result.end))


def _attributions(
    result: _DeepLiftPass,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    multiply_by_inputs: bool,
    custom: CustomAttribution | None,
) -> tuple[Tensor, ...]:
    if custom is not None:
        return _custom_attributions(custom, result.multipliers, inputs, baselines)
    return result.contributions if multiply_by_inputs else result.multipliers


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
    n = inputs[0].shape[0]
    k = baseline_distribution[0].shape[0]
    totals = [torch.zeros_like(x) for x in inputs]
    checks: list[tuple[Tensor, Tensor, Tensor]] = []
    deltas: list[Tensor] = []
    unruled: set[str] = set()

    def attribute(lo: int, hi: int) -> None:
        copies = hi - lo
        repeated = tuple(x.detach().repeat(copies, *([1] * (x.dim() - 1))) for x in inputs)
        references = tuple(b[lo:hi].repeat_interleave(n, dim=0) for b in baseline_distribution)
        result = _deep_lift_pass(objective, repeated, references, copies, eps)
        attrs = _attributions(result, repeated, references, multiply_by_inputs, custom_attribution_func)
        for total, a in zip(totals, attrs):
            total += a.view(copies, n, *a.shape[1:]).sum(0)
        checks.append((convergence_delta(result.contributions, result.start, result.end), result.start, result.end))
        unruled.update(result.unruled)
        if return_convergence_delta:
            deltas.append(convergence_delta(attrs, result.start, result.end).view(copies, n))

    run_chunked(k, attribute, rows_per_item=2 * n, internal_batch_size=None, device=inputs[0].device)
    _warn_if_incomplete(*(torch.cat(parts) for parts in zip(*checks)), unruled)
    attrs = tuple(t / k for t in totals)
    return attrs, (torch.cat(deltas).t().reshape(-1) if deltas else None)


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
) -> tuple[Tensor | None, ...]:
    """Guided backprop times the layer's (rectified) GradCAM upsampled to each input.

    Inputs whose spatial rank differs from the layer's get ``None``, as there
    is no map to upsample onto them.
    """
    (cam, *_), _ = layer_gradcam(
        objective, inputs, layer, attribute_to_layer_input=attribute_to_layer_input, relu_attributions=True
    )
    guided = guided_backprop(objective, inputs)
    results = []
    for g in guided:
        if g.dim() != cam.dim():
            results.append(None)
            continue
        results.append(g * F.interpolate(cam, size=g.shape[2:], mode=interpolate_mode))
    return tuple(results)
