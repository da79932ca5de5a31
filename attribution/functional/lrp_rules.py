"""The LRP rules as published (Bach et al., 2015; Montavon et al., 2017, 2019; Lapuschkin et al., 2019;
Andéol et al., 2021), in the definitions of Zennit, the reference LRP library: how relevance crosses one call
of a module.

Each rule maps the relevance at a module's output, ``R``, to the relevance at its input.  The module must be
affine in its first argument once its parameters are fixed (linear, convolution, pooling, batch norm in eval);
the rules re-run it with modified inputs and parameters and take vector-Jacobian products of those forwards.
With ``x+ = max(x, 0)``, ``x- = min(x, 0)``, ``w+`` / ``w-`` the clamped parameters (biases too, unless
zeroed), ``s(z) = z + eps * sign(z)`` (the sign of 0 is +1) and ``f(x; w)`` the module:

- epsilon: ``R_x = x * J^T (R / s(z))`` with ``z = f(x; w)``; norm is epsilon with the stabiliser for a
  module without parameters (sum and average pooling);
- z-plus (alpha=1, beta=0): ``z+ = f(x+; w+) + f(x-; w-, no bias)``, ``R_x = x+ * J+^T (R / s(z+)) +
  x- * J-^T (R / s(z+))``: positive contributions only, for signed inputs too;
- alpha-beta: the same split for positive (``alpha``) and negative (``beta``) contributions, ``alpha - beta
  = 1``: ``R_x = alpha * R+ - beta * R-``;
- gamma (generalized, Andéol et al.): positive outputs are explained by ``f(x+; w + gamma w+) + f(x-; w + gamma
  w-, no bias)``, negative ones by ``f(x+; w + gamma w-) + f(x-; w + gamma w+, no bias)``, each masked by the sign
  of the module's output ``z``: a unit with a negative output still hands its relevance down, as it does when
  it feeds a residual sum;
- z-box (for a first layer on bounded inputs ``low <= x <= high``): ``z = f(x; w) - f(low; w+) - f(high; w-)``,
  ``R_x = x * J^T r - low * J+^T r - high * J-^T r`` with ``r = R / s(z)``;
- flat (every weight 1, no bias, the input 1) and w-square (the squared parameters, the input 1):
  ``R_x = J'^T (R / s(f(1; w')))``: relevance spread by the receptive field alone, whatever ``x`` is.

``zero_params`` names parameters to set to zero in every term (``("bias",)``: the rule conserves relevance
exactly).  A module followed by a batch norm that runs on running statistics propagates through both at once
(Zennit's canonizer ``MergeBatchNorm``, without touching the module): :func:`folded_parameters`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

ParameterRule = Callable[[nn.Module, tuple[Any, ...], Tensor], Mapping[str, Tensor]]
"""``(module, inputs, output) -> {parameter name: modified value}`` for one call of a module."""


@dataclass(frozen=True)
class LayerRule:
    """How relevance crosses one module.

    Attributes:
        epsilon: added to the modified output (with its sign) before dividing by it.
        parameters: the modified parameters (by name) the rule propagates through; None keeps the module's.
        identity: pass the output's relevance to the input unchanged (same shapes), ignoring the rest.
        propagate: a published rule, computed in the backward from the relevance at the output (the fields
            above are then unused).
        reaches_zero_inputs: ``propagate`` can give relevance to inputs that are 0 (flat, w-square, z-box).
        published: a published rule (also the epsilon rule in its forward form): a batch norm right after the
            module folds into it, and ops without rules get the published treatments.
    """

    epsilon: float = 1e-9
    parameters: ParameterRule | None = None
    identity: bool = False
    propagate: Callable[[LayerCall, Tensor], Tensor] | None = None
    reaches_zero_inputs: bool = False
    published: bool = False


@dataclass(eq=False)
class LayerCall:
    """One call of a module under a published rule, kept for its backward.

    Attributes:
        module: the module.
        input: a copy of its first argument (later in-place ops cannot change it).
        rest: the other positional arguments; ``kwargs`` the keyword ones.
        output: its output, detached.
        source: the first argument itself, to tell whether it is (a view of) a model input.
        folded: the batch norm that runs right after it on running statistics, propagated through at once.
    """

    module: nn.Module
    input: Tensor
    rest: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Tensor
    source: Tensor
    folded: nn.Module | None = None  # a batch norm

    def parameters(self, zero: Sequence[str] = ()) -> dict[str, Tensor]:
        """The module's parameters (with the batch norm folded in), those named in ``zero`` set to 0."""
        own = {name: p.detach() for name, p in self.module._parameters.items() if p is not None}
        if isinstance(self.folded, _BatchNorm):
            own = folded_parameters(own, self.folded)
        return {name: torch.zeros_like(p) if name in zero else p for name, p in own.items()}

    def forward(self, x: Tensor, parameters: Mapping[str, Tensor]) -> Tensor:
        """The module on ``x`` with ``parameters`` in place of its own, on a shallow copy (no hooks run)."""
        twin = copy.copy(self.module)
        twin._parameters = {**self.module._parameters, **parameters}  # type: ignore[dict-item]
        out: Tensor = twin.forward(x, *self.rest, **self.kwargs)
        return out

    def unmodified_output(self) -> Tensor:
        """The output the rule explains: the module's own, or the batch norm's after it."""
        if self.folded is None:
            return self.output
        with torch.no_grad():
            return self.forward(self.input, self.parameters())


