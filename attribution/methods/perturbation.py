"""Perturbation methods: Occlusion, FeatureAblation, FeaturePermutation."""

from __future__ import annotations

import numbers
from typing import Any

from torch import Tensor

from attribution import functional
from attribution._internal.canonical import BaselineType, TargetType, TensorOrTuple, canonical_call, format_baselines
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution._internal.features import format_feature_mask, superpixel_options
from attribution._internal.progress import progress_bar
from attribution.methods.base import FutureForward, PerturbationAttribution
from attribution.registry import register


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _per_input_shapes(
    value: Any, inputs: tuple[Tensor, ...], name: str, default: int | None = None
) -> tuple[tuple[int, ...], ...]:
    """One int tuple per input (one int per dimension after the batch), as the reference reads them.

    Accepted: an int (every dimension of every input); for a single input a
    tuple of ints (its shape; a 1-tuple is an int); for several inputs one
    entry per input, each an int or a tuple of ints.
    """
    if value is None and default is not None:
        value = default
    if _is_int(value):
        return tuple((int(value),) * (x.dim() - 1) for x in inputs)
    if not isinstance(value, (tuple, list)):
        raise ArgumentTypeError(f"{name}: expected an int or a tuple of ints (one entry per input), got {value!r}")
    if len(inputs) == 1 and all(_is_int(v) for v in value):
        single = len(value) == 1 and inputs[0].dim() > 2  # (2,) for a (C, H, W) example: 2 in every dimension
        per_input = (value[0],) if single else (tuple(value),)
    else:
        per_input = tuple(value)
    if len(per_input) != len(inputs):
        raise ArgumentError(f"{name}: expected one entry per input ({len(inputs)}), got {len(per_input)}: {value!r}")
    shapes: list[tuple[int, ...]] = []
    for i, (entry, x) in enumerate(zip(per_input, inputs)):
        entry = (entry,) * (x.dim() - 1) if _is_int(entry) else entry
        if not isinstance(entry, (tuple, list)) or len(entry) != x.dim() - 1 or not all(map(_is_int, entry)):
            raise ArgumentError(
                f"{name}: expected {x.dim() - 1} ints for input {i} of shape {tuple(x.shape)} "
                f"(one per dimension after the batch), got {entry!r}"
            )
        shapes.append(tuple(int(v) for v in entry))
    return tuple(shapes)


def _check_windows(
    windows: tuple[tuple[int, ...], ...], strides: tuple[tuple[int, ...], ...], inputs: tuple[Tensor, ...]
) -> None:
    for i, (window, stride, x) in enumerate(zip(windows, strides, inputs)):
        for d, (w, s, size) in enumerate(zip(window, stride, x.shape[1:])):
            if w < 1 or w > size:
                raise ArgumentError(
                    f"sliding_window_shapes: window {window} does not fit input {i} of shape {tuple(x.shape)}: "
                    f"dimension {d + 1} has size {size}, the window needs 1..{size}"
                )
            if s < 1 or (s > w and size > w):
                raise ArgumentError(
                    f"strides: stride {stride} for input {i} must be between 1 and the window {window} in every "
                    f"dimension the window slides along (a larger stride leaves features no window covers)"
                )


