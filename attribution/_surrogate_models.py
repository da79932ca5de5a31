"""What the surrogate methods fit: batched weighted linear solvers, and Captum-style interpretable models.

Interpretable models are batched, ``fit(X (n, S, F), y (n, S), weights (n, S)) -> (coef (n, F), intercept
(n,))`` for every example at once (the solvers below; the classes are in :mod:`attribution.surrogate`), or
Captum-style, ``fit(DataLoader)`` then ``representation()``, fitted once per example (:func:`model_fit`).
The user's functions are adapted in :mod:`attribution._surrogate_forms`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from attribution._canonical import describe
from attribution._checks import ArgumentTypeError

Fit = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``fit(X (n, S, F), y (n, S), weights (n, S)) -> (coef (n, F), intercept (n,))``."""

# --------------------------------------------------------------------------- batched weighted linear solvers


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


# --------------------------------------------------------------------------- Captum-style models


@dataclass(frozen=True)
class CaptumModelFit:
    """A Captum-style ``interpretable_model`` as a batched fit: one ``fit(DataLoader)`` per example (the
    model holds one fitted state at a time), each followed by ``representation()``.

    Returns ``(representations (n, *representation.shape), intercepts (n,))``; as in Captum the data are
    float32, in one batch of ``(X, y, weights)``.
    """

    model: Any

    def __call__(self, X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        representations, intercepts = [], []
        for r in range(X.shape[0]):
            data = TensorDataset(*(t[r].float().contiguous() for t in (X, y, weights)))
            # Iterating a DataLoader draws a seed from its generator: a private one leaves the global RNG alone.
            self.model.fit(DataLoader(data, batch_size=X.shape[1], generator=torch.Generator()))
            representation = self.model.representation()
            if not isinstance(representation, Tensor):
                raise ArgumentTypeError(
                    f"interpretable_model: representation() must return a tensor, got {describe(representation)}"
                )
            bias = self.model.bias() if callable(getattr(self.model, "bias", None)) else None
            representations.append(representation.detach().to(X.device))
            intercepts.append(bias.detach().reshape(-1)[0].cpu() if isinstance(bias, Tensor) else torch.zeros(()))
        return torch.stack(representations), torch.stack(intercepts).to(X.device)


def model_fit(model: Any) -> Fit:
    """The batched fit of ``interpretable_model``: a Captum-style model (it has ``representation()``) is
    wrapped in :class:`CaptumModelFit`; any other must have a batched ``fit(X, y, weights)``.

    Raises:
        ArgumentTypeError: a model of neither kind.
    """
    if callable(getattr(model, "representation", None)) and callable(getattr(model, "fit", None)):
        return CaptumModelFit(model)
    fit = getattr(model, "fit", None)
    try:
        inspect.signature(fit).bind(None, None, None)
    except (TypeError, ValueError):
        raise ArgumentTypeError(
            f"interpretable_model: expected an object with fit(X (n, S, F), y (n, S), weights (n, S)) "
            f"-> (coef (n, F), intercept (n,)) (batched), such as Lasso(), Ridge() or LinearRegression() from "
            f"attribution.surrogate, or a Captum-style model with fit(DataLoader) and representation() "
            f"(such as Captum's SkLearnLasso), got {describe(model)}"
        ) from None
    return fit
