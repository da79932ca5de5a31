"""Surrogate methods: Lime, KernelShap and LimeBase, and the interpretable linear models they fit.

Lime and LimeBase take Captum's interpretable models and callables as well as ours.  ``interpretable_model``:
our batched models (:class:`Lasso`, :class:`Ridge`, :class:`LinearRegression`, or any object with a batched
``fit(X (n, S, F), y (n, S), weights (n, S)) -> (coef (n, F), intercept (n,))``) fit every example at once;
a Captum-style model (``fit(DataLoader)``, ``representation()``, ``bias()``; Captum's ``SkLearnLasso``,
``SGDLasso``, ...) is fitted once per example, on one float32 batch of ``(X (S, F), y (S,), weights (S,))``.

``similarity_func``, ``perturb_func`` and the transforms are batched (ours, the fast path: one call for all
copies of all examples) or per-sample (Captum's: one call per copy of one example, with ``**kwargs``).
A function wrapped in ``batched(func)`` or ``per_sample(func)`` takes that form; otherwise Lime takes a
generator function or one that accepts ``**kwargs`` as per-sample (Captum always passes keyword
arguments), any other as batched, and LimeBase takes every unmarked function as per-sample, as Captum does.
:func:`get_exp_kernel_similarity_function` returns a (marked) batched function that both accept.
Per-sample functions see one example (``x[r:r+1]``; the whole batch when the forward returns one value per
batch), with the keyword arguments' tensors of ``n`` rows cut to that example's row.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from attribution._internal.canonical import (
    BaselineType,
    Objective,
    TargetType,
    TensorOrTuple,
    canonical_call,
    describe,
    format_baselines,
)
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution._internal.features import format_feature_mask, superpixel_options
from attribution._internal.progress import progress_bar
from attribution.functional.surrogate import (
    BATCHED,
    PER_SAMPLE,
    CaptumModelFit,
    Examples,
    Sample,
    Weigh,
    batched,
    draw_coalitions,
    draw_copies,
    draw_design,
    from_interpretable,
    function_form,
    get_exp_kernel_similarity_function,
    input_space_sample,
    interpretable_sample,
    kernel_shap,
    lasso,
    least_squares,
    lime,
    lime_base,
    model_fit,
    per_sample,
    ridge,
    similarity_weights,
    spread_coefficients,
    to_interpretable,
)
from attribution.methods.base import PerturbationAttribution
from attribution.registry import register


def _check_alpha(alpha: Any, model: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not float(alpha) > 0:
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
    (scikit-learn's ``Ridge``).

    :meth:`fit` as in :class:`LinearRegression`."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        _check_alpha(self.alpha, "Ridge")

    def fit(self, X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Fit one model per example: arguments and result as :meth:`LinearRegression.fit`."""
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
        """Fit one model per example: arguments and result as :meth:`LinearRegression.fit`."""
        return lasso(X, y, weights, float(self.alpha), tol=float(self.tol), max_iter=self.max_iter)


def _check_callables(allow_none: bool, **functions: Any) -> None:
    for name, value in functions.items():
        if not callable(value) and not (allow_none and value is None):
            raise ArgumentTypeError(f"{name}: expected a callable{' or None' * allow_none}, got {describe(value)}")


