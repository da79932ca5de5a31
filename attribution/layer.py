"""Layer attribution: GradCAM."""

from __future__ import annotations

from typing import Any

from attribution import functional
from attribution._base import LayerAttribution
from attribution._canonical import TargetType, TensorOrTuple, canonical_call
from attribution.registry import register


@register("layer_gradcam")
class LayerGradCam(LayerAttribution):
    """GradCAM (Selvaraju et al., 2017) on a chosen layer, usually the last convolution.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name (``"layer3.1.conv2"``). It must
            run exactly once per forward.

    Example:
        >>> cam = LayerGradCam(model, model.layer3[1].conv2).attribute(image, target=3)  # doctest: +SKIP
        >>> heat = LayerAttribution.interpolate(cam, image.shape[2:])  # doctest: +SKIP
    """

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
    ) -> TensorOrTuple:
        """GradCAM map of the layer's output (or input).

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            attribute_to_layer_input: attribute to the layer's input instead.
            relu_attributions: keep only positive evidence (the paper's ReLU).
            attr_dim_summation: sum over channels (default) to one map.

        Returns:
            ``(N, 1, *spatial)`` maps (``(N, C, *spatial)`` without summation);
            a tuple if the layer's output is a tuple.

        Raises:
            ValueError: if the layer does not run exactly once per forward.
        """
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args)
        cams, was_tuple = functional.layer_gradcam(
            call.objective,
            call.inputs,
            self.layer,
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=relu_attributions,
            attr_dim_summation=attr_dim_summation,
        )
        return cams if was_tuple else cams[0]
