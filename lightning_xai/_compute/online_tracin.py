"""TracIn computed online, step by step, on the last linear layer (Pruthi et al., 2020).

``influence(z, z') = sum_t lr_t * grad_W L(w_t, z) . grad_W L(w_t, z')`` over the training steps ``t`` at
which ``z`` was in the batch. For a linear layer ``out = W a + b`` the per-example gradient of the loss wrt
``W`` is the outer product ``g a^T`` of ``g = dL/d(out)`` and the layer's input ``a`` (the closed form of
:class:`attribution.influence.TracInCPFast`, which also leaves the bias out), so the dot product of two
examples' gradients is ``(g . g') (a . a')``: no per-example weight gradient is ever materialised.

The gradients are taken on a functional copy of the model whose parameters are detached (``param.grad``,
``requires_grad`` and the autograd graph of training are never touched), with the layer's output replaced
by a leaf so that autograd only runs through what follows the layer. The caller runs this in eval mode
under a forked RNG (:func:`lightning_xai._compute.explain.untouched_training_state`).

Memory stays bounded: per probe example, a pool of candidates holds the exact running sums of at most
``capacity`` examples with the largest scores and ``capacity`` with the smallest ones; an example that is
evicted and comes back later starts again from the step at which it came back (see :class:`OnlineTracIn`).
Self-influence is kept for every training example: one float each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

LossFn = Callable[[Tensor, Tensor], Tensor]
INDEX_KEY = "index"
"""The key of the dataset index in dict batches."""


class MissingIndexError(ValueError):
    """A training batch that does not say which dataset examples it holds."""


@dataclass(frozen=True)
class IndexedBatch:
    """A training batch split into the model's input, the labels and the dataset indices of its examples."""

    inputs: Tensor
    labels: Tensor
    indices: Tensor


def split_indexed_batch(batch: Any, input_key: str, label_key: str) -> IndexedBatch:
    """``(inputs, labels, indices)`` from a batch ``(x, y, index)`` or a dict with ``input_key``, ``label_key``
    and ``"index"``.

    Raises:
        MissingIndexError: the batch has no index: the indices are never guessed from the batch order.
    """
    expected = (
        f"a training batch (x, y, index) or a dict with keys {input_key!r}, {label_key!r} and {INDEX_KEY!r}; wrap "
        "the training dataset in lightning_xai.IndexedDataset (its items are (x, y, index)) so that every "
        "example says which dataset example it is"
    )
    if isinstance(batch, Mapping):
        missing = [key for key in (input_key, label_key, INDEX_KEY) if key not in batch]
        if missing:
            raise MissingIndexError(f"InfluenceMonitor expects {expected}; got a dict with keys {sorted(batch)}")
        parts = [batch[input_key], batch[label_key], batch[INDEX_KEY]]
    elif isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) == 3:
        parts = list(batch)
    else:
        got = f"a {type(batch).__name__} of {len(batch)} items" if isinstance(batch, Sequence) else type(batch).__name__
        raise MissingIndexError(f"InfluenceMonitor expects {expected}; got {got}")
    inputs, labels, indices = parts
    if not isinstance(indices, Tensor) or indices.dim() != 1 or indices.is_floating_point():
        shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise MissingIndexError(
            f"InfluenceMonitor expects {expected}: the index must be a 1-D integer tensor, got {shape}"
        )
    if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor):
        raise MissingIndexError(f"InfluenceMonitor expects {expected}: x and y must be tensors")
    if not (len(inputs) == len(labels) == len(indices)):
        raise MissingIndexError(
            f"InfluenceMonitor expects {expected}: x, y and index have {len(inputs)}, {len(labels)} and "
            f"{len(indices)} examples"
        )
    return IndexedBatch(inputs, labels, indices.long())


