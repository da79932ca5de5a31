"""The probe in chunks, shared out among the processes of a run, and the results brought back together.

A large probe is explained a chunk of examples at a time, so memory does not grow with the probe. Under
DDP each process explains its own run of consecutive chunks, and every process receives everyone's
results (so all of them hold the same maps and metrics, and the regression checks that read them agree);
only global rank zero logs them.

Randomness is drawn per chunk: each method on each chunk starts from a seed made of the point's seed, the
method and the chunk's first example. A chunk's maps therefore do not depend on which process explains
it or on the other methods, and a run gives the same maps and metrics on any number of processes as on
one, as long as the chunks are the same (``probe_chunk_size``). Methods that draw nothing are the same
whatever the chunks.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor

from attribution.utils import memory_budget, saved_bytes_meter


@dataclass(frozen=True)
class Shards:
    """Chunks of ``size`` consecutive examples of a probe of ``total``; this process (``rank`` of ``world``)
    explains the chunks ``local`` lists."""

    total: int
    size: int
    rank: int = 0
    world: int = 1

    @property
    def chunks(self) -> list[slice]:
        return [slice(start, min(start + self.size, self.total)) for start in range(0, self.total, self.size)]

    @property
    def local(self) -> list[slice]:
        """This process's share: a run of consecutive chunks, the shares differing by one chunk at most."""
        chunks = self.chunks
        count = len(chunks)
        return chunks[self.rank * count // self.world : (self.rank + 1) * count // self.world]

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order (CPU tensors inside travel pickled); called by all."""
        if self.world == 1:
            return [value]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered


def shards_for(total: int, size: int, rank: int, world: int) -> Shards:
    """The shards of this process; one process explains everything when no process group is running."""
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        rank, world = 0, 1
    return Shards(total, size, rank, world)


def chunk_size(requested: int | None, total: int, world: int, per_example_bytes: int, budget: int) -> int:
    """Examples per chunk: ``requested``, or by default an equal share per process, cut to what fits
    ``budget`` bytes at ``per_example_bytes`` each."""
    if requested is not None:
        return min(requested, total)
    share = math.ceil(total / world)
    return max(1, min(share, budget // max(per_example_bytes, 1)))


def agreed_chunk_size(
    trainer: pl.Trainer,
    requested: int | None,
    forward: Callable[..., Tensor],
    inputs: Tensor,
    forward_args: tuple[Tensor, ...],
) -> int:
    """:func:`chunk_size` for the probe ``inputs``, decided by global rank zero: every process must cut the
    same chunks, and free device memory differs between them."""
    footprint = 0 if requested is not None else bytes_per_example(forward, inputs, forward_args)
    size = chunk_size(requested, len(inputs), trainer.world_size, footprint, memory_budget(inputs.device))
    return trainer.strategy.broadcast(size)


def bytes_per_example(forward: Callable[..., Tensor], inputs: Tensor, forward_args: tuple[Tensor, ...]) -> int:
    """What autograd saves for one example's forward towards an input gradient (the gradient methods'
    footprint; a frozen backbone saves its activations only then). A model that refuses inputs that
    require grad is measured without."""
    args = tuple(a[:1] for a in forward_args)
    one = inputs[:1].detach()
    try:
        return _saved_bytes(forward, one.requires_grad_(one.is_floating_point()), args)
    except Exception:  # only an estimate: measure what the model does allow
        return _saved_bytes(forward, one.detach(), args)


def _saved_bytes(forward: Callable[..., Tensor], inputs: Tensor, forward_args: tuple[Tensor, ...]) -> int:
    with torch.enable_grad(), saved_bytes_meter() as meter:
        forward(inputs, *forward_args)
    return meter.bytes


def chunk_seed(seed: int, method: str, start: int) -> int:
    """The seed of ``method`` on the chunk starting at example ``start``: the same on every process."""
    return zlib.crc32(f"{seed}:{method}:{start}".encode())


def seeded_chunks(shards: Shards, seed: int, method: str) -> Iterator[slice]:
    """This process's chunks, the global RNG seeded for ``method`` before each."""
    for chunk in shards.local:
        torch.manual_seed(chunk_seed(seed, method, chunk.start))
        yield chunk