def _occlusion_probe_options(inputs: Tensor) -> dict[str, Any]:
    """Square windows an eighth of an image's side, over all channels, side by side; else one element."""
    if inputs.dim() == 4:
        side = max(1, min(inputs.shape[-2:]) // 8)
        return {"sliding_window_shapes": (inputs.shape[1], side, side), "strides": (inputs.shape[1], side, side)}
    return {"sliding_window_shapes": (1,) * (inputs.dim() - 1)}


@register("occlusion", probe_options=_occlusion_probe_options)
class Occlusion(PerturbationAttribution):
    """Occlusion (Zeiler & Fergus, 2014): slide a baseline patch over the input.

    Each feature gets the mean drop of the target over the windows covering it.
    A ``(n,)`` input (one number per example) takes the window ``()``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import Occlusion
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> occ = Occlusion(model)
        >>> attr = occ.attribute(images, (3, 4, 4), strides=(3, 2, 2), target=2)  # 4 x 4 windows over all channels
        >>> attr.shape
        torch.Size([2, 3, 8, 8])
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        sliding_window_shapes: tuple[int, ...] | tuple[tuple[int, ...], ...],
        strides: int | tuple[int, ...] | tuple[int | tuple[int, ...], ...] | None = None,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Occlude every window position and record the target's drop.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            sliding_window_shapes: window shape per example (no batch dim), one
                tuple per input for tuple inputs.
            strides: step per dimension: an int, a tuple, or for tuple inputs
                one int or tuple per input; default 1.  Must not exceed the
                window.
            baselines: what occluded features are set to (default 0), as in
                :meth:`IntegratedGradients.attribute`.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            perturbations_per_eval: occluded copies per forward, at most; by
                default chosen from the input size (Captum's default of 1 is
                the slowest choice).
            show_progress: show a progress bar over the windows.

        Returns:
            Attributions shaped like ``inputs`` (floating-point for integer inputs); with ``target=None``
            on several values per example, one row per value, ``(n * K, ...)`` example-major; with a
            forward that returns values for the whole batch, one row per value (``(1, ...)`` for one), and
            then inputs after the first may have batch sizes of their own (sparse index lists), as in
            :meth:`FeatureAblation.attribute`.
        """
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, allow_ragged=True)
        baselines = format_baselines(baselines, call.inputs)
        windows = _per_input_shapes(sliding_window_shapes, call.inputs, "sliding_window_shapes")
        steps = _per_input_shapes(strides, call.inputs, "strides", default=1)
        _check_windows(windows, steps, call.inputs)
        total = sum(
            functional.perturbation.SlidingWindows(tuple(x.shape[1:]), w, s).size
            for w, s, x in zip(windows, steps, call.inputs)
        )
        with progress_bar(show_progress, total, "Occlusion") as progress:
            attrs = functional.occlusion(
                call.objective,
                call.inputs,
                baselines,
                windows=windows,
                strides=steps,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return call.restore(attrs)


@register("feature_ablation", probe_options=superpixel_options(8))
class FeatureAblation(FutureForward, PerturbationAttribution):
    """Feature ablation: each feature group's contribution is the target's drop when it is
    replaced by the baseline.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import FeatureAblation
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> cells = torch.arange(4).view(2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)  # 2 x 2 cells of 4 x 4
        >>> superpixels = cells[None, None]  # (1, 1, 8, 8): shared by the batch and the channels
        >>> attr = FeatureAblation(model).attribute(images, feature_mask=superpixels, target=2)
        >>> attr.shape, attr[0, :, :4, :4].unique().numel()  # one value per superpixel
        (torch.Size([2, 3, 8, 8]), 1)
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
        enable_cross_tensor_attribution: bool = True,
    ) -> TensorOrTuple:
        """Ablate each feature group in turn.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            baselines: values ablated features take (default 0), as in
                :meth:`IntegratedGradients.attribute`.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            feature_mask: integer feature ids per input, broadcastable to it
                (with or without the batch dimension); ids 0..F-1 without gaps,
                shared across inputs (floating masks of whole numbers are
                converted).  Default: every element its own feature.
            perturbations_per_eval: ablated copies per forward, at most; by
                default chosen from the input size.
            show_progress: show a progress bar.
            enable_cross_tensor_attribution: accepted for code written against Captum; an id used in several
                inputs' masks is always one feature, ablated in all of them at once, as in Captum's current
                versions (False, Captum's removed per-input mode, is an error).

        Returns:
            Attributions shaped like ``inputs``: every element gets its feature's drop (floating-point
            for integer and bool inputs).  With ``target=None`` on a forward with ``K`` values per example,
            one row per value, ``(n * K, ...)`` example-major (Captum's layout).  When ``forward_func``
            returns values for the whole batch (a loss, say; a number, or a tensor whose first dimension
            is not the batch, such as ``(1, K)`` or ``(K,)``), each feature is ablated in every example at
            once and the attributions have one row per value, ``(K, ...)`` (a first dimension of 1 for a
            single value); the mask must then be shared by the batch, and inputs after the first may have
            batch sizes of their own (sparse index lists with offsets; an empty tensor gets zeros).
        """
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, allow_ragged=True)
        baselines = format_baselines(baselines, call.inputs)
        if enable_cross_tensor_attribution is not True:
            raise ArgumentError(
                "enable_cross_tensor_attribution: only True is supported (an id used in several inputs' masks is "
                f"one feature, as in Captum's current versions, which no longer have the other mode), got "
                f"{enable_cross_tensor_attribution!r}"
            )
        features = format_feature_mask(feature_mask, call.inputs)
        with progress_bar(show_progress, features.count, "FeatureAblation") as progress:
            attrs = functional.feature_ablation(
                call.objective,
                call.inputs,
                baselines,
                features,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return call.restore(attrs)


@register("feature_permutation", probe_options=superpixel_options(8))
class FeaturePermutation(FutureForward, PerturbationAttribution):
    """Permutation feature importance: the target's change when a feature group is shuffled
    across the batch (which needs a batch of at least two examples)."""

    draws_random_numbers = True
    perturbs_feature_groups = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Shuffle each feature group across the batch in turn (torch's global generator draws
        the permutations); arguments and result as in :meth:`FeatureAblation.attribute`.

        A batch of one example cannot be shuffled: every attribution is then 0, with a warning
        (as in the reference).
        """
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, allow_ragged=True)
        features = format_feature_mask(feature_mask, call.inputs)
        with progress_bar(show_progress, features.count, "FeaturePermutation") as progress:
            attrs = functional.feature_permutation(
                call.objective, call.inputs, features, perturbations_per_eval=perturbations_per_eval, progress=progress
            )
        return call.restore(attrs)
