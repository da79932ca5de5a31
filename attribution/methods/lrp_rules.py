"""The LRP rules as published, with Zennit's names and definitions, and the composites that assign them by
layer type and position.

Captum's rule classes (``EpsilonRule``, ``GammaRule``, ``Alpha1_Beta0_Rule``, ``IdentityRule`` in
:mod:`attribution.methods.lrp`) keep Captum's definitions, so that code and results written for Captum stay
the same.  Those differ from the published rules on signed inputs and on biases: Captum clamps the weights
but propagates the signed input, and keeps the bias unchanged.  The rules here split every contribution into
``x+ w+`` and ``x- w-`` as published (see :mod:`attribution.functional.lrp_rules` for each definition)::

    relevance = LRP(model).attribute(images, target=3, composite="epsilon_plus_flat")
    relevance = LRP(model).attribute(images, target=3, composite=EpsilonGammaBox(low=-2.2, high=2.7))
    model.classifier.rule = Epsilon(0.25)   # a module's own rule wins over the composite

A composite maps the linear layers; activations always pass relevance unchanged (Zennit's ``Pass``), a batch
norm right after a convolution or linear layer is folded into it (Zennit's ``MergeBatchNorm`` canonizer),
residual sums split relevance in proportion to the summands (Zennit's ``Sum`` with ``Norm``, without
rewriting the model), and the model is never modified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn

from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution.functional import lrp_rules
from attribution.functional.lrp_rules import LayerRule

# ---------------------------------------------------------------- rules


class Rule:
    """Base of the published LRP rules; set one as a module's ``rule`` or map it in a :class:`Composite`."""

    def _layer_rule(self) -> LayerRule:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


def _zero(zero_params: str | Sequence[str] | None) -> tuple[str, ...]:
    if zero_params is None:
        return ()
    names = (zero_params,) if isinstance(zero_params, str) else tuple(zero_params)
    if not all(isinstance(n, str) for n in names):
        raise ArgumentTypeError(f"zero_params: expected parameter names, got {zero_params!r}")
    return names


def _stabilizer(value: Any, name: str = "stabilizer") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ArgumentError(f"{name}: expected a number >= 0, got {value!r}")
    return float(value)


class Epsilon(Rule):
    """``R_x = x * J^T (R / (z + epsilon sign(z)))``; epsilon 0 is LRP-0.

    Args:
        epsilon: the stabiliser; larger values absorb weak, contradictory relevance.
        zero_params: parameters to set to zero, e.g. ``"bias"``.
    """

    def __init__(self, epsilon: float = 1e-6, zero_params: str | Sequence[str] | None = None) -> None:
        self.epsilon = _stabilizer(epsilon, "epsilon")
        self.zero_params = _zero(zero_params)

    def _layer_rule(self) -> LayerRule:
        if not self.zero_params:  # the forward form: one pass through the module's own graph, no re-forward
            return LayerRule(self.epsilon, published=True)
        return LayerRule(
            propagate=partial(lrp_rules.epsilon_rule, epsilon=self.epsilon, zero=self.zero_params), published=True
        )


class Norm(Rule):
    """The epsilon rule with a small stabiliser and the parameters untouched: for sums and average pooling.

    Args:
        stabilizer: added to each output (with its sign) before dividing by it.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = _stabilizer(stabilizer)

    def _layer_rule(self) -> LayerRule:
        return LayerRule(self.stabilizer, published=True)


class Gamma(Rule):
    """The generalized gamma rule: contributions that agree with the sign of the output, boosted by gamma.

    Args:
        gamma: how much the agreeing part of the weights is boosted.
        stabilizer: added to each denominator (with its sign).
        zero_params: parameters to set to zero, e.g. ``"bias"``.
    """

    def __init__(
        self, gamma: float = 0.25, stabilizer: float = 1e-6, zero_params: str | Sequence[str] | None = None
    ) -> None:
        self.gamma = _stabilizer(gamma, "gamma")
        self.stabilizer = _stabilizer(stabilizer)
        self.zero_params = _zero(zero_params)

    def _layer_rule(self) -> LayerRule:
        return LayerRule(
            propagate=partial(
                lrp_rules.gamma_rule, gamma=self.gamma, stabilizer=self.stabilizer, zero=self.zero_params
            ),
            published=True,
        )


class AlphaBeta(Rule):
    """Positive contributions weighted by alpha, negative ones by beta, with ``alpha - beta = 1``.

    Args:
        alpha: weight of the positive contributions.
        beta: weight of the negative contributions.
        stabilizer: added to each denominator (with its sign).
        zero_params: parameters to set to zero, e.g. ``"bias"``.

    Raises:
        ValueError: a negative alpha or beta, or ``alpha - beta != 1``.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 1.0,
        stabilizer: float = 1e-6,
        zero_params: str | Sequence[str] | None = None,
    ) -> None:
        self.alpha, self.beta = _stabilizer(alpha, "alpha"), _stabilizer(beta, "beta")
        if self.alpha - self.beta != 1:
            raise ArgumentError(f"alpha, beta: expected alpha - beta = 1 (conservation), got {alpha!r} and {beta!r}")
        self.stabilizer = _stabilizer(stabilizer)
        self.zero_params = _zero(zero_params)

    def _layer_rule(self) -> LayerRule:
        return LayerRule(
            propagate=partial(
                lrp_rules.alpha_beta_rule,
                alpha=self.alpha,
                beta=self.beta,
                stabilizer=self.stabilizer,
                zero=self.zero_params,
            ),
            published=True,
        )


