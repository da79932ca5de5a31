"""Targets: which scalar of the model's output each example explains, in one canonical form.

Users pass a class index, a tuple index into a multi-dimensional output, a list or tensor with one entry
per example, a callable, or None (the output already holds one value per example); :func:`format_target`
turns each into a :class:`Target`, validated with errors that name the argument.  Part of the boundary in
:mod:`attribution._canonical`, which re-exports these names.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor

from attribution._checks import ArgumentError, ArgumentTypeError, describe

TargetType = Union[None, int, tuple, list, Tensor, Callable[[Tensor], Tensor], "Target"]


@dataclass(frozen=True, eq=False)
class Target:
    """A canonical target: picks one scalar per row from the model's output.

    Exactly one of ``index`` and ``fn`` is set, or neither (the output
    already holds one scalar per row, or ``outputs`` of them).  ``index`` is an ``(n, k)`` long
    tensor: row ``i`` selects ``output[i, *index[i]]``.
    """

    n: int
    index: Tensor | None = None
    fn: Callable[[Tensor], Tensor] | None = None
    name: str = "target"  # the argument's name in error messages (e.g. "neuron_selector")
    outputs: int = 1
    """Values per example: more than 1 explains every element of each example's output (``target=None`` on
    a multi-output forward, for perturbation methods, as Captum does); they come example-major.  For a
    forward that returns values for the whole batch (``n`` is then 1), how many it returns."""

    def repeat(self, repeats: int) -> Target:
        """The same target for a batch of ``repeats`` repeat-major copies."""
        index = None if self.index is None else self.index.repeat(repeats, 1)
        return Target(self.n * repeats, index, self.fn, self.name, self.outputs)

    def select(self, output: Tensor, repeats: int = 1) -> Tensor:
        """The target scalar of every row of ``output`` (``n * repeats`` rows)."""
        rows = self.n * repeats
        if self.fn is not None and isinstance(output, tuple) and all(isinstance(o, Tensor) for o in output):
            return self._picked(self.fn(output), rows)  # a layer of several tensors: the callable picks from all
        if isinstance(output, tuple) and self.name == "neuron_selector":
            raise ArgumentError(
                f"neuron_selector: the layer gives {len(output)} tensors; pick the unit with a callable, "
                f"e.g. lambda outputs: outputs[0][:, 3]"
            )
        if not isinstance(output, Tensor):
            raise ArgumentTypeError(_not_scores_message(output))
        if output.dim() == 0 or output.shape[0] != rows:
            # Values for the whole batch that happen to number its examples read as one per example at first.
            pooled = repeats > 1 and output.dim() > 0 and output.shape[0] == self.n
            hint = "; for a forward that returns values for the whole batch pass perturbations_per_eval=1"
            raise ArgumentError(
                f"forward_func: expected an output with one row per example ({rows} rows), "
                f"got shape {tuple(output.shape)}{hint if pooled else ''}"
            )
        if self.fn is not None:
            picked = self.fn(output)
            if isinstance(picked, Tensor) and picked.numel() == 1 and picked.shape != (rows,):
                # One value for the whole batch (Captum allows it, e.g. ``lambda x: x.sum()``): the callable
                # is applied to every row alone, so each example gets its own value and gradient.
                picked = torch.stack([self.fn(output[r : r + 1]).reshape(()) for r in range(rows)])
            return self._picked(picked, rows)
        if self.outputs > 1 and output[0].numel() == self.outputs:
            return output.reshape(rows * self.outputs)
        if self.index is None:
            if output[0].numel() != 1:
                raise ArgumentError(
                    f"{self.name}: None needs one output value per example, but the output has shape "
                    f"{tuple(output.shape)}; pass target=<class index> or a callable"
                )
            return output.reshape(rows)
        return self._gather(output, repeats)

    def _picked(self, picked: Any, rows: int) -> Tensor:
        if isinstance(picked, Tensor) and picked.dim() > 1 and picked.shape[0] == rows and picked[0].numel() == 1:
            picked = picked.reshape(rows)  # one value per row with trailing dimensions of size 1: x[:, 0:1]
        if not isinstance(picked, Tensor) or picked.shape != (rows,):
            raise ArgumentError(
                f"{self.name}: the callable must return a tensor of shape ({rows},), got {describe(picked)}"
            )
        return picked

    def _gather(self, output: Tensor, repeats: int) -> Tensor:
        k = self.index.shape[1]
        if output.dim() - 1 > k and all(size == 1 for size in output.shape[1 + k :]):
            output = output.reshape(output.shape[: 1 + k])  # trailing dimensions of size 1 (N, C, 1): as (N, C)
        dims = output.shape[1:]
        if len(dims) != k:
            raise ArgumentError(
                f"{self.name}: selects {k} output dimension(s) but the output has shape {tuple(output.shape)}; "
                f"a target must pick exactly one value per example (use a tuple index or a callable)"
            )
        upper = self.index.max(dim=0).values.tolist()
        for d, (largest, size) in enumerate(zip(upper, dims)):
            if largest >= size:
                raise ArgumentError(
                    f"{self.name}: index {largest} is out of range for output dimension {d + 1} of size {size} "
                    f"(output shape {tuple(output.shape)})"
                )
        index = self.index.to(output.device)
        strides = torch.tensor([math.prod(dims[d + 1 :]) for d in range(k)], device=output.device)
        flat_index = (index * strides).sum(dim=1).repeat(repeats)
        return output.reshape(output.shape[0], -1).gather(1, flat_index[:, None]).squeeze(1)


def _not_scores_message(output: Any) -> str:
    """Why a non-tensor output cannot be explained; for the structured outputs models return (a dict, a
    Hugging Face ``ModelOutput``, a tuple), how to turn it into class scores."""
    if isinstance(output, Mapping):  # ModelOutput is a dict too: name its keys, not its tensors
        given = f"a {type(output).__name__} with keys {list(output)[:8]}"
    elif isinstance(output, (tuple, list)) or hasattr(output, "logits"):
        given = f"a {type(output).__name__}"
    else:
        return f"forward_func: expected it to return a tensor, got {describe(output)}"
    return (
        f"forward_func: expected it to return a tensor of scores (N, C), got {given}; wrap the model in "
        f'attribution.outputs.ModelScores, which takes the scores from a dict ("logits", then "out"), a '
        f"Hugging Face ModelOutput (.logits) or a tuple (scores first), e.g. "
        f"IntegratedGradients(ModelScores(model)).attribute(x, target=1)"
    )


def format_target(target: TargetType, n: int, name: str = "target") -> Target:
    """Turn any accepted ``target`` form into a :class:`Target` for a batch of ``n``.

    ``name`` is the argument's name in error messages (neuron methods pass ``"neuron_selector"``).
    """
    if isinstance(target, Target):
        if target.n != n:
            raise ArgumentError(f"{name}: built for {target.n} examples, the batch has {n}")
        return target
    if target is None:
        return Target(n, name=name)
    if callable(target) and not isinstance(target, Tensor):
        return Target(n, fn=target, name=name)
    if isinstance(target, Tensor):
        if target.numel() == 1:
            target = int(target.item())
        elif target.dim() == 1:
            return Target(n, index=_index_rows(target.tolist(), n, name), name=name)
        else:
            raise ArgumentError(
                f"{name}: a tensor must be a scalar or have one entry per example, got shape {tuple(target.shape)}"
            )
    if isinstance(target, bool):
        raise ArgumentTypeError(f"{name}: expected an int, tuple, list, tensor or callable, got {describe(target)}")
    if isinstance(target, numbers.Integral):
        return Target(n, index=_index_rows([int(target)], n, name).expand(n, 1), name=name)
    if isinstance(target, tuple):
        return Target(n, index=_index_rows([target], n, name).expand(n, len(target)), name=name)
    if isinstance(target, list):
        if len(target) != n:
            raise ArgumentError(f"{name}: a list needs one entry per example ({n}), got {len(target)} entries")
        return Target(n, index=_index_rows(target, n, name), name=name)
    raise ArgumentTypeError(f"{name}: expected an int, tuple, list, tensor or callable, got {describe(target)}")


def _index_rows(entries: list, n: int, name: str = "target") -> Tensor:
    """Per-example index rows from ints or tuples of ints, validated."""
    if len(entries) not in (1, n):
        raise ArgumentError(f"{name}: expected one entry per example ({n}), got {len(entries)}")
    rows = [tuple(e) if isinstance(e, (tuple, list)) else (e,) for e in entries]
    if len({len(r) for r in rows}) != 1:
        raise ArgumentError(f"{name}: every per-example entry must index the same number of output dimensions")
    for r in rows:
        for v in r:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ArgumentTypeError(f"{name}: indices must be ints, got {describe(v)}")
            if v < 0:
                raise ArgumentError(f"{name}: indices must be non-negative, got {v}")
    return torch.tensor(rows, dtype=torch.long)
