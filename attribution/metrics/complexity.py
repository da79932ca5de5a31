"""Complexity of an explanation: how concentrated its attribution is.

* :func:`sparseness` (Chalasani et al., 2020): the Gini index of the absolute attributions, high when few
  features carry the mass;
* :func:`complexity` (Bhatt et al., 2020): the entropy of the fractional contributions ``|a_i| / sum |a|``,
  low when few features carry the mass.

Both follow Quantus's ``Sparseness`` and ``Complexity`` with ``abs=True`` (signs are dropped) and read the
whole map of each example as one vector: channels, pixels and, for a tuple of inputs, the tensors of all
inputs together.  Both are invariant to scaling a map by a positive (or negative) factor.

A map that is zero everywhere spreads no mass at all, so neither concentration is defined: both scores
are NaN for it, not a made-up number (Quantus adds ``1e-7`` to every feature, which turns such a map
into a uniform one and scores it as perfectly spread).  Average with ``torch.nanmean`` and count the
examples used with ``(~scores.isnan()).sum()``.  Otherwise the two agree with Quantus up to the effect of
its epsilons (``1e-7`` added to every feature in ``Sparseness``, ``1e-12`` inside the logarithm in
``Complexity``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attribution._internal.canonical import TensorOrTuple, describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError


def sparseness(attributions: TensorOrTuple) -> Tensor:
    """Gini index of each example's absolute attributions (Chalasani et al., 2020).

    With the ``n`` absolute values sorted ascending, ``a_(1) <= ... <= a_(n)``, the score is
    ``sum_i (2i - n - 1) a_(i) / (n sum_i a_(i))``, Quantus's formula: 0 for a constant map, and
    ``(n - 1) / n``, its largest value, for a map with all its mass on one feature.

    Args:
        attributions: a tensor or tuple of tensors with the batch in dim 0 (any shape after it).

    Returns:
        A tensor of shape ``(N,)`` in ``[0, (n - 1) / n]``, NaN for a map that is zero everywhere (see the
        module docstring).  Float64 for float64 attributions, else float32.

    Raises:
        TypeError: ``attributions`` is not a real-valued tensor or tuple of them.
        ValueError: no batch dimension, an empty map, or tensors with different batch sizes.

    Example:
        >>> import torch
        >>> from attribution.metrics import sparseness
        >>> maps = torch.tensor([[0.0, 0.0, 0.0, 2.0], [1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
        >>> sparseness(maps)  # one feature: (n - 1) / n; constant |a|: 0; all zero: undefined
        tensor([0.7500, 0.0000,    nan])
    """
    values = _absolute(attributions)
    n = values.shape[1]
    ordered = values.sort(dim=1).values
    rank = torch.arange(1, n + 1, dtype=values.dtype, device=values.device)
    total = ordered.sum(1)
    gini = ((2 * rank - n - 1) * ordered).sum(1) / (n * total)
    return _undefined_without_mass(gini, total)


def complexity(attributions: TensorOrTuple) -> Tensor:
    """Entropy of each example's fractional contributions ``p_i = |a_i| / sum |a|`` (Bhatt et al., 2020).

    ``-sum_i p_i log p_i`` in nats, with ``0 log 0 = 0``: 0 for a map with all its mass on one feature,
    ``log(n)``, its largest value, for a constant map over ``n`` features.

    Args:
        attributions: a tensor or tuple of tensors with the batch in dim 0 (any shape after it).

    Returns:
        A tensor of shape ``(N,)`` in ``[0, log(n)]``, NaN for a map that is zero everywhere (see the
        module docstring).  Float64 for float64 attributions, else float32.

    Raises:
        TypeError: ``attributions`` is not a real-valued tensor or tuple of them.
        ValueError: no batch dimension, an empty map, or tensors with different batch sizes.

    Example:
        >>> import torch
        >>> from attribution.metrics import complexity
        >>> maps = torch.tensor([[0.0, 0.0, 0.0, 2.0], [1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
        >>> complexity(maps)  # one feature: 0; constant |a|: log(4); all zero: undefined
        tensor([0.0000, 1.3863,    nan])
    """
    values = _absolute(attributions)
    total = values.sum(1, keepdim=True)
    shares = values / torch.where(total > 0, total, torch.ones_like(total))
    entropy = torch.special.entr(shares).sum(1)  # -p log p, 0 at p = 0
    return _undefined_without_mass(entropy, total[:, 0])


def _undefined_without_mass(scores: Tensor, total: Tensor) -> Tensor:
    """NaN for the maps without any mass: neither concentration is defined there."""
    return torch.where(total > 0, scores, torch.full_like(scores, float("nan")))


def _absolute(attributions: TensorOrTuple) -> Tensor:
    """The absolute attributions of each example as one row, ``(N, n)``, float32 or float64."""
    given_as_tensor = isinstance(attributions, Tensor)
    values: tuple[Tensor, ...] = (attributions,) if isinstance(attributions, Tensor) else attributions
    if not isinstance(values, (tuple, list)) or len(values) == 0:
        raise ArgumentTypeError(
            f"attributions: expected a tensor or a non-empty tuple of tensors, got {describe(attributions)}"
        )
    for i, a in enumerate(values):
        name = "attributions" if given_as_tensor else f"attributions[{i}]"
        if not isinstance(a, Tensor) or a.is_complex():
            raise ArgumentTypeError(f"{name}: expected a real-valued tensor, got {describe(a)}")
        if a.dim() == 0 or a.shape[0] == 0:
            raise ArgumentError(f"{name}: expected a batch of maps (N, ...) with N >= 1, got shape {tuple(a.shape)}")
    n = values[0].shape[0]
    if any(a.shape[0] != n for a in values):
        raise ArgumentError(
            f"attributions: expected the same batch size in every tensor, got {[a.shape[0] for a in values]}"
        )
    dtype = torch.float64 if any(a.dtype == torch.float64 for a in values) else torch.float32
    rows = torch.cat([a.detach().to(dtype).reshape(n, -1) for a in values], dim=1).abs()
    if rows.shape[1] == 0:
        raise ArgumentError(f"attributions: expected non-empty maps, got shapes {[tuple(a.shape) for a in values]}")
    return rows
