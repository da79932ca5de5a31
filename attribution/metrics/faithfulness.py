"""Faithfulness by perturbation: deletion and insertion curves, and faithfulness correlation.

* :func:`deletion_curve` (pixel flipping, Samek et al., 2017; RISE's deletion, Petsiuk et al., 2018) sets
  the features to the baseline in order of decreasing attribution and records the target's score after each
  step; :func:`insertion_curve` starts from the baseline and reveals them in the same order.  Both return a
  :class:`PerturbationCurve`; :func:`area_under_curve` turns it into one score per example (a faithful
  explanation gives a small deletion area and a large insertion area).
* :func:`faithfulness_correlation` (Bhatt et al., 2020) correlates, over random subsets of features, the sum
  of the attributions in the subset with the drop of the target's score when the subset is set to the
  baseline.

A *feature* is one element of the attributions: pass attributions shaped like the input to move every
input element on its own, or maps that broadcast to it (``(N, 1, H, W)`` for a ``(N, C, H, W)`` image, the
attribution summed over channels) to move the channels of a pixel together.  A ``feature_mask`` of integer
ids (broadcasting to the input, as in :class:`~attribution.FeatureAblation`) groups input elements into
features instead; a group's attribution is the sum of the attributions of its elements (a map value counts
once however many input elements it covers).  Ids are taken over the whole mask; a group that is empty in
one example removes nothing there.

The metrics take one input tensor.  They never touch the global random generator or the model's mode, and
the perturbed copies of the whole batch go through the model ``perturbations_per_eval`` copies at a time,
which bounds memory but never changes the result.  Left to None on CPU, it keeps the model's widest tensor
under the size past which the allocator's page faults cost more than the arithmetic, measured once per model
and kind of input on the first (unperturbed) forward, in near-equal forwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from attribution._internal import canonical as canon
from attribution._internal.canonical import BaselineType, Objective, TargetType, TensorOrTuple
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution._internal.chunking import balanced_chunks, copies_per_forward
from attribution.functional.perturbation import auto_perturbations_per_eval


class PerturbationCurve(NamedTuple):
    """The target's score as features are deleted or inserted: a named tuple ``(values, fractions)``."""

    values: Tensor
    """``(N, K + 1)`` scores, column ``k`` after ``k`` steps (column 0: the input for deletion, the baseline
    for insertion)."""
    fractions: Tensor
    """``(K + 1,)`` share of the features moved after each step, from 0 to 1."""


def deletion_curve(
    forward_func: Callable[..., Tensor],
    inputs: TensorOrTuple,
    attributions: Tensor,
    target: TargetType = None,
    baselines: BaselineType = None,
    additional_forward_args: Any = None,
    *,
    feature_mask: Tensor | None = None,
    n_steps: int | None = None,
    step_size: int | None = None,
    perturbations_per_eval: int | None = None,
) -> PerturbationCurve:
    """Scores as the most important features are set to the baseline, one step at a time.

    Features are ranked by decreasing attribution (ties in index order: a stable sort); after step ``k``
    the first ``k * G // n_steps`` of the ``G`` features (or ``min(k * step_size, G)``) hold the baseline.

    Args:
        forward_func: the model.
        inputs: one tensor with the batch in dim 0 (or a tuple holding one).
        attributions: shaped like ``inputs`` or broadcasting to it with the same batch (see the module
            docstring: ``(N, 1, H, W)`` moves the channels of a pixel together).
        target: which output to score (see :meth:`~attribution.Saliency.attribute`); None for a model with
            one output per example.
        baselines: what a deleted feature becomes: a number, or a tensor that broadcasts to the input
            (None: 0).
        additional_forward_args: extra arguments passed to the model.
        feature_mask: integer ids grouping input elements into features, broadcasting to the input.
        n_steps: number of steps ``K`` (at most the number of features).
        step_size: features per step instead (the last step may move fewer); with neither, one feature
            per step, as in pixel flipping.
        perturbations_per_eval: perturbed copies of the batch per forward; None sizes it for the device.

    Returns:
        A :class:`PerturbationCurve`; :func:`area_under_curve` makes one score per example of it.

    Raises:
        TypeError: a non-callable model, a tuple of several inputs, non-tensor attributions or mask.
        ValueError: shapes that do not broadcast to the input, bad step counts, or a bad target.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution.metrics import area_under_curve, deletion_curve
        >>> model = nn.Linear(4, 1, bias=False)
        >>> _ = model.weight.data.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        >>> x = torch.ones(1, 4)
        >>> curve = deletion_curve(model, x, x * model.weight.data)  # exact attributions: 4, 3, 2, 1
        >>> curve.values
        tensor([[10.,  6.,  3.,  1.,  0.]])
        >>> area_under_curve(curve)
        tensor([3.7500])
    """
    return _curve(
        forward_func,
        inputs,
        attributions,
        target,
        baselines,
        additional_forward_args,
        feature_mask,
        n_steps,
        step_size,
        perturbations_per_eval,
        insertion=False,
    )