Propagate = Callable[[LayerCall, Tensor], Tensor]
"""``(call, relevance at its output) -> relevance at its input``: a published rule."""

FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Modules a following batch norm is folded into (their output channel is the weight's first dim)."""


def can_fold(module: nn.Module, norm: nn.Module) -> bool:
    """``norm`` is a batch norm on running statistics whose channels are ``module``'s outputs."""
    weight = module._parameters.get("weight")
    return (
        isinstance(module, FOLDABLE)
        and isinstance(norm, _BatchNorm)
        and norm.running_mean is not None
        and norm.running_var is not None
        and weight is not None
        and norm.num_features == weight.shape[0]
    )


def folding_scale(norm: _BatchNorm) -> Tensor:
    """Per channel, the factor the batch norm multiplies its input by: ``weight / sqrt(running_var + eps)``."""
    var = norm.running_var
    assert isinstance(var, Tensor)
    scale = torch.rsqrt(var + norm.eps)
    return scale * norm.weight.detach() if norm.weight is not None else scale


def folded_parameters(parameters: Mapping[str, Tensor], norm: _BatchNorm) -> dict[str, Tensor]:
    """``weight * scale`` and ``(bias - mean) * scale + shift``: the module and the batch norm as one."""
    mean = norm.running_mean
    assert isinstance(mean, Tensor)
    scale = folding_scale(norm)
    weight = parameters["weight"]
    bias = parameters.get("bias", torch.zeros_like(scale))
    shift = norm.bias.detach() if norm.bias is not None else torch.zeros_like(scale)
    return {
        **parameters,
        "weight": weight * scale.reshape(-1, *(1,) * (weight.dim() - 1)),
        "bias": (bias - mean) * scale + shift,
    }


# ---------------------------------------------------------------- the rules


def stabilized(z: Tensor, epsilon: float) -> Tensor:
    """``z + epsilon * sign(z)``, with the sign of 0 taken as +1."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _modified(parameters: Mapping[str, Tensor], change: Callable[[Tensor], Tensor], bias: bool) -> dict[str, Tensor]:
    """``change`` applied to every parameter; the bias dropped (zeroed) when ``bias`` is False."""
    return {name: change(p) if bias or name != "bias" else torch.zeros_like(p) for name, p in parameters.items()}


def _backward_through(
    call: LayerCall,
    terms: Sequence[tuple[Tensor, Mapping[str, Tensor]]],
    divide: Callable[[list[Tensor]], list[Tensor]],
) -> list[Tensor]:
    """Forward each ``(input, parameters)`` term, then the vector-Jacobian product of each output, wrt its
    input, with the vector ``divide(outputs)`` gives for it."""
    with torch.enable_grad():
        xs = [x.detach().requires_grad_() for x, _ in terms]
        zs = [call.forward(x, p) for x, (_, p) in zip(xs, terms)]
        vectors = divide([z.detach() for z in zs])
        return list(torch.autograd.grad(zs, xs, vectors))


def epsilon_rule(call: LayerCall, relevance: Tensor, epsilon: float, zero: Sequence[str] = ()) -> Tensor:
    """``R_x = x * J^T (R / s(z))``: the epsilon rule (LRP-0 for epsilon 0; norm for modules without
    parameters)."""
    x = call.input
    (g,) = _backward_through(call, [(x, call.parameters(zero))], lambda z: [relevance / stabilized(z[0], epsilon)])
    return x * g


def alpha_beta_rule(
    call: LayerCall, relevance: Tensor, alpha: float, beta: float, stabilizer: float, zero: Sequence[str] = ()
) -> Tensor:
    """Positive contributions weighted by ``alpha``, negative by ``beta`` (z-plus: 1 and 0)."""
    x, p = call.input, call.parameters(zero)
    up, down = x.clamp(min=0), x.clamp(max=0)
    positive = [(up, _modified(p, _plus, True)), (down, _modified(p, _minus, False))]
    negative = [(up, _modified(p, _minus, True)), (down, _modified(p, _plus, False))] if beta else []

    def divide(z: list[Tensor]) -> list[Tensor]:
        vectors = [relevance / stabilized(z[0] + z[1], stabilizer)] * 2
        return vectors + ([relevance / stabilized(z[2] + z[3], stabilizer)] * 2 if beta else [])

    g = _backward_through(call, positive + negative, divide)
    result = alpha * (up * g[0] + down * g[1])
    return result - beta * (up * g[2] + down * g[3]) if beta else result


def gamma_rule(call: LayerCall, relevance: Tensor, gamma: float, stabilizer: float, zero: Sequence[str] = ()) -> Tensor:
    """The generalized gamma rule: positive outputs by the boosted positive contributions, negative outputs
    by the boosted negative ones, each unit by the sign of its own output."""
    x, p = call.input, call.parameters(zero)
    up, down = x.clamp(min=0), x.clamp(max=0)
    z = call.unmodified_output()

    def boosted(part: Callable[[Tensor], Tensor], bias: bool) -> dict[str, Tensor]:
        return _modified(p, lambda w: w + gamma * part(w), bias)

    terms = [
        (up, boosted(_plus, True)),
        (down, boosted(_minus, False)),
        (up, boosted(_minus, True)),
        (down, boosted(_plus, False)),
    ]

    def divide(outputs: list[Tensor]) -> list[Tensor]:
        positive = relevance * (z > 0) / stabilized(outputs[0] + outputs[1], stabilizer)
        negative = relevance * (z < 0) / stabilized(outputs[2] + outputs[3], stabilizer)
        return [positive, positive, negative, negative]

    g = _backward_through(call, terms, divide)
    return up * (g[0] + g[2]) + down * (g[1] + g[3])


def z_box_rule(
    call: LayerCall,
    relevance: Tensor,
    low: Tensor | float,
    high: Tensor | float,
    stabilizer: float,
    zero: Sequence[str] = (),
) -> Tensor:
    """The z-box rule for inputs bounded by ``low`` and ``high`` (broadcast like one example)."""
    x, p = call.input, call.parameters(zero)
    lows, highs = (torch.as_tensor(bound).to(x).expand_as(x) for bound in (low, high))
    terms = [(x, p), (lows, _modified(p, _plus, True)), (highs, _modified(p, _minus, True))]
    g = _backward_through(call, terms, lambda z: [relevance / stabilized(z[0] - z[1] - z[2], stabilizer)] * 3)
    return x * g[0] - lows * g[1] - highs * g[2]


def flat_rule(call: LayerCall, relevance: Tensor, stabilizer: float, zero: Sequence[str] = ()) -> Tensor:
    """Relevance spread over the receptive field alone: weights 1, no bias, input 1."""
    dropped = ("bias", *zero)
    p = {name: torch.zeros_like(v) if name in dropped else torch.ones_like(v) for name, v in call.parameters().items()}
    (g,) = _backward_through(
        call, [(torch.ones_like(call.input), p)], lambda z: [relevance / stabilized(z[0], stabilizer)]
    )
    return g


def w_square_rule(call: LayerCall, relevance: Tensor, stabilizer: float, zero: Sequence[str] = ()) -> Tensor:
    """Relevance spread by the squared parameters, input 1."""
    p = {name: v**2 for name, v in call.parameters(zero).items()}
    (g,) = _backward_through(
        call, [(torch.ones_like(call.input), p)], lambda z: [relevance / stabilized(z[0], stabilizer)]
    )
    return g


def _plus(w: Tensor) -> Tensor:
    return w.clamp(min=0)


def _minus(w: Tensor) -> Tensor:
    return w.clamp(max=0)