class ZPlus(AlphaBeta):
    """Positive contributions only (alpha 1, beta 0), split as ``x+ w+`` and ``x- w-`` for signed inputs.

    Args:
        stabilizer: added to each denominator (with its sign).
        zero_params: parameters to set to zero, e.g. ``"bias"``.
    """

    def __init__(self, stabilizer: float = 1e-6, zero_params: str | Sequence[str] | None = None) -> None:
        super().__init__(1.0, 0.0, stabilizer, zero_params)

    def __repr__(self) -> str:
        return f"ZPlus(stabilizer={self.stabilizer!r}, zero_params={self.zero_params!r})"


class ZBox(Rule):
    """For the first layer on inputs known to lie in ``[low, high]`` (per channel: shape ``(C, 1, 1)``).

    Args:
        low: the lowest possible input value, a number or a tensor that broadcasts like one example.
        high: the highest possible input value, likewise.
        stabilizer: added to each denominator (with its sign).
        zero_params: parameters to set to zero, e.g. ``"bias"``.
    """

    def __init__(
        self,
        low: float | Tensor,
        high: float | Tensor,
        stabilizer: float = 1e-6,
        zero_params: str | Sequence[str] | None = None,
    ) -> None:
        for name, bound in (("low", low), ("high", high)):
            if isinstance(bound, bool) or not isinstance(bound, (int, float, Tensor)):
                raise ArgumentTypeError(f"{name}: expected a number or a tensor, got {bound!r}")
        self.low, self.high = low, high
        self.stabilizer = _stabilizer(stabilizer)
        self.zero_params = _zero(zero_params)

    def _layer_rule(self) -> LayerRule:
        rule = partial(
            lrp_rules.z_box_rule, low=self.low, high=self.high, stabilizer=self.stabilizer, zero=self.zero_params
        )
        return LayerRule(propagate=rule, reaches_zero_inputs=True, published=True)


class Flat(Rule):
    """Relevance spread uniformly over each output's receptive field (weights 1, input 1): for a first layer.

    Args:
        stabilizer: added to each denominator (with its sign).
        zero_params: parameters to set to zero (the bias always is).
    """

    def __init__(self, stabilizer: float = 1e-6, zero_params: str | Sequence[str] | None = None) -> None:
        self.stabilizer = _stabilizer(stabilizer)
        self.zero_params = _zero(zero_params)

    def _layer_rule(self) -> LayerRule:
        rule = partial(lrp_rules.flat_rule, stabilizer=self.stabilizer, zero=self.zero_params)
        return LayerRule(propagate=rule, reaches_zero_inputs=True, published=True)


class WSquare(Rule):
    """Relevance spread by the squared weights (input 1): for a first layer on unbounded inputs.

    Args:
        stabilizer: added to each denominator (with its sign).
        zero_params: parameters to set to zero, e.g. ``"bias"``.
    """

    def __init__(self, stabilizer: float = 1e-6, zero_params: str | Sequence[str] | None = None) -> None:
        self.stabilizer = _stabilizer(stabilizer)
        self.zero_params = _zero(zero_params)

    def _layer_rule(self) -> LayerRule:
        rule = partial(lrp_rules.w_square_rule, stabilizer=self.stabilizer, zero=self.zero_params)
        return LayerRule(propagate=rule, reaches_zero_inputs=True, published=True)