def insertion_curve(
    forward_func: Callable[..., Tensor],
    inputs: TensorOrTuple,
    attributions: Tensor,
    target: TargetType = None,
    baselines: BaselineType = None,
    additional_forward_args: Any = None,
    *,
    feature_mask: Tensor | None = None,
    n_steps: int | None = None,
    step_size: int | None = None,
    perturbations_per_eval: int | None = None,
) -> PerturbationCurve:
    """Scores as the most important features are revealed on the baseline, one step at a time.

    The mirror of :func:`deletion_curve`, with the same arguments: column 0 scores the baseline, column ``k``
    the baseline with the first features (in order of decreasing attribution) taken from the input.

    Returns:
        A :class:`PerturbationCurve`; :func:`area_under_curve` makes one score per example of it.

    Raises:
        TypeError: as :func:`deletion_curve`.
        ValueError: as :func:`deletion_curve`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution.metrics import area_under_curve, insertion_curve
        >>> model = nn.Linear(4, 1, bias=False)
        >>> _ = model.weight.data.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        >>> x = torch.ones(1, 4)
        >>> curve = insertion_curve(model, x, x * model.weight.data, n_steps=2)
        >>> curve.values, curve.fractions
        (tensor([[ 0.,  7., 10.]]), tensor([0.0000, 0.5000, 1.0000]))
        >>> area_under_curve(curve)
        tensor([6.])
    """
    return _curve(
        forward_func,
        inputs,
        attributions,
        target,
        baselines,
        additional_forward_args,
        feature_mask,
        n_steps,
        step_size,
        perturbations_per_eval,
        insertion=True,
    )


def area_under_curve(curve: PerturbationCurve | Tensor, fractions: Tensor | None = None) -> Tensor:
    """Area under each curve by the trapezoid rule over the share of features moved, from 0 to 1.

    The area is the curve's mean height: divide by the unperturbed score (``values[:, 0]`` of a deletion
    curve) for a relative one.  Quantus's ``calculate_auc`` integrates with unit spacing instead (and
    without the unperturbed point), so its areas are ours times the number of steps, roughly.

    Args:
        curve: a :class:`PerturbationCurve`, or curve values ``(N, K + 1)``.
        fractions: ``(K + 1,)`` positions of the points in [0, 1]; those of ``curve`` when it is a
            :class:`PerturbationCurve`, evenly spaced when None.

    Returns:
        A tensor of shape ``(N,)``.

    Raises:
        TypeError: a curve that is not a tensor.
        ValueError: fewer than two points, or fractions of another length.

    Example:
        >>> import torch
        >>> from attribution.metrics import area_under_curve
        >>> area_under_curve(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        tensor([0.5000, 1.0000])
    """
    if isinstance(curve, PerturbationCurve):
        values, fractions = curve.values, curve.fractions if fractions is None else fractions
    else:
        values = curve
    if not isinstance(values, Tensor):
        raise ArgumentTypeError(f"curve: expected a PerturbationCurve or a tensor, got {canon.describe(values)}")
    if values.dim() != 2 or values.shape[1] < 2:
        raise ArgumentError(f"curve: expected values of shape (N, K + 1) with K >= 1, got {tuple(values.shape)}")
    if fractions is None:
        fractions = torch.linspace(0, 1, values.shape[1], device=values.device)
    if not isinstance(fractions, Tensor) or fractions.shape != (values.shape[1],):
        raise ArgumentError(
            f"fractions: expected a tensor of shape ({values.shape[1]},), one per point, "
            f"got {canon.describe(fractions)}"
        )
    area: Tensor = torch.trapezoid(values, fractions.to(values), dim=1)
    return area


