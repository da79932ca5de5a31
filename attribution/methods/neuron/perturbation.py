"""Neuron perturbation: NeuronFeatureAblation, input feature ablation explaining one hidden unit."""

from __future__ import annotations

from typing import Any

from attribution._internal.canonical import (
    BaselineType,
    TensorOrTuple,
    format_additional_args,
    format_baselines,
    format_inputs,
    restore_structure,
)
from attribution._internal.checks import check_int
from attribution._internal.features import format_feature_mask, superpixel_options
from attribution._internal.progress import progress_bar
from attribution.functional.neuron.perturbation import neuron_feature_ablation
from attribution.functional.neuron.selection import NeuronSelector, neuron_target
from attribution.methods.base import NeuronAttribution, PerturbationAttribution
from attribution.registry import register


@register("neuron_feature_ablation", probe_options=superpixel_options(8))
class NeuronFeatureAblation(NeuronAttribution, PerturbationAttribution):
    """Feature ablation of one unit of a hidden layer: each input feature group's attribution is the
    unit's drop when the group is replaced by the baseline.  The model runs only up to the layer.

    Args:
        forward_func: the model.
        layer: the module holding the unit, or its dotted name.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import NeuronFeatureAblation
        >>> from attribution.utils import grid_feature_mask
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> superpixels = grid_feature_mask(images, 2)  # 2 x 2 cells of 4 x 4 pixels
        >>> ablator = NeuronFeatureAblation(model, model[1])
        >>> attr = ablator.attribute(images, neuron_selector=(1, 2, 3), feature_mask=superpixels)  # (channel, row, col)
        >>> attr.shape, bool((attr[:, :, 4:] == 0).all())  # the lower cells are outside the unit's receptive field
        (torch.Size([2, 3, 8, 8]), True)
    """

    perturbs_feature_groups = True

    def attribute(
        self,
        inputs: TensorOrTuple,
        neuron_selector: NeuronSelector,
        baselines: BaselineType = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        attribute_to_neuron_input: bool = False,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """Ablate each input feature group in turn and record the selected unit's drop.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0, of any dtype.
            neuron_selector: the unit: an int (a layer with one dimension per example), a tuple with one
                int per layer dimension after the batch, a tuple with slices (the covered units are
                summed), or a callable from the layer's output to one value per row (it gets stacked
                copies of the batch, so it must handle any multiple of the batch size in rows).
            baselines, additional_forward_args, feature_mask: as in :meth:`FeatureAblation.attribute`.
            attribute_to_neuron_input: select the unit from the layer's input.
            perturbations_per_eval: ablated copies per forward, at most; by default chosen from the input size.
            show_progress: show a progress bar.

        Returns:
            Attributions shaped like ``inputs`` (floating-point for integer inputs).

        Raises:
            ValueError: a selector that does not fit the layer, bad baselines or mask, or a layer that
                does not run in the model's forward.
        """
        check_int(perturbations_per_eval, "perturbations_per_eval", allow_none=True)
        values, given_as_tensor = format_inputs(inputs)
        neuron = neuron_target(neuron_selector, values[0].shape[0])
        features = format_feature_mask(feature_mask, values)
        with progress_bar(show_progress, features.count, "NeuronFeatureAblation") as progress:
            attrs = neuron_feature_ablation(
                self.forward_func,
                self._one_layer(),
                neuron,
                format_additional_args(additional_forward_args),
                values,
                format_baselines(baselines, values),
                features,
                attribute_to_neuron_input=attribute_to_neuron_input,
                perturbations_per_eval=perturbations_per_eval,
                progress=progress,
            )
        return restore_structure(attrs, given_as_tensor)
