"""Layer-wise relevance propagation: LRP and the rules set per module (Captum's names), which LayerLRP
(:mod:`attribution.methods.layer.lrp`) reads too.

A module's rule is its ``rule`` attribute, as in Captum::

    model.conv1.rule = GammaRule(gamma=0.25)
    model.fc.rule = EpsilonRule(epsilon=1e-6)
    relevance, delta = LRP(model).attribute(images, target=3, return_convergence_delta=True)

Modules without one get Captum's default where it has one (the epsilon rule
with epsilon = 1e-9 for linear, convolution, batch norm and pooling layers);
every other module and function is handled by how relevance travels (see
:mod:`attribution.functional.lrp`): linear ops conserve it, residual
additions split it in proportion to the summands, elementwise activations
pass it unchanged.  Captum's own rule objects (``captum.attr._utils.lrp_rules``)
are accepted too, and so are Captum-style rules that override
``_manipulate_weights(module, inputs, outputs)``: it is called on a copy of
the module.  The model is never modified, not even during the call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor, nn

from attribution._internal.canonical import TargetType, TensorOrTuple, canonical_call, describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution.functional import lrp
from attribution.functional.lrp import LayerRule
from attribution.methods.base import GradientAttribution, WithDelta, with_delta
from attribution.methods.lrp_rules import Composite, Rule, composite_of
from attribution.registry import register

# ---------------------------------------------------------------- rules


class PropagationRule:
    """Base of the LRP rules.  A subclass may override ``_manipulate_weights`` as in Captum.

    Attributes:
        STABILITY_FACTOR: epsilon added to each (modified) output, with its sign, before dividing by it.
    """

    STABILITY_FACTOR: float = 1e-9

    def _manipulate_weights(self, module: nn.Module, inputs: tuple[Any, ...], outputs: Tensor) -> None:
        """Modify ``module.weight.data`` / ``module.bias.data`` in place (Captum's hook for custom rules).
        It is only ever called on a copy of the module whose parameters are copies."""

    def _layer_rule(self) -> LayerRule:
        """The rule in the form the functional core applies."""
        if type(self)._manipulate_weights is PropagationRule._manipulate_weights:
            return LayerRule(self.STABILITY_FACTOR)
        return LayerRule(self.STABILITY_FACTOR, partial(lrp.manipulated_parameters, self._manipulate_weights))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EpsilonRule(PropagationRule):
    """``R_in = a * W^T (R_out / (z + epsilon * sign(z)))``: a larger epsilon absorbs weak, noisy relevance.

    Args:
        epsilon: the stabiliser; relevance is conserved as it goes to 0 (bias terms absorb their share).
    """

    def __init__(self, epsilon: float = 1e-9) -> None:
        self.STABILITY_FACTOR = epsilon

    def __repr__(self) -> str:
        return f"EpsilonRule(epsilon={self.STABILITY_FACTOR!r})"


class GammaRule(PropagationRule):
    """Propagate through ``w + gamma * max(w, 0)``: favours positive contributions (for lower layers).
    Captum's definition, for inputs that are never negative; on signed inputs (a warning says so) the
    published rule is :class:`attribution.lrp.Gamma`.

    Args:
        gamma: how much the positive weights are boosted.
        set_bias_to_zero: propagate as if the module had no bias.
    """

    def __init__(self, gamma: float = 0.25, set_bias_to_zero: bool = False) -> None:
        self.gamma = gamma
        self.set_bias_to_zero = set_bias_to_zero

    def _layer_rule(self) -> LayerRule:
        return LayerRule(
            self.STABILITY_FACTOR, partial(_clamped_weights, lrp.gamma_parameters, self.gamma, self.set_bias_to_zero)
        )

    def __repr__(self) -> str:
        return f"GammaRule(gamma={self.gamma!r}, set_bias_to_zero={self.set_bias_to_zero!r})"


class Alpha1_Beta0_Rule(PropagationRule):  # Captum's name
    """Propagate through ``max(w, 0)`` only (Captum's alpha=1, beta=0 rule, "deep Taylor").  On inputs
    that are never negative (after a ReLU) only positive relevance flows; on signed inputs Captum's definition
    propagates ``x * max(w, 0)`` and relevance changes sign (a warning says so): the published rule is
    :class:`attribution.lrp.ZPlus`.  Not meant for batch norm, whose weight is a scale.

    Args:
        set_bias_to_zero: propagate as if the module had no bias.
    """

    def __init__(self, set_bias_to_zero: bool = False) -> None:
        self.set_bias_to_zero = set_bias_to_zero

    def _layer_rule(self) -> LayerRule:
        return LayerRule(
            self.STABILITY_FACTOR, partial(_clamped_weights, lrp.positive_parameters, self.set_bias_to_zero)
        )

    def __repr__(self) -> str:
        return f"Alpha1_Beta0_Rule(set_bias_to_zero={self.set_bias_to_zero!r})"


class IdentityRule(EpsilonRule):
    """Pass the output's relevance to the input unchanged (a module whose input and output have the same
    shape, such as batch norm).  Relevance at input units that are exactly 0 is dropped."""

    def _layer_rule(self) -> LayerRule:
        return LayerRule(self.STABILITY_FACTOR, identity=True)

    def __repr__(self) -> str:
        return "IdentityRule()"


SIGNED_INPUTS = (
    "LRP: GammaRule and Alpha1_Beta0_Rule follow Captum's definitions, which propagate signed inputs through "
    "clamped weights (relevance can blow up or change sign); the rules as published split x+ w+ and x- w-: "
    "use attribution.lrp's Gamma, ZPlus or a composite (composite='epsilon_plus')"
)
"""The warning when one of Captum's clamped-weight rules meets negative inputs."""


def _clamped_weights(parameters: Callable[..., dict[str, Tensor]], *options: Any) -> dict[str, Tensor]:
    """``parameters(module, *settings)`` for ``options = (*settings, module, inputs, output)``, bound with
    ``partial`` to its settings and called as the core calls every rule; warns on signed inputs."""
    *settings, module, inputs, _output = options
    if inputs and isinstance(inputs[0], Tensor) and bool((inputs[0] < 0).any()):
        warnings.warn(SIGNED_INPUTS, stacklevel=2)
    return parameters(module, *settings)


DEFAULT_RULE_TYPES = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
"""Modules that get ``EpsilonRule()`` when they have no ``rule`` (Captum's defaults, with their 1-d and 3-d
siblings); any other module without one needs no rule."""


def _foreign_rule(rule: Any) -> LayerRule | None:
    """A Captum rule object (or any with Captum's ``_manipulate_weights``) as a :class:`LayerRule`."""
    manipulate = getattr(rule, "_manipulate_weights", None)
    if isinstance(rule, type) or not callable(manipulate):
        return None
    classes = type(rule).__mro__
    epsilon = float(getattr(rule, "STABILITY_FACTOR", PropagationRule.STABILITY_FACTOR))
    if any(c.__name__ == "IdentityRule" for c in classes):
        return LayerRule(epsilon, identity=True)
    owner = next((c for c in classes if "_manipulate_weights" in vars(c)), type(rule))
    if owner.__name__ == "EpsilonRule":  # leaves the weights alone
        return LayerRule(epsilon)
    return LayerRule(epsilon, partial(lrp.manipulated_parameters, manipulate))


def root_module(forward_func: Callable[..., Any]) -> nn.Module | None:
    """The module whose submodules carry the rules: the model, or the module a wrapper calls."""
    for candidate in (forward_func, getattr(forward_func, "__self__", None), getattr(forward_func, "model", None)):
        if isinstance(candidate, nn.Module):
            return candidate
    return None


def module_rules(
    root: nn.Module | None, verbose: bool = False, composite: str | Composite | None = None
) -> dict[nn.Module, LayerRule]:
    """The rule of every module of ``root`` that has one: its own ``rule``, else the composite's, else (without
    a composite) Captum's default for its type.

    Raises:
        TypeError: a ``rule`` that is not an LRP rule; a composite that is neither a name nor a Composite.
        ValueError: a rule on a module with submodules (rules apply to the modules that compute); a composite
            for a model that is not a module.
    """
    if composite is not None and root is None:
        raise ArgumentError("composite: composites assign rules to a model's modules; the model is not an nn.Module")
    assigned = composite_of(composite).rules(root) if composite is not None and root is not None else {}
    rules: dict[nn.Module, LayerRule] = {}
    for name, module in root.named_modules() if root is not None else ():
        rule = getattr(module, "rule", None)
        if rule is None and composite is not None:
            rule = assigned.get(name, (module, None))[1]
        elif rule is None and isinstance(module, DEFAULT_RULE_TYPES):
            rule = EpsilonRule()
        if rule is None:
            continue
        where = f"{name or 'the model'} ({type(module).__name__})"
        layer_rule = rule._layer_rule() if isinstance(rule, (PropagationRule, Rule)) else _foreign_rule(rule)
        if layer_rule is None:
            raise ArgumentTypeError(
                f"rule: {where} has rule {describe(rule)}; expected a published rule (Epsilon, Gamma, AlphaBeta, "
                f"ZPlus, ZBox, Flat, WSquare, Pass, Norm), one of Captum's (EpsilonRule, GammaRule, "
                f"Alpha1_Beta0_Rule, IdentityRule or another PropagationRule), or None"
            )
        if next(module.children(), None) is not None:
            raise ArgumentError(
                f"rule: {where} has submodules; LRP rules apply to modules without submodules, set them there"
            )
        if verbose:
            print(f"Applied {rule!r} on layer {name or 'the model'}: {module}")
        rules[module] = layer_rule
    return rules


class Relevance:
    """What LRP and LayerLRP share: their traits and Captum's ``compute_convergence_delta``."""

    returns_delta = True
    needs_float_inputs = True
    _multiply_by_inputs = True

    def compute_convergence_delta(self, attributions: TensorOrTuple, output: Tensor) -> Tensor:
        """Per example: ``output`` minus the attributions' total (Captum's sign for LRP).

        Relevance is conserved through linear layers without bias, residual additions and activations
        under the epsilon rule as epsilon goes to 0; biases, larger epsilons, the gamma and alpha1-beta0
        rules and ops without a rule (softmax, products) make it non-zero.

        Args:
            attributions: a tensor or a tuple of tensors with the batch first.
            output: the target output per example, e.g. ``model(x)[:, target]``.

        Raises:
            TypeError: attributions or output that are not tensors.
            ValueError: attributions whose batch size is not the output's.
        """
        attrs = (attributions,) if isinstance(attributions, Tensor) else attributions
        if not isinstance(attrs, (tuple, list)) or not attrs or not all(isinstance(a, Tensor) for a in attrs):
            raise ArgumentTypeError(
                f"attributions: expected a tensor or a tuple of tensors, got {describe(attributions)}"
            )
        if not isinstance(output, Tensor):
            raise ArgumentTypeError(f"output: expected a tensor with one value per example, got {describe(output)}")
        n = output.numel()
        if any(a.dim() == 0 or a.shape[0] != n for a in attrs):
            shapes = [tuple(a.shape) for a in attrs]
            raise ArgumentError(f"attributions: expected a batch of {n} (one per output value), got shapes {shapes}")
        return lrp.relevance_delta(tuple(attrs), output)


@register("lrp")
# Captum's LRP API: compute_convergence_delta(attributions, output) replaces the base's signature on purpose.
class LRP(Relevance, GradientAttribution):  # type: ignore[misc]
    """Layer-wise relevance propagation (Bach et al., 2015): the target output is distributed backwards
    over the inputs by each module's rule.

    Works with activations called as functions, in-place and reused modules, and residual additions
    (torchvision ResNets): see ``attribution/functional/lrp.py``.  Batch norm uses its running statistics.

    Args:
        model: the model; rules are read from the ``rule`` attribute of its modules.

    Raises:
        TypeError: a module's ``rule`` is not an LRP rule.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import LRP, GammaRule
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> model[0].rule = GammaRule(gamma=0.25)  # the other modules keep the default rule
        >>> images = torch.rand(2, 3, 8, 8)
        >>> relevance, delta = LRP(model).attribute(images, target=2, return_convergence_delta=True)
        >>> relevance.shape, delta.shape
        (torch.Size([2, 3, 8, 8]), torch.Size([2]))
    """

    def __init__(self, model: Callable[..., Tensor]) -> None:
        super().__init__(model)
        self.model = model
        module_rules(root_module(model))

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        verbose: bool = False,
        *,
        composite: str | Composite | None = None,
    ) -> WithDelta:
        """Relevance of every input feature for the target output.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            target: which output to explain (see :meth:`Saliency.attribute`).
            additional_forward_args: extra arguments passed to the model.
            return_convergence_delta: also return ``output - sum(relevance)`` per example.
            verbose: print the rule applied to each module.
            composite: the published rules by layer type (:mod:`attribution.lrp`), by name (``"epsilon_plus"``,
                ``"epsilon_plus_flat"``, ``"epsilon_alpha2_beta1"``, ``"epsilon_alpha2_beta1_flat"``) or as a
                :class:`~attribution.lrp.Composite`; modules' own ``rule`` attributes win over it.  None: the
                modules' rules, Captum's defaults elsewhere.

        Returns:
            Relevances shaped like ``inputs`` (they sum to the target output where relevance is conserved),
            and the delta if requested.
        """
        call = canonical_call(self.forward_func, inputs, target, additional_forward_args, require_float=True)
        root = root_module(self.forward_func)
        relevances, outputs = lrp.lrp(call.objective, call.inputs, module_rules(root, verbose, composite), root)
        delta = lrp.relevance_delta(relevances, outputs) if return_convergence_delta else None
        return with_delta(call.restore(relevances), delta, return_convergence_delta)