def faithfulness_correlation(
    forward_func: Callable[..., Tensor],
    inputs: TensorOrTuple,
    attributions: Tensor,
    target: TargetType = None,
    baselines: BaselineType = None,
    additional_forward_args: Any = None,
    *,
    n_perturb_samples: int = 100,
    subset_size: int = 224,
    feature_mask: Tensor | None = None,
    seed: int | None = None,
    perturbations_per_eval: int | None = None,
) -> Tensor:
    """Pearson correlation between attribution sums and score drops over random feature subsets.

    For each of ``n_perturb_samples`` subsets of ``subset_size`` features, drawn uniformly without
    replacement, the sum of the subset's attributions is paired with ``f(x) - f(x with the subset set to
    the baseline)``; the score is the correlation of the pairs.  The subsets are drawn once per call from a
    generator seeded by ``seed`` and shared by all examples (a paired design: an example's score does not
    depend on the batch it is in).  Quantus's ``FaithfulnessCorrelation`` draws separate subsets per
    example from numpy's global generator.

    Args:
        forward_func: the model.
        inputs: one tensor with the batch in dim 0 (or a tuple holding one).
        attributions: shaped like ``inputs`` or broadcasting to it (see the module docstring).
        target: which output to score (see :meth:`~attribution.Saliency.attribute`).
        baselines: what the features of a subset become: a number or a tensor that broadcasts to the
            input (None: 0).
        additional_forward_args: extra arguments passed to the model.
        n_perturb_samples: number of subsets (>= 2).
        subset_size: features per subset, fewer than there are features.
        feature_mask: integer ids grouping input elements into features, broadcasting to the input.
        seed: seeds the subsets' generator (a CPU ``torch.Generator``; the global one is untouched); None
            seeds it from the operating system.
        perturbations_per_eval: perturbed copies of the batch per forward; None sizes it for the device.

    Returns:
        A tensor of shape ``(N,)`` in [-1, 1]; NaN where the attribution sums or the drops do not vary
        (undefined).

    Raises:
        TypeError: as :func:`deletion_curve`.
        ValueError: shapes that do not broadcast to the input, bad counts, or a bad target.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution.metrics import faithfulness_correlation
        >>> model = nn.Linear(6, 1, bias=False)
        >>> _ = model.weight.data.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5, -1.0, 2.0]]))
        >>> x = torch.tensor([[1.0, 1.0, 2.0, -1.0, 0.5, 1.0], [2.0, 0.0, 1.0, 1.0, 1.0, -1.0]])
        >>> exact = x * model.weight.data  # the drops are the attribution sums
        >>> scores = faithfulness_correlation(model, x, exact, n_perturb_samples=20, subset_size=3, seed=0)
        >>> scores.round(decimals=4)
        tensor([1., 1.])
        >>> faithfulness_correlation(model, x, -exact, n_perturb_samples=20, subset_size=3, seed=0).round(decimals=4)
        tensor([-1., -1.])
    """
    check_int(n_perturb_samples, "n_perturb_samples", minimum=2)
    check_int(subset_size, "subset_size")
    check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ArgumentTypeError(f"seed: expected an int or None, got {canon.describe(seed)}")
    objective, x, baseline, features = _prepare(
        forward_func, inputs, attributions, target, baselines, additional_forward_args, feature_mask
    )
    if subset_size >= features.count:
        raise ArgumentError(
            f"subset_size: expected fewer than the {features.count} features (a subset of all of them leaves "
            f"nothing to correlate), got {subset_size}"
        )
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    keys = torch.rand((n_perturb_samples, features.count), generator=generator)
    chosen = keys.argsort(dim=1)[:, :subset_size]
    subsets = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, chosen, True).to(x.device)
    return correlation_of(objective, x, baseline, features, subsets, perturbations_per_eval)


# --------------------------------------------------------------------------- the core, on canonical tensors


