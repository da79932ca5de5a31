"""Evaluating several perturbed copies of a batch in one forward (``perturbations_per_eval``), for the
robustness metrics: copies are concatenated along the batch, and tensors among the forward's further
arguments are repeated to match."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentTypeError


def concat(copies: Sequence[Any]) -> Any:
    """The copies (tensors, or tuples of tensors) joined along the batch dimension, on the first's device."""
    first = copies[0]
    if isinstance(first, Tensor):
        return torch.cat([c.to(first.device) for c in copies])
    if isinstance(first, tuple):
        return tuple(concat([c[i] for c in copies]) for i in range(len(first)))
    raise ArgumentTypeError(
        f"perturbations_per_eval: batching perturbed inputs needs a tensor or a tuple of tensors after "
        f"preproc_fn, got {describe(first)}; pass perturbations_per_eval=1"
    )


def batch_size(value: Any) -> int:
    """The number of examples of a tensor, or of a tuple's first tensor."""
    first = value
    while isinstance(first, tuple):
        first = first[0]
    if not isinstance(first, Tensor) or first.dim() == 0:
        raise ArgumentTypeError(f"perturbations_per_eval: expected batched tensors, got {describe(value)}")
    return int(first.shape[0])


def repeat_args(args: tuple[Any, ...], copies: int) -> tuple[Any, ...]:
    """The forward's further arguments for ``copies`` concatenated copies: tensors repeated along dim 0."""
    if copies == 1:
        return args
    return tuple(torch.cat([a] * copies) if isinstance(a, Tensor) and a.dim() > 0 else a for a in args)


def split_rows(output: Any, sizes: Sequence[int]) -> list[Any]:
    """The forward's output of concatenated copies, cut back into one slice per copy."""
    slices = []
    start = 0
    for size in sizes:
        slices.append(output[start : start + size])
        start += size
    return slices
