"""Surrogate methods: Lime and KernelShap, and the interpretable linear models they fit."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attribution._base import Attribution
from attribution._canonical import (
    BaselineType,
    CanonicalCall,
    TargetType,
    TensorOrTuple,
    canonical_call,
    describe,
    format_baselines,
)
from attribution._checks import ArgumentError, ArgumentTypeError, check_int
from attribution._features import FeatureMasks, format_feature_mask, superpixel_options
from attribution._progress import progress_bar
from attribution.functional.surrogate import (
    get_exp_kernel_similarity_function,
    kernel_shap,
    lasso,
    least_squares,
    lime,
    ridge,
)
from attribution.registry import register


def _check_alpha(alpha: Any, model: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ArgumentError(
            f"alpha: expected a number > 0, got {alpha!r} (for alpha=0 use LinearRegression, not {model})"
        )


@dataclass(frozen=True)
class LinearRegression:
    """Weighted least squares with an intercept (scikit-learn's ``LinearRegression`` with ``sample_weight``);
    the minimum-norm solution when the samples do not determine every coefficient."""

    def fit(self, X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Fit one model per example.

        Args:
            X: ``(n, S, F)`` designs; y: ``(n, S)`` targets; weights: ``(n, S)`` sample weights > 0.

        Returns:
            ``(coef (n, F), intercept (n,))``.
        """
        return least_squares(X, y, weights)


@dataclass(frozen=True)
class Ridge:
    """Weighted ridge regression with an intercept: ``sum_i w_i (y_i - X_i beta - c)^2 + alpha |beta|^2``
    (scikit-learn's ``Ridge``); :meth:`fit` as in :class:`LinearRegression`."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        _check_alpha(self.alpha, "Ridge")

    def fit(self, X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        return ridge(X, y, weights, float(self.alpha))


@dataclass(frozen=True)
class Lasso:
    """Weighted lasso with an intercept, scikit-learn's objective with ``sample_weight``:
    ``1 / (2 sum(w)) * sum_i w_i (y_i - X_i beta - c)^2 + alpha |beta|_1``; solved to a relative duality
    gap of ``tol`` (scikit-learn stops at 1e-4) in at most ``max_iter`` proximal-gradient steps.
    :meth:`fit` as in :class:`LinearRegression`."""

    alpha: float = 0.01
    tol: float = 1e-7
    max_iter: int = 10_000

    def __post_init__(self) -> None:
        _check_alpha(self.alpha, "Lasso")
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not self.tol > 0:
            raise ArgumentError(f"tol: expected a number > 0, got {self.tol!r}")
        check_int(self.max_iter, "max_iter")

    def fit(self, X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        return lasso(X, y, weights, float(self.alpha), tol=float(self.tol), max_iter=self.max_iter)


def _check_fit(model: Any) -> None:
    fit = getattr(model, "fit", None)
    try:
        inspect.signature(fit).bind(None, None, None)
    except (TypeError, ValueError):
        raise ArgumentTypeError(
            f"interpretable_model: expected an object with fit(X (n, S, F), y (n, S), weights (n, S)) -> "
            f"(coef (n, F), intercept (n,)), such as Lasso(), Ridge() or LinearRegression() from "
            f"attribution.surrogate, got {describe(model)} (models that fit from a DataLoader are not supported)"
        ) from None


def _output(call: CanonicalCall, features: FeatureMasks, coefs: Tensor, return_input_shape: bool) -> TensorOrTuple:
    """Coefficients ``(rows, F)``, or spread onto the inputs (floating even for integer inputs)."""
    return call.restore(features.spread(coefs, call.inputs)) if return_input_shape else coefs


@register("lime", probe_options=superpixel_options(8))
class Lime(Attribution):
    """LIME (Ribeiro et al., 2016): a linear model fitted to the target on random coalitions of feature
    groups around each example; a feature's attribution is its coefficient.

    Args:
        forward_func: the model.
        interpretable_model: the linear model, an object with a batched ``fit`` (see
            :class:`LinearRegression`); default ``Lasso(alpha=0.01)``.
        similarity_func: sample weights,
            ``similarity_func(inputs, perturbed, coalitions) -> (P, n)`` where ``inputs`` has the
            structure the inputs were passed in, ``perturbed`` the same structure with ``P`` copies
            stacked in front (``perturbed[p, i]`` is copy ``p`` of example ``i``), and ``coalitions`` is
            bool ``(P, n, F)``; it is called once per forward batch.  When ``forward_func`` returns one
            value for the whole batch, the batch is one example: ``(1, n, ...)``, ``(P, 1, n, ...)``,
            ``(P, 1, F)`` and weights ``(P, 1)``.  Default: an exponential kernel of the cosine distance,
            ``get_exp_kernel_similarity_function("cosine", kernel_width=1.0)``.
        perturb_func: the coalitions, ``perturb_func(inputs, n_samples, n_features) -> (n_samples, n, F)``
            of 0/1 or bool (True keeps a feature's input value); ``(n_samples, 1, F)`` when ``forward_func``
            returns one value for the whole batch.  Default: Bernoulli(1/2) per feature, from torch's
            global generator.

    Raises:
        TypeError: an ``interpretable_model`` without a batched ``fit``, or callables that are not callable.

    Example:
        >>> superpixels = cells[None, None]  # (1, 1, H, W) feature ids  # doctest: +SKIP
        >>> attr = Lime(model).attribute(images, target=3, feature_mask=superpixels, n_samples=200)  # doctest: +SKIP
    """

    perturbs_feature_groups = True

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        interpretable_model: Any = None,
        similarity_func: Callable[..., Tensor] | None = None,
        perturb_func: Callable[..., Tensor] | None = None,
    ) -> None:
        super().__init__(forward_func)
        self.interpretable_model = Lasso(alpha=0.01) if interpretable_model is None else interpretable_model
        _check_fit(self.interpretable_model)
        for name, value in (("similarity_func", similarity_func), ("perturb_func", perturb_func)):
            if value is not None and not callable(value):
                raise ArgumentTypeError(f"{name}: expected a callable or None, got {describe(value)}")
        self.similarity_func = similarity_func or get_exp_kernel_similarity_function()
        self.perturb_func = perturb_func

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        n_samples: int = 50,
        perturbations_per_eval: int | None = None,
        return_input_shape: bool = True,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Fit the interpretable model for every example, all at once.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: values of absent features (default 0).
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            feature_mask: feature ids per input, as in :meth:`FeatureAblation.attribute`.
            n_samples: coalitions per example (>= 1).
            perturbations_per_eval: copies per forward, at most (default: from the input size); the
                result does not depend on it.
            return_input_shape: spread the coefficients onto the inputs; False returns them as ``(n, F)``.
            show_progress: show a progress bar.

        Returns:
            Attributions shaped like ``inputs`` (every element gets its feature's coefficient; floating for
            integer inputs), or ``(n, F)``.  When ``forward_func`` returns one value for the whole batch, the
            batch is explained as one example (shared masks; first dimension 1, or ``(1, F)``).

        Raises:
            ValueError: ``n_samples < 1``, a bad ``feature_mask``, or a custom callable's result of the wrong shape.
        """
        check_int(n_samples, "n_samples")
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        baselines = format_baselines(baselines, call.inputs)
        features = format_feature_mask(feature_mask, call.inputs)
        user_similarity = self.similarity_func

        def similarity(xs: tuple[Tensor, ...], copies: tuple[Tensor, ...], present: Tensor) -> Tensor:
            return user_similarity(call.restore(xs), call.restore(copies), present)

        with progress_bar(show_progress, n_samples, "Lime") as progress:
            coefs = lime(
                call.objective,
                call.inputs,
                baselines,
                features,
                n_samples=n_samples,
                fit=self.interpretable_model.fit,
                similarity=similarity,
                coalitions=None if self.perturb_func is None else self._coalitions(call, n_samples, features.count),
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return _output(call, features, coefs, return_input_shape)

    def _coalitions(self, call: CanonicalCall, n_samples: int, count: int) -> Callable[[int], Tensor]:
        """The user's ``perturb_func`` as the core's coalition draw: ``rows -> (n_samples, rows, count)`` bool."""

        def draw(rows: int) -> Tensor:
            coalitions = self.perturb_func(call.restore(call.inputs), n_samples, count)
            if not isinstance(coalitions, Tensor) or coalitions.shape != (n_samples, rows, count):
                raise ArgumentError(
                    f"perturb_func: expected a tensor of shape ({n_samples}, {rows}, {count}) "
                    f"(n_samples, examples, features), got {describe(coalitions)}"
                )
            if coalitions.dtype != torch.bool:
                if not bool(((coalitions == 0) | (coalitions == 1)).all()):
                    raise ArgumentError("perturb_func: expected coalitions of 0/1 or bool values")
                coalitions = coalitions == 1
            return coalitions.to(call.inputs[0].device)

        return draw


@register("kernel_shap", probe_options=superpixel_options(8))
class KernelShap(Attribution):
    """Kernel SHAP (Lundberg and Lee, 2017): weighted least squares over coalitions drawn from the
    Shapley kernel; the coefficients estimate the feature groups' Shapley values.

    The first two coalitions are all features and none (weight 1e6, standing in for infinity);
    the others have ``k`` features with ``p(k) ∝ (F - 1) / (k (F - k))``, a uniformly random subset of
    that size (weight 1), drawn per example from torch's global generator.
    """

    perturbs_feature_groups = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        n_samples: int = 25,
        perturbations_per_eval: int | None = None,
        return_input_shape: bool = True,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Estimate each feature group's Shapley value from ``n_samples`` coalitions per example;
        arguments and result as in :meth:`Lime.attribute`.

        Example:
            >>> attr = KernelShap(model).attribute(images, target=3, feature_mask=cells)  # doctest: +SKIP
        """
        check_int(n_samples, "n_samples")
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        baselines = format_baselines(baselines, call.inputs)
        features = format_feature_mask(feature_mask, call.inputs)
        with progress_bar(show_progress, n_samples, "KernelShap") as progress:
            coefs = kernel_shap(
                call.objective,
                call.inputs,
                baselines,
                features,
                n_samples=n_samples,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return _output(call, features, coefs, return_input_shape)


__all__ = ["KernelShap", "Lasso", "LinearRegression", "Lime", "Ridge", "get_exp_kernel_similarity_function"]