@dataclass(frozen=True)
class Features:
    """The features of a batch: which feature each input element belongs to, and its attribution."""

    groups: Tensor
    """``(N or 1, D)`` feature index in ``[0, count)`` of each of the ``D`` elements of an example."""
    scores: Tensor
    """``(N, count)`` attribution of each feature."""
    count: int


def _prepare(
    forward_func: Callable[..., Tensor],
    inputs: TensorOrTuple,
    attributions: Any,
    target: TargetType,
    baselines: BaselineType,
    additional_forward_args: Any,
    feature_mask: Any,
) -> tuple[Objective, Tensor, Tensor, Features]:
    """The one boundary: the objective, the input, its baseline and its features, validated."""
    call = canon.canonical_call(forward_func, inputs, target, additional_forward_args)
    if len(call.inputs) != 1:
        raise ArgumentTypeError(f"inputs: expected one tensor (or a tuple of one), got {len(call.inputs)} tensors")
    x = call.inputs[0].detach()
    attr = _broadcasting(attributions, x, "attributions", per_example=True)
    if not attr.is_floating_point():
        attr = attr.float()
    baseline = canon.format_baselines(baselines, (x,))[0]
    n = x.shape[0]
    repeats = x[0].numel() // attr[0].numel()
    if feature_mask is None:
        count = attr[0].numel()
        ids = torch.arange(count, device=x.device).reshape(1, *attr.shape[1:])
        groups = ids.expand(1, *x.shape[1:]).reshape(1, -1)
        return call.objective, x, baseline, Features(groups, attr.detach().reshape(n, -1), count)
    mask = _broadcasting(feature_mask, x, "feature_mask", per_example=False)
    if mask.is_floating_point() or mask.is_complex():
        raise ArgumentTypeError(f"feature_mask: expected an integer or bool tensor, got {canon.describe(mask)}")
    ids, inverse = torch.unique(mask, return_inverse=True)
    groups = inverse.expand(*mask.shape[:1], *x.shape[1:]).reshape(mask.shape[0], -1)
    spread = attr.detach().expand(x.shape).reshape(n, -1)
    scores = torch.zeros(n, ids.numel(), dtype=spread.dtype, device=x.device)
    scores.scatter_add_(1, groups.expand(n, -1), spread)
    return call.objective, x, baseline, Features(groups, scores / repeats, ids.numel())


