"""Shapley values of feature groups: ShapleyValueSampling and exact ShapleyValues."""

from __future__ import annotations

from typing import Any

from attribution import functional
from attribution._internal.canonical import BaselineType, TargetType, TensorOrTuple, canonical_call, format_baselines
from attribution._internal.checks import ArgumentError, check_int
from attribution._internal.features import format_feature_mask, superpixel_options
from attribution._internal.progress import progress_bar
from attribution.methods.base import FutureForward, PerturbationAttribution
from attribution.registry import register


@register("shapley_value_sampling", probe_options=superpixel_options(8, n_samples=10))
class ShapleyValueSampling(FutureForward, PerturbationAttribution):
    """Shapley values estimated from random feature orders (Castro et al., 2009).

    Along each order the features are switched from the baseline to the input
    one by one; a feature's value is its mean contribution when added.  The
    orders come from torch's global generator.
    """

    draws_random_numbers = True
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
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Estimate each feature group's Shapley value from ``n_samples`` orders.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: values of absent features (default 0).
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            feature_mask: feature ids per input, as in :meth:`FeatureAblation.attribute`.
            n_samples: number of random feature orders (>= 1).
            perturbations_per_eval: copies per forward, at most (default: from the input size).
            show_progress: show a progress bar.

        Returns:
            Attributions shaped like ``inputs`` (floating-point for integer and bool inputs).  Several
            values per example (``target=None``) or values for the whole batch are laid out like the
            forward's output, as in Captum: ``(n, K, ...)`` for ``(n, K)`` outputs, ``(K, ...)`` for ``(K,)``
            values per batch, a first dimension of 1 for one value per batch (features are then switched
            in every example at once, and inputs may have batch sizes of their own, as in
            :meth:`FeatureAblation.attribute`).
        """
        check_int(n_samples, "n_samples")
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, allow_ragged=True)
        baselines = format_baselines(baselines, call.inputs)
        features = format_feature_mask(feature_mask, call.inputs)
        with progress_bar(show_progress, n_samples * features.count, "ShapleyValueSampling") as progress:
            attrs = functional.shapley_value_sampling(
                call.objective,
                call.inputs,
                baselines,
                features,
                n_samples=n_samples,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return call.restore(attrs)


@register("shapley_values", probe_options=superpixel_options(3))
class ShapleyValues(FutureForward, PerturbationAttribution):
    """Exact Shapley values of up to 20 feature groups, from all 2^F coalitions.

    (The reference implementation enumerates all F! orders, F evaluations each.)
    """

    perturbs_feature_groups = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Exact Shapley value of each feature group; arguments as in
        :meth:`ShapleyValueSampling.attribute`.

        Raises:
            ValueError: more than 20 feature groups.
        """
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, allow_ragged=True)
        baselines = format_baselines(baselines, call.inputs)
        features = format_feature_mask(feature_mask, call.inputs)
        if features.count > functional.shapley.MAX_EXACT_FEATURES:
            raise ArgumentError(
                f"feature_mask: exact Shapley values need 2^F evaluations and F = {features.count} is too many "
                f"(at most {functional.shapley.MAX_EXACT_FEATURES}); group features or use ShapleyValueSampling"
            )
        with progress_bar(show_progress, 2**features.count, "ShapleyValues") as progress:
            attrs = functional.shapley_values(
                call.objective,
                call.inputs,
                baselines,
                features,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return call.restore(attrs)