class Pass(Rule):
    """The output's relevance passes to the input unchanged (a module whose input and output have one shape)."""

    def _layer_rule(self) -> LayerRule:
        return LayerRule(identity=True)

    def __repr__(self) -> str:
        return "Pass()"


# ---------------------------------------------------------------- composites

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
"""Zennit's ``Convolution`` layer type."""
LINEAR_LAYERS = (nn.Linear, *CONVOLUTIONS)
"""Zennit's ``Linear`` layer type: dense layers and convolutions."""
AVERAGE_POOLS = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
"""Zennit's ``AvgPool`` layer type."""
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

LayerMap = Sequence[tuple[type[nn.Module] | tuple[type[nn.Module], ...], Rule]]
"""``[(module types, rule), ...]``: the first entry whose types match a module gives its rule."""


class Composite:
    """Rules assigned by layer type, with a special map for the first layer, and by module name.

    Args:
        layer_map: ``[(types, rule), ...]`` for every module; the first match wins.
        first_map: the same for the first module (in ``named_modules`` order) that any of its types matches.
        name_map: ``{dotted module name: rule}``, before both maps.

    Example:
        >>> from torch import nn
        >>> from attribution.lrp import Composite, Epsilon, Flat, ZPlus
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
        >>> composite = Composite(layer_map=[(nn.Conv2d, ZPlus()), (nn.Linear, Epsilon())],
        ...                       first_map=[(nn.Conv2d, Flat())])
        >>> {name: type(rule).__name__ for name, (_, rule) in composite.rules(model).items()}
        {'0': 'Flat', '3': 'Epsilon'}
    """

    def __init__(
        self, layer_map: LayerMap = (), first_map: LayerMap = (), name_map: Mapping[str, Rule] | None = None
    ) -> None:
        for name, entries in (("layer_map", layer_map), ("first_map", first_map)):
            for entry in entries:
                if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Rule)):
                    raise ArgumentTypeError(f"{name}: expected (module types, Rule) pairs, got {entry!r}")
        self.layer_map, self.first_map = list(layer_map), list(first_map)
        self.name_map = dict(name_map or {})
        if not all(isinstance(r, Rule) for r in self.name_map.values()):
            raise ArgumentTypeError(f"name_map: expected {{module name: Rule}}, got {self.name_map!r}")

    def rules(self, model: nn.Module) -> dict[str, tuple[nn.Module, Rule]]:
        """The rule of every module the composite maps, by the module's dotted name.

        Raises:
            ValueError: a ``name_map`` name that is not a module of ``model``.
        """
        modules = dict(model.named_modules())
        unknown = sorted(set(self.name_map) - set(modules))
        if unknown:
            raise ArgumentError(f"name_map: {unknown} are not modules of the model")
        assigned: dict[str, tuple[nn.Module, Rule]] = {}
        first_seen = False
        for name, module in modules.items():
            if name in self.name_map:
                assigned[name] = (module, self.name_map[name])
                continue
            if not first_seen:
                first = _match(self.first_map, module)
                if first is not None:
                    first_seen = True
                    assigned[name] = (module, first)
                    continue
            rule = _match(self.layer_map, module)
            if rule is not None:
                assigned[name] = (module, rule)
        return assigned

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _match(layer_map: LayerMap, module: nn.Module) -> Rule | None:
    return next((rule for types, rule in layer_map if isinstance(module, types)), None)


def _base_map(stabilizer: float) -> list[tuple[Any, Rule]]:
    """What every named composite maps besides the linear layers: average pools normalise, batch norms that
    are not folded pass relevance (activations pass it anyway, and residual sums split it)."""
    return [(AVERAGE_POOLS, Norm(stabilizer)), (BATCH_NORMS, Pass())]


