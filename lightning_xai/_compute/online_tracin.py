"""TracIn computed online (Pruthi et al., 2020): running scores between a probe and the training examples,
kept in bounded memory, updated at every training step with that step's ``lr * grad . grad`` terms
(:mod:`lightning_xai._compute.training_gradients`).

``influence(z, z') = sum_t lr_t * grad L(w_t, z) . grad L(w_t, z')`` over the training steps ``t`` at which
``z`` was in the batch. Per probe example, a pool of candidates holds the exact running sums of at most
``capacity`` examples with the largest scores and ``capacity`` with the smallest ones; an example that is
evicted and comes back later starts again from the step at which it came back (see :class:`OnlineTracIn`).
Self-influence is kept for every training example: one float each. Under DDP each process sums over its own
batches, and :func:`combined` adds the processes' states up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_xai._compute.training_gradients import StepScores


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

    def _grow(self, size: int, exact: bool = False) -> None:
        """Room for indices below ``size``: doubling (indices seen one batch at a time), or ``exact``."""
        old = len(self.self_influence)
        if size <= old:
            return
        new = size if exact else max(size, 2 * old)
        device = self.self_influence.device
        self.self_influence = torch.cat([self.self_influence, torch.zeros(new - old, device=device)])
        self.visits = torch.cat([self.visits, torch.zeros(new - old, dtype=torch.long, device=device)])
        self.labels = torch.cat([self.labels, torch.full((new - old,), -1, dtype=torch.long, device=device)])

    def reserve(self, size: int) -> None:
        """Room for a data set of ``size`` examples, allocated once (no doubling past it)."""
        self._grow(size, exact=True)

    def update(self, indices: Tensor, labels: Tensor, scores: StepScores) -> None:
        """Add one training batch's terms: ``scores`` of the examples ``indices`` with ``labels``."""
        device = scores.own.device
        self._to(device)
        indices = indices.to(device)
        if indices.numel() and int(indices.min()) < 0:
            raise ValueError(f"InfluenceMonitor: dataset indices must be >= 0, got {int(indices.min())}")
        self._grow(int(indices.max()) + 1 if indices.numel() else 0)
        self.self_influence.index_add_(0, indices, scores.own)
        self.visits.index_add_(0, indices, torch.ones_like(indices))
        if labels.dim() == 1 and not labels.is_floating_point():  # class labels; others are not listed
            self.labels[indices] = labels.to(device).long()
        self._merge(indices, scores.pairs)
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
        self.pool_indices, self.pool_scores = _extremes(union_idx, union_score, self.capacity)

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

    def emptied(self) -> OnlineTracIn:
        """The same pools and data set size with nothing summed yet (the labels seen are kept)."""
        empty = OnlineTracIn(self.pool_indices.shape[0], self.capacity)
        empty._grow(len(self.labels))
        empty.labels = self.labels.clone()
        empty.steps = self.steps
        return empty

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


def _extremes(indices: Tensor, scores: Tensor, capacity: int) -> tuple[Tensor, Tensor]:
    """Per row, the ``capacity`` largest and the ``capacity`` smallest scores among the valid (``>= 0``)
    ``indices``, in ``2 * capacity`` slots (``-1`` and 0 where a row has fewer)."""
    valid = indices >= 0
    key = torch.where(valid, scores, torch.full_like(scores, -torch.inf))
    order = key.argsort(dim=1, descending=True, stable=True)
    position = torch.arange(order.shape[1], device=order.device)[None, :]
    n_valid = valid.sum(1, keepdim=True)
    keep = (position < capacity) | ((position >= n_valid - capacity) & (position < n_valid))
    compact = (~keep).int().argsort(dim=1, stable=True)[:, : 2 * capacity]
    chosen = order.gather(1, compact)
    kept = keep.gather(1, compact)
    if chosen.shape[1] < 2 * capacity:  # fewer candidates than slots
        missing = 2 * capacity - chosen.shape[1]
        chosen = torch.cat([chosen, chosen.new_zeros(chosen.shape[0], missing)], 1)
        kept = torch.cat([kept, kept.new_zeros(kept.shape[0], missing)], 1)
    return torch.where(kept, indices.gather(1, chosen), -1), torch.where(kept, scores.gather(1, chosen), 0.0)


def combined(states: Sequence[Mapping[str, Any]]) -> OnlineTracIn:
    """The scores of several processes added up (:meth:`OnlineTracIn.state_dict` of each): self-influence and
    visits summed, the label seen anywhere, and per probe example the union of the pools with the sums of
    the examples that several pools hold (each process holds its own steps' terms)."""
    first = states[0]
    capacity = int(first["capacity"])
    size = max(len(s["self_influence"]) for s in states)
    merged = OnlineTracIn(first["pool_indices"].shape[0], capacity)
    merged._grow(size)
    for state in states:
        n = len(state["self_influence"])
        merged.self_influence[:n] += state["self_influence"].to(merged.self_influence)
        merged.visits[:n] += state["visits"].to(merged.visits)
        merged.labels[:n] = torch.maximum(merged.labels[:n], state["labels"].to(merged.labels))
    merged.steps = max(int(s["steps"]) for s in states)
    pool_indices = torch.cat([s["pool_indices"].cpu() for s in states], 1)
    pool_scores = torch.cat([s["pool_scores"].cpu() for s in states], 1)
    rows = []
    for indices, scores in zip(pool_indices, pool_scores):
        valid = indices >= 0
        unique, inverse = torch.unique(indices[valid], return_inverse=True)
        rows.append((unique, torch.zeros(len(unique)).index_add_(0, inverse, scores[valid])))
    width = max(1, max(len(u) for u, _ in rows))
    union_idx = torch.full((len(rows), width), -1, dtype=torch.long)
    union_score = torch.zeros(len(rows), width)
    for r, (unique, summed) in enumerate(rows):
        union_idx[r, : len(unique)], union_score[r, : len(unique)] = unique, summed
    merged.pool_indices, merged.pool_scores = _extremes(union_idx, union_score, capacity)
    return merged
