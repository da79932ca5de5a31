"""Shapley values of feature groups: sampled over permutations, or exact over all coalitions."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from attribution._internal.canonical import Objective
from attribution._internal.checks import ArgumentError
from attribution._internal.features import FeatureMasks
from attribution.functional.perturbation import evaluate_copies

MAX_EXACT_FEATURES = 20
"""Exact Shapley values evaluate all 2^F coalitions; beyond this, sample instead."""


def shapley_value_sampling(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    n_samples: int = 25,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, ...]:
    """Shapley value estimates from ``n_samples`` random feature orders.

    Along each order, features are switched from the baseline to the input
    one at a time; each feature's estimate is the mean change of the target
    when it is added.  The orders are drawn up front from torch's global
    generator; the ``n_samples * F`` coalitions are built chunk by chunk and
    evaluated many per forward.  A forward that returns values for the
    whole batch switches features in every example at once (shared masks).
    Attributions are laid out like the forward's output (see
    :meth:`~attribution.functional.Objective.unflatten`): a first dimension of 1 for one value per
    batch.
    """
    inputs = tuple(x.detach() for x in inputs)
    device, count = inputs[0].device, features.count
    orders = torch.rand(n_samples, count, device=device).argsort(dim=1)  # (S, F): feature added at step t
    ranks = orders.argsort(dim=1)  # (S, F): step at which each feature is added

    def coalitions(lo: int, hi: int) -> tuple[Tensor, ...]:
        flat = torch.arange(lo, hi, device=device)
        present = ranks[flat // count] <= (flat % count)[:, None]  # (P, F)
        return features.perturbed(present, inputs, baselines)

    with torch.inference_mode():
        objective, empty = objective.resolve(tuple(b.expand_as(x) for x, b in zip(inputs, baselines)))
        features.check_shared(objective.aggregate)
        values = evaluate_copies(
            objective,
            inputs,
            n_samples * count,
            coalitions,
            perturbations_per_eval=perturbations_per_eval,
            progress=progress,
        ).view(-1, n_samples, count)
        before = torch.cat([empty[:, None, None].expand(-1, n_samples, 1), values[:, :, :-1]], dim=2)
        gains = values - before  # (n, S, F): gain at each step
        totals = torch.zeros(values.shape[0], count, device=device, dtype=values.dtype)
        totals.scatter_add_(1, orders.flatten()[None].expand(values.shape[0], -1), gains.flatten(1))
    return tuple(objective.unflatten(a) for a in features.spread((totals / n_samples).clone(), inputs))


def shapley_values(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, ...]:
    """Exact Shapley values from all ``2^F`` coalitions of the ``F`` feature groups.

    ``phi_i = sum over S without i of |S|! (F - |S| - 1)! / F! * (f(S + i) - f(S))``;
    they sum to ``f(inputs) - f(baselines)`` (efficiency).  A forward that
    returns values for the whole batch gets them for the batch as a whole;
    the layout is that of :func:`shapley_value_sampling`.

    Raises:
        ValueError: more than 20 features (``MAX_EXACT_FEATURES``: ``2^F`` coalitions).
    """
    count = features.count
    if count > MAX_EXACT_FEATURES:
        raise ArgumentError(
            f"feature_mask: exact Shapley values evaluate 2^F coalitions and F = {count} is too many "
            f"(at most {MAX_EXACT_FEATURES}); group the features or use ShapleyValueSampling"
        )
    inputs = tuple(x.detach() for x in inputs)
    device = inputs[0].device
    bits = 1 << torch.arange(count, device=device)

    def coalitions(lo: int, hi: int) -> tuple[Tensor, ...]:
        present = (torch.arange(lo, hi, device=device)[:, None] & bits) > 0  # coalition c has feature i iff bit i
        return features.perturbed(present, inputs, baselines)

    with torch.inference_mode():
        objective, full = objective.resolve(inputs)  # the last coalition: all features present
        features.check_shared(objective.aggregate)
        if progress is not None:
            progress(1)
        values = evaluate_copies(
            objective,
            inputs,
            2**count - 1,
            coalitions,
            perturbations_per_eval=perturbations_per_eval,
            progress=progress,
        )
        values = torch.cat([values, full[:, None]], dim=1)  # (rows, 2^F)
        sizes = torch.tensor([bin(c).count("1") for c in range(2**count)], device=device)
        dtype = torch.promote_types(values.dtype, torch.float32)  # an integer-valued forward gets fractions too
        weights = torch.tensor(
            [math.factorial(s) * math.factorial(count - s - 1) / math.factorial(count) for s in range(count)],
            device=device,
            dtype=dtype,
        )
        phi = torch.zeros(values.shape[0], count, device=device, dtype=dtype)
        everything = torch.arange(2**count, device=device)
        for i in range(count):  # at most MAX_EXACT_FEATURES iterations
            without = everything[(everything & (1 << i)) == 0]
            phi[:, i] = ((values[:, without | (1 << i)] - values[:, without]) * weights[sizes[without]]).sum(1)
    return tuple(objective.unflatten(a) for a in features.spread(phi.clone(), inputs))
