"""Layer perturbation methods: LayerFeatureAblation and LayerFeaturePermutation.

Both perturb a hidden layer's units instead of the input features: the model
runs on the original inputs with the layer's output (or input) replaced by
the perturbed values, many perturbed copies per forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

from torch import Tensor

from attribution._internal.canonical import (
    BaselineType,
    CanonicalCall,
    TargetType,
    TensorOrTuple,
    canonical_call,
    format_baselines,
)
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution._internal.features import FeatureMasks, format_feature_mask, grid_feature_mask
from attribution._internal.progress import progress_bar
from attribution.functional.layer.perturbation import layer_feature_ablation, layer_feature_permutation, layer_values
from attribution.methods.base import LayerAttribution, PerturbationAttribution
from attribution.registry import register

LayerMask = Union[None, Tensor, tuple[Tensor, ...], Callable[[TensorOrTuple], Any]]

PROBE_CELLS = 8
"""Probe maps of an image model group a spatial layer into at most this many cells per side (all
channels of a cell together), as the input methods group pixels into superpixels."""


def layer_cells(values: TensorOrTuple) -> Tensor | None:
    """A ``layer_mask`` callable: cells of a ``(N, C, H, W)`` layer map, all channels of a cell in one group;
    None (every unit its own group) for other layers."""
    if isinstance(values, Tensor) and values.dim() == 4:
        return grid_feature_mask(values, PROBE_CELLS)
    return None


def _probe_options(inputs: Tensor) -> dict[str, Any]:
    return {"layer_mask": layer_cells} if inputs.dim() == 4 else {}


def _layer_features(layer_mask: LayerMask, values: tuple[Tensor, ...], as_tuple: bool) -> FeatureMasks:
    """``layer_mask`` (ids, or a callable from the layer's values to ids or None) as feature masks."""
    if callable(layer_mask) and not isinstance(layer_mask, Tensor):
        layer_mask = layer_mask(values if as_tuple else values[0])
    return format_feature_mask(layer_mask, values, name="layer_mask")


def _layer_baselines(layer_baselines: BaselineType, values: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``layer_baselines`` formatted like input baselines, with errors that name ``layer_baselines``."""
    try:
        return format_baselines(layer_baselines, values)
    except ArgumentTypeError as error:
        raise ArgumentTypeError(f"layer_{error}") from None
    except ArgumentError as error:
        raise ArgumentError(f"layer_{error}") from None


class _LayerPerturbation(LayerAttribution, PerturbationAttribution):
    """A perturbation method over the units of ``layer`` (module or dotted name)."""

    def _layer_call(
        self, inputs: TensorOrTuple, target: TargetType, additional_forward_args: Any, to_input: bool
    ) -> tuple[CanonicalCall, tuple[Tensor, ...], bool]:
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        values, as_tuple = layer_values(call.objective, call.inputs, self._one_layer(), use_input=to_input)
        return call, values, as_tuple


@register("layer_feature_ablation", probe_options=_probe_options)
class LayerFeatureAblation(_LayerPerturbation):
    """Ablation of a hidden layer's units: each group's attribution is the target's drop when the group's
    values are replaced by the layer baseline, with everything upstream of the layer left as it is.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name (``"layer3.1.conv2"``). It must run exactly once per forward.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import LayerFeatureAblation
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> ablator = LayerFeatureAblation(model, model[1])
        >>> channels = torch.arange(4).view(1, 4, 1, 1)  # one group per channel
        >>> attr = ablator.attribute(images, target=2, layer_mask=channels)
        >>> attr.shape, attr[0, 0].unique().numel()  # shaped like the layer's output, one value per channel
        (torch.Size([2, 4, 8, 8]), 1)
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        layer_baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMask = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Ablate each group of the layer's units in turn.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0, of any dtype.
            layer_baselines: values ablated units take (default 0): a number, or a tensor that broadcasts
                to the layer's values (one per tensor for a layer with several).
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            layer_mask: integer group ids broadcastable to the layer's values (with or without the batch
                dimension; one per tensor for a layer with several, ids shared across them), ids 0..G-1
                without gaps; or a callable from the layer's values to such ids, for groups that depend on
                the layer's shape (the monitor's probe groups an ``(N, C, H, W)`` map into at most 8 x 8
                cells, all channels of a cell together). Default: every unit its own group.
            attribute_to_layer_input: ablate the layer's input (the tensors its arguments start with).
            perturbations_per_eval: ablated copies per forward, at most; by default chosen from the size
                of the inputs and the layer.
            show_progress: show a progress bar.

        Returns:
            Attributions shaped like the layer's output (input): a tuple when the layer returns a tuple
            (takes several tensors).  With a forward that returns values for the whole batch, one row per
            value (a first dimension of 1 for a single value); with ``target=None`` on ``K`` values per
            example, ``(n * K, ...)``, as in :meth:`FeatureAblation.attribute`.

        Raises:
            ValueError: bad baselines, mask, target or ``perturbations_per_eval``, or a layer that does not
                run exactly once per forward.
        """
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call, values, as_tuple = self._layer_call(inputs, target, additional_forward_args, attribute_to_layer_input)
        baselines = _layer_baselines(layer_baselines, values)
        features = _layer_features(layer_mask, values, as_tuple)
        with progress_bar(show_progress, features.count, "LayerFeatureAblation") as progress:
            attrs = layer_feature_ablation(
                call.objective,
                call.inputs,
                values,
                baselines,
                features,
                self._one_layer(),
                attribute_to_layer_input=attribute_to_layer_input,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return attrs if as_tuple else attrs[0]


@register("layer_feature_permutation", probe_options=_probe_options)
class LayerFeaturePermutation(_LayerPerturbation):
    """Permutation importance of a hidden layer's units: each group's attribution is the target's change
    when the group's values are shuffled across the batch (a batch of at least two examples).

    Args:
        forward_func: the model.
        layer: the module, or its dotted name. It must run exactly once per forward.
    """

    draws_random_numbers = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMask = None,
        perturbations_per_eval: int | None = None,
        attribute_to_layer_input: bool = False,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Shuffle each group of the layer's units across the batch in turn (torch's global generator draws
        the permutations, never the identity).

        Arguments are those of :meth:`LayerFeatureAblation.attribute` without ``layer_baselines``.  A
        batch of one example cannot be shuffled: every attribution is then 0, with a warning.

        Returns:
            Attributions shaped like the layer's output (input), as in :meth:`LayerFeatureAblation.attribute`.
        """
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        call, values, as_tuple = self._layer_call(inputs, target, additional_forward_args, attribute_to_layer_input)
        features = _layer_features(layer_mask, values, as_tuple)
        with progress_bar(show_progress, features.count, "LayerFeaturePermutation") as progress:
            attrs = layer_feature_permutation(
                call.objective,
                call.inputs,
                values,
                features,
                self._one_layer(),
                attribute_to_layer_input=attribute_to_layer_input,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return attrs if as_tuple else attrs[0]
