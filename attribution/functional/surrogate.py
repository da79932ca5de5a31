"""Surrogate methods: Lime and KernelShap fit a weighted linear model to the target over random coalitions.

All coalitions are drawn up front as one bool tensor ``(S, n, F)`` (sample, example, feature; True keeps
the input value, False takes the baseline), evaluated many copies per forward, and the linear models are
fitted for every example at once: batched weighted least squares, ridge and lasso in float64 on the
inputs' device.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from attribution._canonical import Objective, TensorOrTuple, describe
from attribution._checks import ArgumentError, check_choice
from attribution._features import FeatureMasks
from attribution.functional.perturbation import evaluate_copies

Fit = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``fit(X (n, S, F), y (n, S), weights (n, S)) -> (coef (n, F), intercept (n,))``."""

Similarity = Callable[[TensorOrTuple, TensorOrTuple, Tensor], Tensor]
"""``similarity(inputs (n, ...), perturbed (P, n, ...), coalitions (P, n, F)) -> weights (P, n)``."""

KERNEL_SHAP_INF_WEIGHT = 1e6
"""Weight of the all-present and all-absent coalitions (theoretically infinite), as in the reference."""


# --------------------------------------------------------------------------- sampling


def lime_coalitions(n_samples: int, n: int, count: int, device: torch.device) -> Tensor:
    """Coalitions ``(S, n, F)``: every feature present with probability 1/2, independently (global generator)."""
    return torch.rand(n_samples, n, count, device=device) < 0.5


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
        sizes = torch.multinomial((count - 1) / (k * (count - k)), rest * n, replacement=True).view(rest, n) + 1
    else:
        sizes = torch.randint(0, 2, (rest, n), device=device)
    ranks = torch.rand(rest, n, count, device=device).argsort(-1).argsort(-1)  # a random order of the features
    coalitions = torch.cat([fixed, ranks < sizes[..., None]])
    weights = torch.ones(n_samples, n, device=device)
    weights[: fixed.shape[0]] = KERNEL_SHAP_INF_WEIGHT
    return coalitions, weights


def get_exp_kernel_similarity_function(distance_mode: str = "cosine", kernel_width: float = 1.0) -> Similarity:
    """Lime's default weights: ``exp(-d^2 / (2 kernel_width^2))`` of the distance ``d`` between each
    example and its perturbed copy, both flattened over all inputs (as the reference's function of this name).

    Args:
        distance_mode: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"``.
        kernel_width: the kernel's width, > 0.

    Returns:
        A batched similarity: ``(inputs (n, ...), perturbed (P, n, ...), coalitions) -> (P, n)``;
        inputs and perturbed are tensors or tuples of tensors.
    """
    check_choice(distance_mode, "distance_mode", ["cosine", "euclidean"])
    if isinstance(kernel_width, bool) or not isinstance(kernel_width, (int, float)) or not kernel_width > 0:
        raise ArgumentError(f"kernel_width: expected a number > 0, got {kernel_width!r}")

    def similarity(inputs: TensorOrTuple, perturbed: TensorOrTuple, coalitions: Tensor) -> Tensor:
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

    return similarity


def _as_tuple(value: TensorOrTuple) -> tuple[Tensor, ...]:
    return (value,) if isinstance(value, Tensor) else tuple(value)


# --------------------------------------------------------------------------- the surrogate


