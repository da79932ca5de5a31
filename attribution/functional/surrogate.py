"""Surrogate methods: Lime, KernelShap and LimeBase fit an interpretable model to the target over perturbed copies.

One loop serves them all (:func:`surrogate`): perturbed copies of the batch are built chunk by chunk,
evaluated many per forward, weighted, and the interpretable model is fitted for every example at once.
Lime and KernelShap draw coalitions up front, one bool tensor ``(S, n, F)`` (sample, example, feature;
True keeps the input value, False takes the baseline); LimeBase draws what its perturbation function
gives and maps it to or from the interpretable space with the user's transforms.  The batched linear
models (float64 on the inputs' device) and the adapters that turn Captum's per-sample functions and
models into batched ones live in :mod:`attribution._surrogate_models`; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attribution._canonical import Objective, TensorOrTuple, describe
from attribution._checks import ArgumentError, check_choice
from attribution._features import FeatureMasks
from attribution._surrogate_forms import (
    BATCHED,
    PER_SAMPLE,
    Examples,
    Weigh,
    batched,
    draw_copies,
    draw_design,
    from_interpretable,
    function_form,
    per_sample,
    similarity_weights,
    to_interpretable,
)
from attribution._surrogate_models import CaptumModelFit, Fit, lasso, least_squares, model_fit, ridge
from attribution.functional.perturbation import evaluate_copies

Similarity = Callable[..., Tensor]
"""Batched: ``similarity(inputs (n, ...), perturbed (P, n, ...), coalitions (P, n, F), **kwargs) -> (P, n)``."""

Sample = Callable[[int, int], tuple[tuple[Tensor, ...], Tensor, Tensor]]
"""``sample(lo, hi) -> (copies (each (P, *x.shape)), design (P, rows, F), weights (P, rows))`` for copies
``lo .. hi - 1``: the perturbed batches, their interpretable representations and their sample weights."""

KERNEL_SHAP_INF_WEIGHT = 1e6
"""Weight of the all-present and all-absent coalitions (theoretically infinite), as in the reference."""


# --------------------------------------------------------------------------- sampling


def lime_coalitions(n_samples: int, n: int, count: int, device: torch.device) -> Tensor:
    """Coalitions ``(S, n, F)``: every feature present with probability 1/2, independently.

    Drawn as the reference draws them, Bernoulli(1/2) from torch's global CPU generator example by example
    and sample by sample (one batched draw takes the same numbers from it as its per-sample draws), then
    moved to ``device``: from the same seed, the same coalitions.
    """
    return torch.bernoulli(torch.full((n, n_samples, count), 0.5)).transpose(0, 1).to(device, torch.bool)


def kernel_shap_coalitions(n_samples: int, n: int, count: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """KernelShap's coalitions ``(S, n, F)`` and weights ``(S, n)``.

    First all features present, then none (weight :data:`KERNEL_SHAP_INF_WEIGHT`), then per sample and
    example a size ``k`` with ``p(k) ∝ (F - 1) / (k (F - k))`` and a uniformly random subset of that size
    (weight 1): together the Shapley kernel.  With one feature, ``k`` is 0 or 1 with equal probability.
    """
    fixed = torch.stack([torch.ones(count, dtype=torch.bool), torch.zeros(count, dtype=torch.bool)])
    fixed = fixed[:n_samples, None].to(device).expand(-1, n, -1)
    rest = n_samples - fixed.shape[0]
    if rest > 0 and count > 1:
        k = torch.arange(1, count, device=device, dtype=torch.float64)
        sizes = torch.multinomial((count - 1) / (k * (count - k)), rest * n, replacement=True).view(n, rest).t() + 1
    else:
        sizes = torch.randint(0, 2, (n, rest), device=device).t()
    # A random order of the features per copy (drawn example-major, like the sizes).
    ranks = torch.rand(n, rest, count, device=device).transpose(0, 1).argsort(-1).argsort(-1)
    coalitions = torch.cat([fixed, ranks < sizes[..., None]])
    weights = torch.ones(n_samples, n, device=device)
    weights[: fixed.shape[0]] = KERNEL_SHAP_INF_WEIGHT
    return coalitions, weights


def draw_coalitions(perturb: Callable[..., object] | None, examples: Examples, n_samples: int, count: int) -> Tensor:
    """Lime's coalitions bool ``(S, rows, count)`` from ``perturb``: None draws :func:`lime_coalitions`;
    a batched one is called as ``perturb(inputs, n_samples, count)``, a per-sample one (see
    :func:`function_form`) once per copy of each example; either gives 0/1 or bool values."""
    device = examples.inputs[0].device
    if perturb is None:
        return lime_coalitions(n_samples, examples.rows, count, device)
    if function_form(perturb, BATCHED) == PER_SAMPLE:
        coalitions = draw_design(perturb, PER_SAMPLE, examples, n_samples, count)
    else:
        coalitions = perturb(examples.given, n_samples, count)
        if not isinstance(coalitions, Tensor) or coalitions.shape != (n_samples, examples.rows, count):
            raise ArgumentError(
                f"perturb_func: expected a tensor of shape ({n_samples}, {examples.rows}, {count}) "
                f"(n_samples, examples, features), got {describe(coalitions)}"
            )
    if coalitions.dtype != torch.bool:
        if not bool(((coalitions == 0) | (coalitions == 1)).all()):
            raise ArgumentError("perturb_func: expected coalitions of 0/1 or bool values")
        coalitions = coalitions == 1
    return coalitions.to(device)


def get_exp_kernel_similarity_function(distance_mode: str = "cosine", kernel_width: float = 1.0) -> Similarity:
    """Lime's default weights: ``exp(-d^2 / (2 kernel_width^2))`` of the distance ``d`` between each
    example and its perturbed copy, both flattened over all inputs (as the reference's function of this name).

    Args:
        distance_mode: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"``.
        kernel_width: the kernel's width, > 0.

    Returns:
        A batched similarity (marked with :func:`batched`): ``(inputs (n, ...), perturbed (P, n, ...),
        coalitions, **kwargs) -> (P, n)``; inputs and perturbed are tensors or tuples of tensors, and keyword
        arguments (LimeBase passes its ``attribute``'s) are ignored.
    """
    check_choice(distance_mode, "distance_mode", ["cosine", "euclidean"])
    if isinstance(kernel_width, bool) or not isinstance(kernel_width, (int, float)) or not kernel_width > 0:
        raise ArgumentError(f"kernel_width: expected a number > 0, got {kernel_width!r}")

    def similarity(inputs: TensorOrTuple, perturbed: TensorOrTuple, coalitions: Tensor, **kwargs: object) -> Tensor:
        pairs = [(x.flatten(1), p.flatten(2)) for x, p in zip(_as_tuple(inputs), _as_tuple(perturbed))]
        dtype = torch.promote_types(pairs[0][0].dtype, torch.float32)
        pairs = [(x.to(dtype), p.to(dtype)) for x, p in pairs]
        if distance_mode == "cosine":
            dot = sum((p * x).sum(-1) for x, p in pairs)
            norms = sum(x.square().sum(-1) for x, _ in pairs).sqrt() * sum(p.square().sum(-1) for _, p in pairs).sqrt()
            distance = 1 - dot / norms.clamp_min(1e-8)
        else:
            distance = sum((p - x).square().sum(-1) for x, p in pairs).sqrt()
        return torch.exp(-distance.square() / (2 * kernel_width**2))

    return batched(similarity)


def _as_tuple(value: TensorOrTuple) -> tuple[Tensor, ...]:
    return (value,) if isinstance(value, Tensor) else tuple(value)


# --------------------------------------------------------------------------- the surrogate


def surrogate(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    total: int,
    sample: Sample,
    fit: Fit,
    *,
    first: Tensor | None = None,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Fit the interpretable model to the target over ``total`` perturbed copies of the batch.

    ``sample`` gives designs and weights per example (``n``, or 1 when ``objective`` is aggregate); the
    objective has ``rows`` values per copy, ``K`` per example (several outputs, see
    :meth:`Objective.resolve`), and each gets a surrogate of its own, fitted on its example's design.

    Args:
        objective: resolved (see :meth:`Objective.resolve`).
        sample: builds copies with their designs and weights, chunk by chunk (see :data:`Sample`).
        fit: the interpretable model, see :data:`Fit`.
        first: the target values ``(rows,)`` of copy 0 when they are already known.

    Returns:
        What ``fit`` returns for the designs ``(rows, total, F)``, values and weights.
    """
    inputs = tuple(x.detach() for x in inputs)
    designs, weights = [], []

    def build(lo: int, hi: int) -> tuple[Tensor, ...]:
        copies, design, weight = sample(lo, hi)
        designs.append(design)
        weights.append(weight)
        return tuple(c.flatten(0, 1) for c in copies)

    start = 0 if first is None else 1
    with torch.inference_mode():
        if first is not None:
            build(0, 1)  # copy 0's design and weight; its value is known
        values = evaluate_copies(
            objective,
            inputs,
            total - start,
            lambda lo, hi: build(lo + start, hi + start),
            perturbations_per_eval=perturbations_per_eval,
            progress=progress,
        )
        if first is not None:
            values = torch.cat([first[:, None], values], dim=1)
    # Outside inference mode (clones are normal tensors), so that a custom model may use autograd.
    values, design, weight = values.clone(), torch.cat(designs).clone(), torch.cat(weights).clone()
    dtype = values.dtype if values.is_floating_point() else torch.float32
    design, weight = design.transpose(0, 1).to(dtype), weight.t().to(device=design.device, dtype=dtype)
    outputs = values.shape[0] // design.shape[0]  # K values of one example share its copies (example-major)
    if outputs > 1:
        design, weight = design.repeat_interleave(outputs, dim=0), weight.repeat_interleave(outputs, dim=0)
    return fit(design, values.to(dtype), weight)


def coalition_sample(
    features: FeatureMasks,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    coalitions: Tensor,
    *,
    weigh: Weigh | None = None,
    weights: Tensor | None = None,
) -> Sample:
    """Copies with the features of each coalition ``(S, rows, F)`` kept and the others at the baseline,
    weighted by ``weigh`` or by fixed ``weights (S, rows)``."""

    def sample(lo: int, hi: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        chunk = coalitions[lo:hi]
        flat = features.perturbed(chunk, inputs, baselines)
        copies = tuple(c.reshape(hi - lo, *x.shape) for c, x in zip(flat, inputs))
        return copies, chunk, weights[lo:hi] if weigh is None else weigh(copies, chunk)

    return sample


def _resolved(objective: Objective, inputs: tuple[Tensor, ...]) -> tuple[Objective, Tensor]:
    """One forward of the unperturbed batch settles the output mode (and how many surrogates there are)."""
    with torch.inference_mode():
        return objective.resolve(tuple(x.detach() for x in inputs))


def spread_coefficients(coefs: Tensor, features: FeatureMasks, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Coefficients ``(*rows, F)`` (see :func:`lime`) spread onto the inputs, ``(*rows, *x.shape[1:])`` each:
    every element gets its feature's (floating even for integer inputs)."""
    spread = features.spread(coefs.reshape(-1, coefs.shape[-1]), inputs)
    return tuple(a.reshape(*coefs.shape[:-1], *a.shape[1:]) for a in spread)


def _coefficients(result: tuple[Tensor, Tensor], rows: int, count: int) -> Tensor:
    """The ``(rows, F)`` coefficients of a linear interpretable model's fit."""
    coef = result[0] if isinstance(result, tuple) and result else result
    if isinstance(coef, Tensor) and coef.dim() > 0 and coef.numel() == rows * count:
        return coef.reshape(rows, count)
    raise ArgumentError(
        f"interpretable_model: the fit must give one coefficient per feature, ({rows}, {count}) "
        f"(examples, features), got {describe(coef)}"
    )


# --------------------------------------------------------------------------- the methods


def lime(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    n_samples: int = 50,
    fit: Fit | None = None,
    prepare: Callable[[Objective], tuple[Tensor, Weigh]] | None = None,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Lime's coefficients ``(n, F)``: a linear model (default: lasso, ``alpha=0.01``) fitted to the target
    over ``n_samples`` random coalitions (default: Bernoulli(1/2)), weighted by similarity to the input
    (default: exponential kernel of the cosine distance, width 1).

    A forward that returns one value for the whole batch gets ``(1, F)`` (the batch explained as one
    example, as in the reference).  With several values per example (``target=None``) or per batch, every
    value gets a surrogate of its own on its example's coalitions, laid out like the forward's output:
    ``(n, K, F)`` for ``(n, K)`` outputs, ``(K, F)`` for ``(K,)`` per batch (see :meth:`Objective.unflatten`).

    Args:
        prepare: given the resolved objective, the coalitions bool ``(S, rows, F)`` and how to weigh the
            copies; ``rows`` is ``n``, or 1 for a forward that returns values for the whole batch.
    """
    objective, _ = _resolved(objective, inputs)
    features.check_shared(objective.aggregate)
    if prepare is None:
        kernel = get_exp_kernel_similarity_function()
        coalitions = lime_coalitions(n_samples, objective.target.n, features.count, inputs[0].device)
        weigh = similarity_weights(kernel, BATCHED, Examples(inputs, False, objective.aggregate))
    else:
        with torch.no_grad():
            coalitions, weigh = prepare(objective)
    if coalitions.shape[0] == 0:
        raise ArgumentError("perturb_func: gave no samples")
    sample = coalition_sample(features, inputs, baselines, coalitions, weigh=weigh)
    result = surrogate(
        objective,
        inputs,
        coalitions.shape[0],
        sample,
        fit or (lambda X, y, w: lasso(X, y, w, 0.01)),
        perturbations_per_eval=perturbations_per_eval,
        progress=progress,
    )
    return objective.unflatten(_coefficients(result, objective.rows, features.count))


def kernel_shap(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    n_samples: int = 25,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """KernelShap's coefficients ``(n, F)``: weighted least squares over coalitions drawn from the Shapley
    kernel (see :func:`kernel_shap_coalitions`); they estimate the features' Shapley values.  A forward
    that returns values for the whole batch, or several per example, gets them laid out as in :func:`lime`.
    """
    # The first coalition keeps every feature: the unperturbed batch, which also settles the output mode.
    objective, full = _resolved(objective, inputs)
    features.check_shared(objective.aggregate)
    if progress is not None:
        progress(1)
    coalitions, weights = kernel_shap_coalitions(n_samples, objective.target.n, features.count, inputs[0].device)
    sample = coalition_sample(features, inputs, baselines, coalitions, weights=weights)
    result = surrogate(
        objective,
        inputs,
        n_samples,
        sample,
        least_squares,
        first=full,
        perturbations_per_eval=perturbations_per_eval,
        progress=progress,
    )
    return objective.unflatten(_coefficients(result, objective.rows, features.count))


def lime_base(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    prepare: Callable[[Objective], tuple[int, Sample]],
    fit: Fit,
    *,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Objective, tuple[Tensor, Tensor]]:
    """LimeBase's general surrogate: the resolved objective and what ``fit`` returns.

    Args:
        prepare: given the resolved objective, the number of copies and how to build them (see
            :func:`interpretable_sample` and :func:`input_space_sample`); called under ``no_grad``.
    """
    objective, _ = _resolved(objective, inputs)
    with torch.no_grad():
        total, sample = prepare(objective)
    if total == 0:
        raise ArgumentError("perturb_func: gave no samples")
    return objective, surrogate(
        objective, inputs, total, sample, fit, perturbations_per_eval=perturbations_per_eval, progress=progress
    )


def interpretable_sample(design: Tensor, to_inputs: Callable[[Tensor], tuple[Tensor, ...]], weigh: Weigh) -> Sample:
    """Copies from interpretable samples ``design (S, rows, F)`` drawn up front, mapped to inputs chunk by chunk."""

    def sample(lo: int, hi: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        chunk = design[lo:hi]
        copies = to_inputs(chunk)
        return copies, chunk, weigh(copies, chunk)

    return sample


def input_space_sample(
    copies: tuple[Tensor, ...], to_design: Callable[[tuple[Tensor, ...]], Tensor], weigh: Weigh
) -> Sample:
    """Copies ``(S, *x.shape)`` drawn up front, mapped to the interpretable space chunk by chunk."""

    def sample(lo: int, hi: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        chunk = tuple(c[lo:hi] for c in copies)
        design = to_design(chunk)
        return chunk, design, weigh(chunk, design)

    return sample


__all__ = [
    "BATCHED",
    "PER_SAMPLE",
    "CaptumModelFit",
    "Examples",
    "Sample",
    "Weigh",
    "batched",
    "draw_coalitions",
    "draw_copies",
    "draw_design",
    "from_interpretable",
    "function_form",
    "get_exp_kernel_similarity_function",
    "kernel_shap",
    "lasso",
    "least_squares",
    "lime",
    "lime_base",
    "model_fit",
    "per_sample",
    "ridge",
    "similarity_weights",
    "spread_coefficients",
    "to_interpretable",
]
