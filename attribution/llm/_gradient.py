"""The functional core of gradient LLM attribution on a causal LM: one forward, one backward per target token.

Captum runs the layer method once per target token ``k``, each time a forward and a backward over
``prompt + target[:k]``.  On a causal LM one forward over ``prompt + target[:-1]`` gives the
log-probabilities of all target tokens at a point of the path, and each token's gradient with respect to
the layer is a backward through that one graph (``retain_graph``): ``T`` backward passes share a forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.autograd import grad_enabled
from attribution.functional.path import integration_nodes

TOKENS_PER_FORWARD = 1024
"""Default path points per forward: as many as fit this many tokens (small chunks are faster on CPU and
keep the graph kept for the ``T`` backward passes small); ``internal_batch_size`` overrides it."""

Forward = Callable[[Tensor], Tensor]
"""Presence indicators ``(N, n_features)`` to target log-probabilities ``(N, T)``."""


@contextmanager
def _layer_output(layer: nn.Module, replacement: Tensor | None = None) -> Iterator[list[Tensor]]:
    """Record the layer's output (or make it ``replacement``) within the block; the hook is always removed."""
    seen: list[Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if replacement is not None:
            return replacement.clone()  # in-place ops downstream leave the path point alone
        seen.append(output)
        return None

    handle = layer.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def layer_output_is_a_tensor(forward: Forward, layer: nn.Module, indicator: Tensor) -> bool:
    """Whether the layer outputs one tensor (what the per-target functions replace); a layer that outputs
    a tuple (a transformer block) is left to the wrapped method."""
    with torch.no_grad(), _layer_output(layer) as seen:
        forward(indicator)
    return len(seen) == 1 and isinstance(seen[0], Tensor)


def _activation(forward: Forward, layer: nn.Module, indicator: Tensor) -> Tensor:
    with torch.no_grad(), _layer_output(layer) as seen:
        forward(indicator)
    return seen[0].detach()


def _target_gradients(forward: Forward, layer: nn.Module, indicator: Tensor, points: Tensor, seed: Tensor) -> Tensor:
    """``(T, *points.shape[1:])``: for each target token, the seeded sum over rows of its gradient at
    ``points`` (one row per point)."""
    with grad_enabled():
        leaf = points.detach().requires_grad_()
        with _layer_output(layer, leaf):
            out = forward(indicator.expand(points.shape[0], -1))
        n_out = out.shape[1]
        grads = [
            torch.autograd.grad(out[:, k], leaf, grad_outputs=seed.to(out), retain_graph=k + 1 < n_out)[0]
            for k in range(n_out)
        ]
    return torch.stack([g.sum(0) for g in grads])


def layer_integrated_gradients_per_target(
    forward: Forward,
    layer: nn.Module,
    indicator: Tensor,
    baseline: Tensor,
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    multiply_by_inputs: bool = True,
) -> Tensor:
    """Layer integrated gradients of every target token: ``(T, *activation.shape[1:])``.

    Args:
        forward: indicators to ``(N, T)`` target log-probabilities (teacher-forced, causal).
        layer: the layer whose output moves from its value at ``baseline`` to its value at ``indicator``.
        indicator: ``(1, n_features)`` the prompt; baseline: ``(1, n_features)`` its baseline.
        n_steps, method: the quadrature rule (as ``IntegratedGradients``).
        internal_batch_size: path points per forward (None: ``TOKENS_PER_FORWARD`` tokens' worth).
        multiply_by_inputs: multiply by ``a(x) - a(baseline)``.
    """
    start = _activation(forward, layer, baseline)
    diff = _activation(forward, layer, indicator) - start
    alphas, weights = integration_nodes(n_steps, method)
    chunk = internal_batch_size or max(1, TOKENS_PER_FORWARD // max(1, diff[0].numel() // diff.shape[-1]))
    total: Tensor | None = None
    for lo in range(0, n_steps, chunk):
        alpha = alphas[lo : lo + chunk].to(diff).view(-1, *([1] * (diff.dim() - 1)))
        part = _target_gradients(forward, layer, indicator, start + alpha * diff, weights[lo : lo + chunk])
        total = part if total is None else total + part
    assert total is not None
    return total * diff if multiply_by_inputs else total


def layer_gradient_x_activation_per_target(
    forward: Forward, layer: nn.Module, indicator: Tensor, *, multiply_by_inputs: bool = True
) -> Tensor:
    """Layer gradient (times the activation) of every target token: ``(T, *activation.shape[1:])``."""
    activation = _activation(forward, layer, indicator)
    grads = _target_gradients(forward, layer, indicator, activation, torch.ones(1))
    return grads * activation if multiply_by_inputs else grads