def surrogate(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    coalitions: Tensor,
    fit: Fit,
    *,
    weights: Tensor | None = None,
    similarity: Similarity | None = None,
    first: Tensor | None = None,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Coefficients ``(rows, F)`` of a linear model fitted to the target over the perturbed copies.

    ``rows`` is ``n``, or 1 when ``objective`` is aggregate (one value for the whole batch): the batch
    is then one example to the similarity, ``inputs (1, n, ...)`` and ``perturbed (P, 1, n, ...)``.

    Args:
        objective: resolved (see :meth:`Objective.resolve`).
        coalitions: bool ``(S, rows, F)``, which features each copy keeps.
        fit: the weighted linear model, see :data:`Fit`.
        weights: sample weights ``(S, rows)``; or
        similarity: computes them from each chunk of perturbed copies, see :data:`Similarity`.
        first: the target values ``(rows,)`` of copy 0 when they are already known.
    """
    inputs = tuple(x.detach() for x in inputs)
    total, rows = coalitions.shape[:2]
    examples = tuple(x.unsqueeze(0) for x in inputs) if objective.aggregate else inputs
    start = 0 if first is None else 1
    chunks = []

    def build(lo: int, hi: int) -> tuple[Tensor, ...]:
        batch = features.perturbed(coalitions[lo:hi], inputs, baselines)
        if similarity is not None:
            copies = tuple(p.view(hi - lo, *e.shape) for p, e in zip(batch, examples))
            chunk = similarity(examples, copies, coalitions[lo:hi])
            if not isinstance(chunk, Tensor) or chunk.shape != (hi - lo, rows):
                raise ArgumentError(
                    f"similarity_func: expected weights of shape ({hi - lo}, {rows}) (copies, examples), "
                    f"got {describe(chunk)}"
                )
            chunks.append(chunk)
        return batch

    with torch.inference_mode():
        if first is not None and similarity is not None:
            build(0, 1)  # copy 0's weights; its value is known
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
        if similarity is not None:
            weights = torch.cat(chunks)
    # Outside inference mode, so that a custom model may use autograd.
    values = values.clone()
    dtype = values.dtype if values.is_floating_point() else torch.float32
    design = coalitions.transpose(0, 1).to(dtype)
    coef, _ = fit(design, values.to(dtype), weights.clone().t().to(device=design.device, dtype=dtype))
    if not isinstance(coef, Tensor) or coef.shape != (rows, features.count):
        raise ArgumentError(
            f"interpretable_model: fit must return coefficients of shape ({rows}, {features.count}), "
            f"got {describe(coef)}"
        )
    return coef


# --------------------------------------------------------------------------- the linear models


def _fit_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _centered(X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Weighted-centered data scaled by sqrt(weight): ``(A, b, x_mean, y_mean, total_weight)``."""
    dtype = _fit_dtype(X.device)
    X, y, weights = X.to(dtype), y.to(dtype), weights.to(dtype)
    total = weights.sum(1)
    x_mean = (weights[..., None] * X).sum(1) / total[:, None]
    y_mean = (weights * y).sum(1) / total
    root = weights.sqrt()
    return (X - x_mean[:, None]) * root[..., None], (y - y_mean[:, None]) * root, x_mean, y_mean, total


def _result(coef: Tensor, x_mean: Tensor, y_mean: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    dtype = y.dtype if y.is_floating_point() else torch.float32
    return coef.to(dtype), (y_mean - (x_mean * coef).sum(-1)).to(dtype)


def least_squares(X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted least squares with an intercept, per example; the minimum-norm solution when rank-deficient.

    Args:
        X: ``(n, S, F)`` designs; y: ``(n, S)`` targets; weights: ``(n, S)`` sample weights > 0.

    Returns:
        ``(coef (n, F), intercept (n,))``.
    """
    A, b, x_mean, y_mean, _ = _centered(X, y, weights)
    coef = (torch.linalg.pinv(A) @ b[..., None])[..., 0]
    return _result(coef, x_mean, y_mean, y)


def ridge(X: Tensor, y: Tensor, weights: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Weighted ridge regression with an intercept: ``sum_i w_i (y_i - X_i beta - c)^2 + alpha |beta|^2``."""
    A, b, x_mean, y_mean, _ = _centered(X, y, weights)
    samples, count = A.shape[-2:]
    if count <= samples:
        eye = torch.eye(count, dtype=A.dtype, device=A.device)
        coef = torch.linalg.solve(A.mT @ A + alpha * eye, A.mT @ b[..., None])[..., 0]
    else:  # the dual form needs only an S x S system
        eye = torch.eye(samples, dtype=A.dtype, device=A.device)
        coef = (A.mT @ torch.linalg.solve(A @ A.mT + alpha * eye, b[..., None]))[..., 0]
    return _result(coef, x_mean, y_mean, y)


def lasso(
    X: Tensor, y: Tensor, weights: Tensor, alpha: float, *, tol: float = 1e-7, max_iter: int = 10_000
) -> tuple[Tensor, Tensor]:
    """Weighted lasso with an intercept (scikit-learn's objective with ``sample_weight``):
    ``1 / (2 sum(w)) * sum_i w_i (y_i - X_i beta - c)^2 + alpha |beta|_1``.

    Solved by FISTA with adaptive restart on the weighted-centered data, all examples at once.  Every
    10 iterations the duality gap is checked (one device sync); iteration stops when it is below
    ``tol * |y_centered|^2`` for every example (scikit-learn's criterion, there with ``tol=1e-4``).
    """
    A, b, x_mean, y_mean, total = _centered(X, y, weights)
    samples, count = A.shape[-2:]
    lam = (alpha * total)[:, None]  # the same problem scaled by sum(w): 0.5 |b - A beta|^2 + lam |beta|_1
    corr = (A.mT @ b[..., None])[..., 0]
    step = 1 / torch.linalg.matrix_norm(A, ord=2).square().clamp_min(torch.finfo(A.dtype).tiny)[:, None]
    if count <= samples:
        gram = A.mT @ A
        at_residual = lambda beta: corr - (gram @ beta[..., None])[..., 0]  # noqa: E731
    else:  # no F x F Gram matrix for many features
        at_residual = lambda beta: (A.mT @ (b - (A @ beta[..., None])[..., 0])[..., None])[..., 0]  # noqa: E731
    bb = b.square().sum(-1)

    def gap(beta: Tensor) -> Tensor:
        a_r = at_residual(beta)  # A^T r, with r = b - A beta
        r_b = bb - (beta * corr).sum(-1)
        r_r = r_b - (beta * a_r).sum(-1)
        s = torch.clamp(lam[:, 0] / a_r.abs().amax(-1).clamp_min(torch.finfo(A.dtype).tiny), max=1.0)
        return 0.5 * r_r + lam[:, 0] * beta.abs().sum(-1) - (s * r_b - 0.5 * s.square() * r_r)

    beta = torch.zeros_like(corr)
    z, t = beta, torch.ones_like(lam)
    for iteration in range(1, max_iter + 1):
        v = z + step * at_residual(z)
        new = v.sign() * (v.abs() - lam * step).clamp_min(0)
        restart = ((z - new) * (new - beta)).sum(-1, keepdim=True) > 0  # momentum points uphill
        t = torch.where(restart, 1.0, t)
        t_next = (1 + torch.sqrt(1 + 4 * t.square())) / 2
        z = new + torch.where(restart, 0.0, (t - 1) / t_next) * (new - beta)
        beta, t = new, t_next
        if iteration % 10 == 0 and bool((gap(beta) <= tol * bb).all()):
            break
    else:
        warnings.warn(
            f"lasso: no convergence to tol={tol} in max_iter={max_iter} iterations; "
            "raise max_iter or alpha, or use more samples",
            stacklevel=2,
        )
    return _result(beta, x_mean, y_mean, y)


# --------------------------------------------------------------------------- the methods


def lime(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    *,
    n_samples: int = 50,
    fit: Fit | None = None,
    similarity: Similarity | None = None,
    coalitions: Callable[[int], Tensor] | None = None,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Lime's coefficients ``(rows, F)``: a linear model (default: lasso, ``alpha=0.01``) fitted to the target
    over ``n_samples`` random coalitions (default: Bernoulli(1/2)), weighted by similarity to the input
    (default: exponential kernel of the cosine distance, width 1).

    Args:
        coalitions: draws the coalitions, bool ``(n_samples, rows, F)``, given ``rows``: ``n``, or 1 for a
            forward that returns one value for the whole batch (explained as one example, as in the
            reference).
    """
    with torch.inference_mode():
        # One forward of the unperturbed batch tells how many rows the coalitions need.
        objective, _ = objective.resolve(tuple(x.detach() for x in inputs))
    features.check_shared(objective.aggregate)
    if coalitions is None:
        drawn = lime_coalitions(n_samples, objective.rows, features.count, inputs[0].device)
    else:
        drawn = coalitions(objective.rows)
    return surrogate(
        objective,
        inputs,
        baselines,
        features,
        drawn,
        fit or (lambda X, y, w: lasso(X, y, w, 0.01)),
        similarity=similarity or get_exp_kernel_similarity_function(),
        perturbations_per_eval=perturbations_per_eval,
        progress=progress,
    )


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
    """KernelShap's coefficients ``(rows, F)``: weighted least squares over coalitions drawn from the Shapley
    kernel (see :func:`kernel_shap_coalitions`); they estimate the features' Shapley values.  ``rows`` is 1
    for a forward that returns one value for the whole batch (explained as one example).
    """
    with torch.inference_mode():
        # The first coalition keeps every feature: the unperturbed batch, which also settles the output mode.
        objective, full = objective.resolve(tuple(x.detach() for x in inputs))
    features.check_shared(objective.aggregate)
    if progress is not None:
        progress(1)
    coalitions, weights = kernel_shap_coalitions(n_samples, objective.rows, features.count, inputs[0].device)
    return surrogate(
        objective,
        inputs,
        baselines,
        features,
        coalitions,
        least_squares,
        weights=weights,
        first=full,
        perturbations_per_eval=perturbations_per_eval,
        progress=progress,
    )