@register("lime", probe_options=superpixel_options(8))
class Lime(PerturbationAttribution):
    """LIME (Ribeiro et al., 2016): a linear model fitted to the target on random coalitions of feature
    groups around each example; a feature's attribution is its coefficient.

    Args:
        forward_func: the model.
        interpretable_model: the linear model: batched (default ``Lasso(alpha=0.01)``, see
            :class:`~attribution.methods.surrogate.LinearRegression`) or Captum-style (see
            :mod:`attribution.methods.surrogate`).
        similarity_func: sample weights (see :mod:`attribution.methods.surrogate` for the two forms):
            batched ``similarity_func(inputs, perturbed, coalitions) -> (P, n)``, once per forward batch, where
            ``inputs`` has the structure the inputs were passed in, ``perturbed`` the same with ``P`` copies
            stacked in front (``perturbed[p, i]`` is copy ``p`` of example ``i``), ``coalitions`` is bool
            ``(P, n, F)``; when ``forward_func`` returns one value for the whole batch, the batch is one
            example: ``(1, n, ...)``, ``(P, 1, n, ...)``, ``(P, 1, F)``, weights ``(P, 1)``.  Or Captum's
            ``similarity_func(original_input, perturbed_input, coalition (1, F), **kwargs) -> a number``.
            Default: ``get_exp_kernel_similarity_function("cosine", kernel_width=1.0)``.
        perturb_func: the coalitions (True or 1 keeps a feature's input value): batched
            ``perturb_func(inputs, n_samples, n_features) -> (n_samples, n, F)`` of 0/1 or bool (``n`` is 1
            when the batch is one example), or Captum's ``perturb_func(original_input, **kwargs) -> (1, F)``
            or a generator of those.  Default: Bernoulli(1/2) per feature from torch's global CPU generator, in
            Captum's order (from the same seed, Captum's coalitions).  Per-sample functions get the keyword
            arguments ``baselines``, ``feature_mask`` (tensors, cut to the example) and ``num_interp_features``.

    Raises:
        TypeError: an ``interpretable_model`` of neither kind, or callables that are not callable.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import Lime
        >>> from attribution.utils import grid_feature_mask
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> superpixels = grid_feature_mask(images, 2)  # (1, 1, H, W) ids of 2 x 2 cells
        >>> attr = Lime(model).attribute(images, target=2, feature_mask=superpixels, n_samples=50)
        >>> attr.shape
        torch.Size([2, 3, 8, 8])
        >>> Lime(model).attribute(images, target=2, feature_mask=superpixels, return_input_shape=False).shape
        torch.Size([2, 4])
    """

    draws_random_numbers = True
    perturbs_feature_groups = True
    _multiply_by_inputs = False  # coefficients, not contributions (as in Captum)

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        interpretable_model: Any = None,
        similarity_func: Callable[..., Any] | None = None,
        perturb_func: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(forward_func)
        self.interpretable_model = Lasso(alpha=0.01) if interpretable_model is None else interpretable_model
        model_fit(self.interpretable_model)  # refuses a model of neither kind now rather than at attribute
        _check_callables(True, similarity_func=similarity_func, perturb_func=perturb_func)
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
            integer inputs), or ``(n, F)``.  A forward that returns values for the whole batch explains the
            batch as one example (shared masks; inputs may have batch sizes of their own).  Several values
            per example (``target=None``) or per batch get a surrogate each, laid out like the forward's
            output as in :meth:`ShapleyValues.attribute`: ``(n, K, ...)`` or ``(n, K, F)`` for ``(n, K)``.

        Raises:
            ValueError: ``n_samples < 1``, a bad ``feature_mask``, or a custom callable's result of the wrong shape.
        """
        check_int(n_samples, "n_samples")
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, allow_ragged=True)
        baselines = format_baselines(baselines, call.inputs)
        features = format_feature_mask(feature_mask, call.inputs)
        similarity, perturb = self.similarity_func, self.perturb_func

        def prepare(objective: Objective) -> tuple[Tensor, Weigh]:
            captum_kwargs = {
                "baselines": call.restore(baselines),
                "feature_mask": call.restore(features.masks),
                "num_interp_features": features.count,
            }
            examples = Examples(call.inputs, call.given_as_tensor, objective.aggregate, {}, captum_kwargs)
            weigh = similarity_weights(similarity, function_form(similarity, BATCHED), examples)
            return draw_coalitions(perturb, examples, n_samples, features.count), weigh

        with progress_bar(show_progress, n_samples, "Lime attribution") as progress:
            coefs = lime(
                call.objective,
                call.inputs,
                baselines,
                features,
                n_samples=n_samples,
                fit=model_fit(self.interpretable_model),
                prepare=prepare,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return call.restore(spread_coefficients(coefs, features, call.inputs)) if return_input_shape else coefs


class LimeBase(PerturbationAttribution):
    """Captum's general LIME: any interpretable model fitted to the target over perturbations drawn by
    ``perturb_func`` in the interpretable space (mapped to inputs by ``from_interp_rep_transform``) or in
    the input space (mapped to the interpretable space by ``to_interp_rep_transform``).  :meth:`attribute`
    returns the fitted model's representation.  Unmarked functions are per-sample, as Captum calls them;
    batched ones (marked with :func:`~attribution.methods.surrogate.batched`) take all ``P`` copies of the
    ``n`` examples at once.

    Args:
        forward_func: the model.
        interpretable_model: batched or Captum-style (see :mod:`attribution.methods.surrogate`).
        similarity_func: ``(original_input, perturbed_input, interpretable_sample (1, F), **kwargs) -> number``;
            batched ``(inputs, perturbed (P, ...), samples (P, n, F), **kwargs) -> (P, n)``.
        perturb_func: ``(original_input, **kwargs) -> one sample`` (or a generator of samples); batched
            ``(inputs, n_samples, **kwargs) -> (n_samples, n, F)`` samples or ``(n_samples, *x.shape)`` copies.
        perturb_interpretable_space: whether a sample is interpretable, ``(1, F)``, or an input.
        from_interp_rep_transform: needed for interpretable samples: ``(sample (1, F), original_input,
            **kwargs) -> perturbed input``; batched ``(samples (P, n, F), inputs, **kwargs) -> (P, *x.shape)``.
        to_interp_rep_transform: needed for input samples: ``(perturbed_input, original_input, **kwargs)
            -> (1, F)``; batched ``(copies (P, *x.shape), inputs, **kwargs) -> (P, n, F)``.

    Raises:
        TypeError: an ``interpretable_model`` of neither kind, or callables that are not callable.
        ValueError: the transform that ``perturb_interpretable_space`` needs is None.

    Example:
        >>> import torch
        >>> from attribution import LimeBase
        >>> from attribution.methods.surrogate import LinearRegression
        >>> _ = torch.manual_seed(0)
        >>> model, x = torch.nn.Linear(4, 3), torch.rand(2, 4)
        >>> noise = lambda x, **kwargs: x + 0.1 * torch.randn_like(x)  # samples in the input space
        >>> explainer = LimeBase(model, LinearRegression(), lambda x, p, z, **kw: 1.0, noise,
        ...                      False, None, lambda p, x, **kw: p)
        >>> weights = explainer.attribute(x, target=0, n_samples=50)
        >>> torch.allclose(weights, model.weight[0].expand(2, 4), atol=1e-4)  # a linear model's own weights
        True
    """

    _multiply_by_inputs = False

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        interpretable_model: Any,
        similarity_func: Callable[..., Any],
        perturb_func: Callable[..., Any],
        perturb_interpretable_space: bool,
        from_interp_rep_transform: Callable[..., Any] | None,
        to_interp_rep_transform: Callable[..., Any] | None,
    ) -> None:
        super().__init__(forward_func)
        model_fit(interpretable_model)
        _check_callables(False, similarity_func=similarity_func, perturb_func=perturb_func)
        transforms = dict(
            from_interp_rep_transform=from_interp_rep_transform, to_interp_rep_transform=to_interp_rep_transform
        )
        _check_callables(True, **transforms)
        if not isinstance(perturb_interpretable_space, bool):
            raise ArgumentTypeError(
                f"perturb_interpretable_space: expected a bool, got {perturb_interpretable_space!r}"
            )
        self.interpretable_model = interpretable_model
        self.similarity_func = similarity_func
        self.perturb_func = perturb_func
        self.perturb_interpretable_space = perturb_interpretable_space
        self.from_interp_rep_transform = from_interp_rep_transform
        self.to_interp_rep_transform = to_interp_rep_transform
        self._needed_transform()

    def _needed_transform(self) -> Callable[..., Any]:
        """The transform that ``perturb_interpretable_space`` needs: ``from_interp_rep_transform`` for
        interpretable samples, else ``to_interp_rep_transform``."""
        space = self.perturb_interpretable_space
        needed = "from_interp_rep_transform" if space else "to_interp_rep_transform"
        transform = self.from_interp_rep_transform if space else self.to_interp_rep_transform
        if transform is None:
            raise ArgumentError(f"{needed}: expected a callable for perturb_interpretable_space={space}, got None")
        return transform

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_samples: int = 50,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> Tensor:
        """Fit the interpretable model to the target over ``n_samples`` perturbations of each example.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            n_samples: perturbations per example (>= 1; fewer when a generator ends first).
            perturbations_per_eval: copies per forward, at most (default: from the input size).
            show_progress: show a progress bar.
            **kwargs: passed to ``similarity_func``, ``perturb_func`` and the transforms.

        Returns:
            For one example (a batch of one, or a forward that returns one value for the whole batch): a
            Captum-style model's ``representation()`` (``(1, F)`` for Captum's linear models), or a batched
            model's coefficients ``(1, F)``.  For ``n`` examples (Captum refuses these) one row each, ``(n, F)``.

        Raises:
            ValueError: ``n_samples < 1``, or a user function's result of the wrong shape.
        """
        check_int(n_samples, "n_samples")
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        fit = model_fit(self.interpretable_model)

        def prepare(objective: Objective) -> tuple[int, Sample]:
            examples = Examples(call.inputs, call.given_as_tensor, objective.aggregate, kwargs, kwargs)
            form = function_form(self.similarity_func, PER_SAMPLE)
            weigh = similarity_weights(self.similarity_func, form, examples)
            perturb, perturb_form = self.perturb_func, function_form(self.perturb_func, PER_SAMPLE)
            transform = self._needed_transform()
            if self.perturb_interpretable_space:
                design = draw_design(perturb, perturb_form, examples, n_samples)
                to_inputs = from_interpretable(transform, function_form(transform, PER_SAMPLE), examples)
                return design.shape[0], interpretable_sample(design, to_inputs, weigh)
            copies = draw_copies(perturb, perturb_form, examples, n_samples)
            to_design = to_interpretable(transform, function_form(transform, PER_SAMPLE), examples)
            return copies[0].shape[0], input_space_sample(copies, to_design, weigh)

        with progress_bar(show_progress, n_samples, "Lime Base attribution") as progress:
            objective, result = lime_base(
                call.objective,
                call.inputs,
                prepare,
                fit,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        coef = result[0] if isinstance(result, tuple) and result else result
        if not isinstance(coef, Tensor) or coef.dim() == 0 or coef.shape[0] != objective.rows:
            raise ArgumentError(
                f"interpretable_model: the fit must give one row per example ({objective.rows}), got {describe(coef)}"
            )
        if isinstance(fit, CaptumModelFit) and objective.rows == 1:
            return coef[0]  # the model's representation(), as Captum returns it
        return objective.unflatten(coef.flatten(1) if coef.dim() > 2 else coef)


@register("kernel_shap", probe_options=superpixel_options(8))
class KernelShap(PerturbationAttribution):
    """Kernel SHAP (Lundberg and Lee, 2017): weighted least squares over coalitions drawn from the
    Shapley kernel; the coefficients estimate the feature groups' Shapley values.

    The first two coalitions are all features and none (weight 1e6, standing in for infinity);
    the others have ``k`` features with ``p(k) ∝ (F - 1) / (k (F - k))``, a uniformly random subset of
    that size (weight 1), drawn per example from torch's global generator.
    """

    draws_random_numbers = True
    perturbs_feature_groups = True
    _multiply_by_inputs = False

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
            >>> import torch
            >>> from torch import nn
            >>> from attribution import KernelShap
            >>> from attribution.utils import grid_feature_mask
            >>> _ = torch.manual_seed(0)
            >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            ...                       nn.Flatten(), nn.Linear(4, 3))
            >>> images = torch.rand(2, 3, 8, 8)
            >>> cells = grid_feature_mask(images, 2)  # 2 x 2 superpixels
            >>> shap = KernelShap(model).attribute(images, target=2, feature_mask=cells, return_input_shape=False)
            >>> shap.shape  # one value per cell
            torch.Size([2, 4])
            >>> gap = model(images)[:, 2] - model(torch.zeros_like(images))[:, 2]  # f(x) - f(baseline)
            >>> torch.allclose(shap.sum(1), gap, atol=1e-5)
            True
        """
        check_int(n_samples, "n_samples")
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, allow_ragged=True)
        baselines = format_baselines(baselines, call.inputs)
        features = format_feature_mask(feature_mask, call.inputs)
        with progress_bar(show_progress, n_samples, "Kernel Shap attribution") as progress:
            coefs = kernel_shap(
                call.objective,
                call.inputs,
                baselines,
                features,
                n_samples=n_samples,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return call.restore(spread_coefficients(coefs, features, call.inputs)) if return_input_shape else coefs


__all__ = [
    "KernelShap",
    "Lasso",
    "Lime",
    "LimeBase",
    "LinearRegression",
    "Ridge",
    "batched",
    "get_exp_kernel_similarity_function",
    "per_sample",
]
