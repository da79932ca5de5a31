"""Layer-wise relevance propagation to a layer: LayerLRP.

The relevance arriving at a layer's output (or input), with the rules of :mod:`attribution.methods.lrp`
read from the model's modules as for :class:`attribution.LRP`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from attribution._internal.canonical import TargetType, TensorOrTuple, canonical_call
from attribution.functional import lrp
from attribution.methods.base import GradientAttribution, LayerAttribution, with_delta
from attribution.methods.lrp import Relevance, module_rules, root_module
from attribution.methods.lrp_rules import Composite
from attribution.registry import register


@register("layer_lrp")
# Captum's LRP API: compute_convergence_delta(attributions, output) replaces the base's signature on purpose.
class LayerLRP(Relevance, LayerAttribution, GradientAttribution):  # type: ignore[misc]
    """Layer-wise relevance propagation to a layer's outputs (or inputs): the relevance arriving there.

    Args:
        model: the model; rules are read from the ``rule`` attribute of its modules.
        layer: the module (or dotted name), or a list of them (one result per layer, as in Captum).

    Raises:
        TypeError: a module's ``rule`` is not an LRP rule.
    """

    accepts_layer_lists = True

    def __init__(self, model: Callable[..., Tensor], layer: nn.Module | str | list[nn.Module | str]) -> None:
        super().__init__(model, layer)
        self.model = model
        module_rules(root_module(model))

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        verbose: bool = False,
        *,
        composite: str | Composite | None = None,
    ) -> TensorOrTuple | list[TensorOrTuple] | tuple[TensorOrTuple | list[TensorOrTuple], Tensor | list[Tensor]]:
        """Relevance at the layer, all layers from one forward and one backward.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            return_convergence_delta: also return ``output - sum(relevance)`` per example (per layer).
            attribute_to_layer_input: relevance at the layer's input instead of its output.
            verbose: print the rule applied to each module.
            composite: the published rules by layer type, as for :meth:`attribution.LRP.attribute`.

        Returns:
            Relevance shaped like the layer's output (input); a tuple for several tensors; a list over
            layers when a list was given; and the delta (a list for a list of layers) if requested.

        Raises:
            ValueError: a layer that runs more than once per forward, or never.
        """
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        root = root_module(self.forward_func)
        result = lrp.layer_lrp(
            call.objective,
            call.inputs,
            module_rules(root, verbose, composite),
            root,
            self.layers(),
            attribute_to_layer_input,
        )
        relevances = [rel if was_tuple else rel[0] for rel, was_tuple in zip(result.relevances, result.was_tuple)]
        deltas = [lrp.relevance_delta(rel, result.outputs) for rel in result.relevances]
        if isinstance(self.layer, list):
            return with_delta(relevances, deltas, return_convergence_delta)
        return with_delta(relevances[0], deltas[0], return_convergence_delta)
