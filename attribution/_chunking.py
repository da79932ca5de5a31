"""Splitting repeated forwards into chunks that fit a memory budget.

Path methods evaluate the model at many points (steps, samples) per example.
Materialising all of them at once makes memory grow with ``n_steps``; a
fixed small chunk wastes speed on large devices.  Instead the first chunk
(one step) is run while counting the bytes autograd saves for backward, and
the remaining chunks are sized so that what they save fits the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

CPU_MEMORY_BUDGET = 256 * 2**20
"""Bytes of saved activations per chunk on CPU; larger batches get slower there anyway."""
CUDA_BUDGET_FRACTION = 0.25
"""Share of the free device memory a chunk may save for backward on CUDA."""


def memory_budget(device: torch.device) -> int:
    """The default budget in bytes for one chunk on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_BUDGET_FRACTION)
    return CPU_MEMORY_BUDGET


@dataclass
class _Meter:
    bytes: int = 0


@contextmanager
def saved_bytes_meter() -> Iterator[_Meter]:
    """Count the bytes autograd saves for backward inside the block.

    Parameters are left out (they do not grow with the batch) and storages
    shared by several saved tensors are counted once.
    """
    meter = _Meter()
    seen: set[int] = set()

    def pack(t: Tensor) -> Tensor:
        if not isinstance(t, nn.Parameter):
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                meter.bytes += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield meter


def run_chunked(
    total: int,
    work: Callable[[int, int], None],
    *,
    rows_per_item: int,
    internal_batch_size: int | None,
    device: torch.device,
) -> None:
    """Call ``work(lo, hi)`` over ``range(total)`` in consecutive chunks.

    One item (a step or a sample) is ``rows_per_item`` rows of the batch.
    ``internal_batch_size`` (rows per chunk, as in Captum) wins when given; a
    chunk always holds at least one item.  Otherwise chunks are sized from
    the bytes the first one-item chunk saved for backward.
    """
    if internal_batch_size is not None:
        size = max(1, internal_batch_size // rows_per_item)
        for lo in range(0, total, size):
            work(lo, min(total, lo + size))
        return
    with saved_bytes_meter() as meter:
        work(0, 1)
    size = max(1, memory_budget(device) // max(meter.bytes, 1))
    for lo in range(1, total, size):
        work(lo, min(total, lo + size))