class _EpsilonOnDense(Composite):
    """Epsilon on dense layers, the subclass's rule on convolutions, and with ``flat_first`` the flat rule on
    the first linear layer or convolution.

    Args:
        epsilon: the dense layers' epsilon.
        stabilizer: the other rules' stabiliser.
        zero_params: parameters every rule sets to zero, e.g. ``"bias"``.
    """

    flat_first = False

    def __init__(
        self, epsilon: float = 1e-6, stabilizer: float = 1e-6, zero_params: str | Sequence[str] | None = None
    ) -> None:
        convolutions = self._convolution_rule(stabilizer, zero_params)
        super().__init__(
            _base_map(stabilizer) + [(CONVOLUTIONS, convolutions), (nn.Linear, Epsilon(epsilon, zero_params))],
            first_map=[(LINEAR_LAYERS, Flat(stabilizer, zero_params))] if self.flat_first else [],
        )

    @staticmethod
    def _convolution_rule(stabilizer: float, zero_params: str | Sequence[str] | None) -> Rule:
        raise NotImplementedError


class EpsilonPlus(_EpsilonOnDense):
    """Z-plus on convolutions, epsilon on dense layers.

    Args:
        epsilon: the dense layers' epsilon.
        stabilizer: the other rules' stabiliser.
        zero_params: parameters every rule sets to zero, e.g. ``"bias"``.
    """

    @staticmethod
    def _convolution_rule(stabilizer: float, zero_params: str | Sequence[str] | None) -> Rule:
        return ZPlus(stabilizer, zero_params)


class EpsilonPlusFlat(EpsilonPlus):
    """Like :class:`EpsilonPlus`, with the flat rule on the first linear layer or convolution."""

    flat_first = True


class EpsilonAlpha2Beta1(_EpsilonOnDense):
    """Alpha 2, beta 1 on convolutions, epsilon on dense layers.

    Args:
        epsilon: the dense layers' epsilon.
        stabilizer: the other rules' stabiliser.
        zero_params: parameters every rule sets to zero, e.g. ``"bias"``.
    """

    @staticmethod
    def _convolution_rule(stabilizer: float, zero_params: str | Sequence[str] | None) -> Rule:
        return AlphaBeta(2, 1, stabilizer, zero_params)


class EpsilonAlpha2Beta1Flat(EpsilonAlpha2Beta1):
    """Like :class:`EpsilonAlpha2Beta1`, with the flat rule on the first linear layer or convolution."""

    flat_first = True


class EpsilonGammaBox(Composite):
    """Gamma on convolutions, epsilon on dense layers, z-box on the first convolution.

    Args:
        low: the lowest possible input value (a number, or per channel ``(C, 1, 1)``).
        high: the highest possible input value.
        epsilon: the dense layers' epsilon.
        gamma: the convolutions' gamma.
        stabilizer: the other rules' stabiliser.
        zero_params: parameters every rule sets to zero, e.g. ``"bias"``.
    """

    def __init__(
        self,
        low: float | Tensor,
        high: float | Tensor,
        epsilon: float = 1e-6,
        gamma: float = 0.25,
        stabilizer: float = 1e-6,
        zero_params: str | Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            _base_map(stabilizer)
            + [(CONVOLUTIONS, Gamma(gamma, stabilizer, zero_params)), (nn.Linear, Epsilon(epsilon, zero_params))],
            first_map=[(CONVOLUTIONS, ZBox(low, high, stabilizer, zero_params))],
        )


COMPOSITES: dict[str, type[Composite]] = {
    "epsilon_plus": EpsilonPlus,
    "epsilon_plus_flat": EpsilonPlusFlat,
    "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
    "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat,
    "epsilon_gamma_box": EpsilonGammaBox,
}
"""The named composites: ``composite="epsilon_plus_flat"`` builds ``EpsilonPlusFlat()``."""


def composite_of(composite: str | Composite) -> Composite:
    """A composite given by name (with its defaults) or as an instance.

    Raises:
        ValueError: an unknown name, or one that needs arguments (``epsilon_gamma_box``: the input bounds).
        TypeError: neither a name nor a :class:`Composite`.
    """
    if isinstance(composite, Composite):
        return composite
    if not isinstance(composite, str):
        raise ArgumentTypeError(f"composite: expected a name in {sorted(COMPOSITES)} or a Composite, got {composite!r}")
    if composite not in COMPOSITES:
        raise ArgumentError(f"composite: expected one of {sorted(COMPOSITES)}, got {composite!r}")
    if composite == "epsilon_gamma_box":
        raise ArgumentError(
            "composite: 'epsilon_gamma_box' needs the inputs' bounds; pass EpsilonGammaBox(low=..., high=...)"
        )
    return COMPOSITES[composite]()