def scores_of(output: Any) -> Tensor:
    """The class scores in a model's output: a tensor, or the first item of a tuple."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(
            "InfluenceMonitor: the model must return a tensor of scores (or a tuple, scores first), got "
            f"{type(output).__name__}"
        )
    return output


@contextmanager
def _layer_as_leaf(layer: nn.Module) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Capture ``(layer input, layer output as a new leaf)`` of each call; the hook is removed on exit."""
    seen: list[tuple[Tensor, Tensor]] = []

    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        seen.append((args[0].detach(), leaf))
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def last_layer_factors(
    model: nn.Module, layer: nn.Linear, inputs: Tensor, labels: Tensor, loss_fn: LossFn
) -> tuple[Tensor, Tensor]:
    """Per example, ``(dL/d(layer output), layer input)``: the layer's weight gradient is their outer product.

    ``loss_fn(scores, labels)`` must give one loss per example (``reduction="none"``).

    Raises:
        ValueError: the layer is not called exactly once, its input or output is not 2-D, or the loss is
            not one value per example.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    with torch.enable_grad(), _layer_as_leaf(layer) as seen:
        output = scores_of(functional_call(model, params, (inputs,)))
        if len(seen) != 1:
            raise ValueError(
                f"InfluenceMonitor: the layer must be called once per forward, it was called {len(seen)} times"
            )
        layer_input, leaf = seen[0]
        losses = loss_fn(output, labels)
        if losses.shape != (len(inputs),):
            raise ValueError(
                "InfluenceMonitor: loss_fn must return one loss per example (reduction='none'), shape "
                f"{(len(inputs),)}; got {tuple(losses.shape)}"
            )
        (output_grad,) = torch.autograd.grad(losses.sum(), leaf)
    if output_grad.dim() != 2 or layer_input.dim() != 2:
        raise ValueError(
            "InfluenceMonitor: the layer must be a linear layer with 2-D input and output (N, features); got "
            f"input {tuple(layer_input.shape)} and output {tuple(output_grad.shape)}"
        )
    return output_grad.float(), layer_input.float()


def pair_scores(probe: tuple[Tensor, Tensor], train: tuple[Tensor, Tensor]) -> Tensor:
    """``(n_probe, n_train)`` dot products of the weight gradients ``g a^T``: ``(g . g') (a . a')``."""
    return (probe[0] @ train[0].T) * (probe[1] @ train[1].T)


def self_scores(train: tuple[Tensor, Tensor]) -> Tensor:
    """``|g a^T|^2 = |g|^2 |a|^2`` per example."""
    return train[0].pow(2).sum(1) * train[1].pow(2).sum(1)


@dataclass(frozen=True)
class Ranked:
    """Per probe example, the training examples with the largest positive (proponents) or most negative
    (opponents) scores: ``indices`` ``(n_probe, k)`` with ``-1`` where there are fewer, ``scores`` beside."""

    indices: Tensor
    scores: Tensor


class OnlineTracIn:
    """Running TracIn scores between a probe and the training examples, updated once per training batch.

    Per probe example, a candidate pool of ``2 * capacity`` slots holds exact running sums: after each
    batch it keeps the ``capacity`` largest and the ``capacity`` smallest scores among its members and the
    batch's examples. A member's sum is exact from the step it entered the pool; an example that enters
    later (or re-enters after being evicted) misses its contributions from before. With ``capacity`` a few
    times ``k``, the top-``k`` lists are exact unless an example's score climbs from outside the pool.

    Self-influence (``sum over visits of lr * |grad|^2``), the visit count and the last seen label are kept
    for every training example; the vectors grow with the largest index seen.
    """

    def __init__(self, num_probe: int, capacity: int) -> None:
        self.capacity = capacity
        self.pool_indices = torch.full((num_probe, 2 * capacity), -1, dtype=torch.long)
        self.pool_scores = torch.zeros(num_probe, 2 * capacity)
        self.self_influence = torch.zeros(0)
        self.visits = torch.zeros(0, dtype=torch.long)
        self.labels = torch.zeros(0, dtype=torch.long)
        self.steps = 0

    def _to(self, device: torch.device) -> None:
        for name in ("pool_indices", "pool_scores", "self_influence", "visits", "labels"):
            setattr(self, name, getattr(self, name).to(device))

    def _grow(self, size: int) -> None:
        old = len(self.self_influence)
        if size <= old:
            return
        new = max(size, 2 * old)
        device = self.self_influence.device
        self.self_influence = torch.cat([self.self_influence, torch.zeros(new - old, device=device)])
        self.visits = torch.cat([self.visits, torch.zeros(new - old, dtype=torch.long, device=device)])
        self.labels = torch.cat([self.labels, torch.full((new - old,), -1, dtype=torch.long, device=device)])

    def update(
        self, probe: tuple[Tensor, Tensor], train: tuple[Tensor, Tensor], indices: Tensor, labels: Tensor, lr: float
    ) -> None:
        """Add one training batch's ``lr * grad . grad`` (factors from :func:`last_layer_factors`)."""
        device = train[0].device
        self._to(device)
        indices = indices.to(device)
        if indices.numel() and int(indices.min()) < 0:
            raise ValueError(f"InfluenceMonitor: dataset indices must be >= 0, got {int(indices.min())}")
        self._grow(int(indices.max()) + 1 if indices.numel() else 0)
        self.self_influence.index_add_(0, indices, lr * self_scores(train))
        self.visits.index_add_(0, indices, torch.ones_like(indices))
        if labels.dim() == 1 and not labels.is_floating_point():  # class labels; others are not listed
            self.labels[indices] = labels.to(device).long()
        self._merge(indices, lr * pair_scores(probe, train))
        self.steps += 1

    def _merge(self, indices: Tensor, step_scores: Tensor) -> None:
        unique, inverse = torch.unique(indices, return_inverse=True)  # one example twice in a batch adds twice
        step = torch.zeros(step_scores.shape[0], len(unique), device=step_scores.device)
        step.index_add_(1, inverse, step_scores)
        pool_idx, pool_score = self.pool_indices, self.pool_scores
        match = pool_idx[:, :, None] == unique[None, None, :]  # (P, slots, U)
        pool_score = pool_score + (match.float() * step[:, None, :]).sum(-1)
        new_idx = torch.where(match.any(1), -1, unique[None, :].expand_as(step))
        union_idx = torch.cat([pool_idx, new_idx], 1)
        union_score = torch.cat([pool_score, step], 1)
        valid = union_idx >= 0
        key = torch.where(valid, union_score, torch.full_like(union_score, -torch.inf))
        order = key.argsort(dim=1, descending=True, stable=True)
        position = torch.arange(order.shape[1], device=order.device)[None, :]
        n_valid = valid.sum(1, keepdim=True)
        keep = (position < self.capacity) | ((position >= n_valid - self.capacity) & (position < n_valid))
        compact = (~keep).int().argsort(dim=1, stable=True)[:, : 2 * self.capacity]
        chosen = order.gather(1, compact)
        kept = keep.gather(1, compact)
        self.pool_indices = torch.where(kept, union_idx.gather(1, chosen), -1)
        self.pool_scores = torch.where(kept, union_score.gather(1, chosen), 0.0)

    def proponents(self, k: int) -> Ranked:
        """Per probe example, the ``k`` pool members with the largest positive scores, largest first."""
        return self._ranked(k, sign=1.0)

    def opponents(self, k: int) -> Ranked:
        """Per probe example, the ``k`` pool members with the most negative scores, most negative first."""
        return self._ranked(k, sign=-1.0)

    def _ranked(self, k: int, sign: float) -> Ranked:
        signed = torch.where(self.pool_indices >= 0, sign * self.pool_scores, torch.zeros_like(self.pool_scores))
        signed = torch.where(signed > 0, signed, torch.full_like(signed, -torch.inf))
        k = min(k, signed.shape[1])
        top, where = signed.topk(k, dim=1)
        found = torch.isfinite(top)
        return Ranked(
            torch.where(found, self.pool_indices.gather(1, where), -1),
            torch.where(found, sign * top, torch.zeros_like(top)),
        )

    def suspects(self, k: int | None = None) -> Tensor:
        """Indices of the visited training examples by decreasing self-influence (all of them by default)."""
        seen = (self.visits > 0).nonzero().flatten()
        order = self.self_influence[seen].argsort(descending=True, stable=True)
        ranked = seen[order]
        return ranked if k is None else ranked[:k]

    def scores_of(self, probe_index: int, indices: Tensor) -> Tensor:
        """The pool's running scores of ``indices`` for one probe example (NaN where not in the pool)."""
        pool_idx = self.pool_indices[probe_index]
        match = pool_idx[None, :] == indices.to(pool_idx.device)[:, None]
        found = match.any(1)
        score = (match.float() * self.pool_scores[probe_index][None, :]).sum(1)
        return torch.where(found, score, torch.full_like(score, torch.nan))

    def state_dict(self) -> dict[str, Any]:
        """CPU tensors and counters, to continue after a resume."""
        return {
            "capacity": self.capacity,
            "pool_indices": self.pool_indices.cpu(),
            "pool_scores": self.pool_scores.cpu(),
            "self_influence": self.self_influence.cpu(),
            "visits": self.visits.cpu(),
            "labels": self.labels.cpu(),
            "steps": self.steps,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> OnlineTracIn:
        """The scores saved by :meth:`state_dict`."""
        tracin = cls(state["pool_indices"].shape[0], int(state["capacity"]))
        for name in ("pool_indices", "pool_scores", "self_influence", "visits", "labels"):
            setattr(tracin, name, state[name].clone())
        tracin.steps = int(state["steps"])
        return tracin