def _broadcasting(value: Any, x: Tensor, name: str, *, per_example: bool) -> Tensor:
    """``value`` as a tensor on ``x``'s device with ``x``'s dimensions, each 1 or ``x``'s, or an error naming it."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Tensor):
        raise ArgumentTypeError(f"{name}: expected a tensor, got {canon.describe(value)}")
    batch = "the same batch" if per_example else "a batch dimension of 1 or N"
    fits = value.dim() == x.dim() and all(v in (1, s) for v, s in zip(value.shape, x.shape))
    if not fits or (per_example and value.shape[0] != x.shape[0]):
        raise ArgumentError(
            f"{name}: expected a tensor of the input's shape {tuple(x.shape)} or one that broadcasts to it with "
            f"{batch} (e.g. {(x.shape[0], 1, *x.shape[2:])}), got shape {tuple(value.shape)}"
        )
    return value.to(x.device)


def _step_counts(count: int, n_steps: int | None, step_size: int | None, device: torch.device) -> Tensor:
    """Features moved after each step, ``(K + 1,)`` from 0 to ``count``."""
    check_int(n_steps, "n_steps", allow_none=True)
    check_int(step_size, "step_size", allow_none=True)
    if n_steps is not None and step_size is not None:
        raise ArgumentError(f"n_steps, step_size: expected one of them, got both ({n_steps} and {step_size})")
    if n_steps is not None:
        if n_steps > count:
            raise ArgumentError(f"n_steps: expected at most the number of features ({count}), got {n_steps}")
        return torch.arange(n_steps + 1, device=device) * count // n_steps
    size = 1 if step_size is None else step_size
    steps = -(-count // size)
    return (torch.arange(steps + 1, device=device) * size).clamp_max(count)


def _curve(
    forward_func: Callable[..., Tensor],
    inputs: TensorOrTuple,
    attributions: Tensor,
    target: TargetType,
    baselines: BaselineType,
    additional_forward_args: Any,
    feature_mask: Tensor | None,
    n_steps: int | None,
    step_size: int | None,
    perturbations_per_eval: int | None,
    *,
    insertion: bool,
) -> PerturbationCurve:
    check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
    objective, x, baseline, features = _prepare(
        forward_func, inputs, attributions, target, baselines, additional_forward_args, feature_mask
    )
    counts = _step_counts(features.count, n_steps, step_size, x.device)
    values = curve_of(objective, x, baseline, features, counts, perturbations_per_eval, insertion=insertion)
    return PerturbationCurve(values, counts.to(values.dtype) / features.count)


def curve_of(
    objective: Objective,
    x: Tensor,
    baseline: Tensor,
    features: Features,
    counts: Tensor,
    per_eval: int | None,
    *,
    insertion: bool = False,
) -> Tensor:
    """Curve values ``(N, len(counts))``: the first ``counts[k]`` features by decreasing attribution set to
    the baseline (deletion) or taken from ``x`` on the baseline (insertion) in column ``k``."""
    n, count = features.scores.shape
    order = features.scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(count, device=order.device).expand(n, -1))
    element_rank = rank.gather(1, features.groups.expand(n, -1)).view(x.shape)
    outputs: list[Tensor] = []

    def run(lo: int, hi: int) -> None:
        moved = element_rank < counts[lo:hi].view(-1, *(1,) * x.dim())  # (copies, N, ...)
        rows = torch.where(moved, x, baseline) if insertion else torch.where(moved, baseline, x)
        outputs.append(objective((rows.reshape(-1, *x.shape[1:]),), hi - lo).view(hi - lo, n))

    total = counts.numel()
    with torch.inference_mode():
        if per_eval is None:  # the first point, run alone, measures the model's widest tensor
            fallback = auto_perturbations_per_eval((x,), total)
            per_eval = copies_per_forward(objective.forward_func, (x,), total, fallback, lambda: run(0, 1))
        for lo, hi in balanced_chunks(len(outputs), total, per_eval):
            run(lo, hi)
    return torch.cat(outputs).T.clone()


def correlation_of(
    objective: Objective, x: Tensor, baseline: Tensor, features: Features, subsets: Tensor, per_eval: int | None
) -> Tensor:
    """Pearson correlation per example between attribution sums and score drops over ``subsets``, a
    ``(S, count)`` bool tensor (shared by all examples) or ``(N, S, count)`` (one set per example)."""
    n = x.shape[0]
    per_example = subsets if subsets.dim() == 3 else subsets.expand(n, *subsets.shape)
    samples = per_example.shape[1]
    sums = (features.scores[:, None, :] * per_example.to(features.scores)).sum(-1)  # (N, S)
    outputs = []
    with torch.inference_mode():
        measured: list[Tensor] = []
        if per_eval is None:  # the unperturbed forward measures the model's widest tensor
            fallback = auto_perturbations_per_eval((x,), samples + 1)
            measure = lambda: measured.append(objective((x,)))  # noqa: E731
            per_eval = copies_per_forward(objective.forward_func, (x,), samples, fallback, measure)
        unperturbed = measured[0] if measured else objective((x,))
        for lo, hi in balanced_chunks(0, samples, per_eval):
            removed = per_example[:, lo:hi].gather(2, features.groups.expand(n, -1)[:, None].expand(-1, hi - lo, -1))
            removed = removed.transpose(0, 1).reshape(hi - lo, *x.shape)  # (copies, N, ...)
            rows = torch.where(removed, baseline, x).reshape(-1, *x.shape[1:])
            outputs.append(objective((rows,), hi - lo).view(hi - lo, n))
        drops = (unperturbed[None] - torch.cat(outputs)).T  # (N, S)
    return _pearson(sums.to(drops), drops.clone())


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Correlation of the rows of ``a`` and ``b``; NaN where either does not vary."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    scale = (a.pow(2).sum(1) * b.pow(2).sum(1)).sqrt()
    return torch.where(
        scale > 0, (a * b).sum(1) / scale.clamp_min(torch.finfo(scale.dtype).tiny), scale.new_tensor(torch.nan)
    )
