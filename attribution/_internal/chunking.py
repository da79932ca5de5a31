"""Splitting repeated forwards into chunks that fit a memory budget, on the threads the machine can give.

Path methods evaluate the model at many points (steps, samples) per example.
Materialising all of them at once makes memory grow with ``n_steps``; a
fixed small chunk wastes speed on large devices.  Instead the first chunk
(one step) is run while counting the bytes autograd saves for backward, and
the remaining chunks are sized so that what they save fits the budget.

Threads: every parallel op ends at a barrier where torch's intra-op threads
wait for the slowest of them.  When another process competes for the cores
(dataloader workers, other ranks, another job), one of our threads is often
off its core and the others spin at the barrier: on the 2-core machine with
two busy processes beside it, a ResNet-18 forward and backward of 4 images
took 3.4 s on 2 threads and 0.6 s on 1.  Between chunks, :class:`ThreadGovernor`
reads how long our threads waited for a core and whether cores sat idle (Linux
``/proc``), lowers the thread count while they wait and raises it again,
up to the caller's setting, when cores are free; the caller's setting is
restored on exit.  Results differ only by float rounding.
"""

from __future__ import annotations

import math
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

CPU_MEMORY_BUDGET = 256 * 2**20
"""Bytes of saved activations per chunk on CPU; larger batches get slower there anyway."""
CUDA_BUDGET_FRACTION = 0.25
"""Share of the free device memory a chunk may save for backward on CUDA."""
WAIT_SHARE = 0.15
"""Share of its runnable time one of our busy threads may wait for a core before the thread count goes down."""
BUSY_SHARE = 0.1
"""Threads that ran less than this share of a window (a sampler, an idle pool) do not count as waiting."""
IDLE_CORES = 0.5
"""Cores idle on average during a window before the thread count goes back up."""
MIN_WINDOW = 0.25
"""Seconds of work a thread count is judged on at least (shorter chunks are pooled).

Short parallel regions suffer most from a slow wake-up, even behind a process
of the lowest priority that gives way at once; a quarter of a second pools the
one-step chunk that measures memory with the next, full-size one.
(``/proc/stat`` counts in 10 ms ticks.)
"""


def memory_budget(device: torch.device) -> int:
    """The default budget in bytes for one chunk on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_BUDGET_FRACTION)
    return CPU_MEMORY_BUDGET


@dataclass
class _Meter:
    """What :func:`~attribution.utils.saved_bytes_meter` yields: ``bytes``, the bytes autograd has saved for
    backward so far inside the block (read it during or after the block)."""

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


@dataclass(frozen=True)
class CoreUsage:
    """Cumulative counters of how this process's threads and the machine's cores were used."""

    at: float  # seconds, monotonic clock
    threads: dict[int, tuple[int, int]]  # thread id -> (ns it ran, ns it was runnable but waited for a core)
    idle: int  # clock ticks the cores we may run on were idle
    ticks: int  # all clock ticks of those cores
    cores: int  # how many cores we may run on

    @staticmethod
    def read() -> CoreUsage | None:
        """The counters now, or None where ``/proc`` does not have them (not Linux, no schedstat)."""
        try:
            threads = {}
            for tid in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{tid}/schedstat") as f:
                        ran, waited, _ = f.read().split()
                except FileNotFoundError:  # the thread ended
                    continue
                threads[int(tid)] = (int(ran), int(waited))
            cores = {f"cpu{i}" for i in os.sched_getaffinity(0)}
            idle = ticks = 0
            with open("/proc/stat") as f:
                for line in f:
                    name, *values = line.split()
                    if name in cores:
                        counts = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                        idle, ticks = idle + counts[3] + counts[4], ticks + sum(counts)
        except (OSError, ValueError, AttributeError):
            return None
        return CoreUsage(time.monotonic(), threads, idle, ticks, len(cores))


def choose_threads(threads: int, ceiling: int, before: CoreUsage, after: CoreUsage) -> int:
    """Intra-op threads for the next window, from how the cores were shared while ``threads`` ran this one.

    A parallel op is as slow as its slowest thread, so one busy thread that
    waited for a core ``WAIT_SHARE`` of its time or more means others hold
    cores: keep as many threads as got a core on average, at least one fewer.
    Otherwise, cores left idle leave room for more threads again, up to
    ``ceiling`` (the caller's setting).
    """
    wall = after.at - before.at
    ran = waited = 0
    worst = 0.0
    for tid, (ran_after, waited_after) in after.threads.items():
        ran_before, waited_before = before.threads.get(tid, (0, 0))  # (0, 0): started within the window
        r, w = max(0, ran_after - ran_before), max(0, waited_after - waited_before)
        ran, waited = ran + r, waited + w
        if r >= BUSY_SHARE * wall * 1e9:
            worst = max(worst, w / (r + w))
    if threads > 1 and worst > WAIT_SHARE:
        return max(1, min(threads - 1, math.floor(threads * ran / (ran + waited))))
    ticks = after.ticks - before.ticks
    if threads < ceiling and ticks > 0:
        idle_cores = (after.idle - before.idle) / ticks * after.cores
        if idle_cores >= IDLE_CORES:
            return min(ceiling, threads + max(1, round(idle_cores)))
    return threads


class ThreadGovernor:
    """Adapts torch's intra-op thread count between chunks of work on CPU (see the module docstring).

    Use as a context manager and wrap each chunk in :meth:`chunk`; the thread
    count set on entry is the ceiling, and it is restored on exit, also when
    a chunk raises.  Decisions look at ``MIN_WINDOW`` seconds or more (short
    chunks are pooled).  Off the CPU, with one thread, or without ``/proc``
    counters, it does nothing.
    """

    def __init__(self, device: torch.device) -> None:
        self.ceiling = torch.get_num_threads()
        self.active = device.type == "cpu" and self.ceiling > 1
        self._since: CoreUsage | None = None

    def __enter__(self) -> ThreadGovernor:
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.ceiling:
            torch.set_num_threads(self.ceiling)

    @contextmanager
    def chunk(self) -> Iterator[None]:
        """Run one chunk; afterwards set the thread count for the next one."""
        if self.active and self._since is None:
            self._since = CoreUsage.read()
            self.active = self._since is not None
        yield
        if self._since is None or time.monotonic() - self._since.at < MIN_WINDOW:
            return
        before, after, self._since = self._since, CoreUsage.read(), None
        if after is not None:
            threads = torch.get_num_threads()
            chosen = choose_threads(threads, self.ceiling, before, after)
            if chosen != threads:
                torch.set_num_threads(chosen)


def balanced_chunks(start: int, total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` over ``range(start, total)`` in the fewest chunks of at most ``size``, of near-equal sizes.

    ``run_chunked``'s remainder would otherwise be a chunk of a step or two,
    which runs at a poor batch size.
    """
    remaining = total - start
    if remaining <= 0:
        return
    count = math.ceil(remaining / size)
    for k in range(count):
        yield start + remaining * k // count, start + remaining * (k + 1) // count


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
    the bytes the first one-item chunk saved for backward, and the rest are
    split evenly.  Between chunks the thread count adapts to competition for
    the cores (:class:`ThreadGovernor`).
    """
    with ThreadGovernor(device) as governor:
        if internal_batch_size is not None:
            size = max(1, internal_batch_size // rows_per_item)
            chunks: Iterator[tuple[int, int]] = ((lo, min(total, lo + size)) for lo in range(0, total, size))
        else:
            with governor.chunk(), saved_bytes_meter() as meter:
                work(0, 1)
            chunks = balanced_chunks(1, total, max(1, memory_budget(device) // max(meter.bytes, 1)))
        for lo, hi in chunks:
            with governor.chunk():
                work(lo, hi)


# ---------------------------------------------------------------- forwards sized by the model's widest tensor

CPU_LARGEST_TENSOR_BYTES = 12 * 2**20
"""Bytes of the largest tensor of one forward of perturbed copies on CPU.

Above somewhere near 16 MiB (it depends on what was freed before) glibc's
malloc serves such a tensor with fresh pages from the kernel and hands them
back when it is freed, and the page faults cost more than the arithmetic
(with ``MALLOC_MMAP_THRESHOLD_`` raised, every batch size ran alike).  What
grows with the batch is the model's widest activation, not its input: a
2-conv MNIST net (16 channels on 1x28x28, 16 times its input) on 16 x 50
copies took 96 ms in the input budget's two forwards and 58 ms in four of
208 rows; a 4-layer CNN on 8x3x64x64 (5 times) gets 6 copies per forward
either way.
"""

_WIDEST_PER_ROW: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], int]] = weakref.WeakKeyDictionary()
"""Bytes of the widest tensor per input row that each model gave on inputs of a kind (row shapes, dtypes):
a later call sizes its forwards without measuring again."""


def watchable_modules(forward_func: Callable[..., object], inputs: tuple[Tensor, ...]) -> list[nn.Module]:
    """The modules whose outputs :func:`largest_output` can watch: all of a model on CPU with no compiled
    part (a hook would make dynamo recompile it), the model first; none for other callables, or off the CPU."""
    if not isinstance(forward_func, nn.Module) or inputs[0].device.type != "cpu":
        return []
    modules = list(forward_func.modules())
    dynamo = sys.modules.get("torch._dynamo.eval_frame")  # nothing is compiled before dynamo is imported
    if dynamo is not None and any(isinstance(m, dynamo.OptimizedModule) for m in modules):
        return []
    return modules


def _kind(inputs: tuple[Tensor, ...]) -> tuple[object, ...]:
    return tuple((x.shape[1:], x.dtype) for x in inputs)


def known_width(model: nn.Module, inputs: tuple[Tensor, ...]) -> int | None:
    """The widest tensor per row ``model`` gave on inputs of this kind, if measured before."""
    return _WIDEST_PER_ROW.get(model, {}).get(_kind(inputs))


def remember_width(model: nn.Module, inputs: tuple[Tensor, ...], largest: int) -> int:
    """Record ``largest`` (bytes, the widest tensor of a forward of ``inputs``) per row; returns that."""
    width = math.ceil(max(largest, sum(x.numel() * x.element_size() for x in inputs)) / inputs[0].shape[0])
    _WIDEST_PER_ROW.setdefault(model, {})[_kind(inputs)] = width
    return width


@contextmanager
def largest_output(modules: list[nn.Module]) -> Iterator[list[int]]:
    """Yield ``[bytes]``: after the block, the largest tensor any of ``modules`` returned in it.  The hooks
    are removed on exit, also after an exception."""
    largest = [0]

    def record(module: nn.Module, args: object, output: object) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, Tensor):
                largest[0] = max(largest[0], t.numel() * t.element_size())

    handles = [m.register_forward_hook(record) for m in modules]
    try:
        yield largest
    finally:
        for handle in handles:
            handle.remove()


def copies_per_forward(
    forward_func: Callable[..., object],
    inputs: tuple[Tensor, ...],
    copies: int,
    fallback: int,
    measure: Callable[[], object],
) -> int:
    """Copies of ``inputs`` per forward that keep the model's widest tensor under
    :data:`CPU_LARGEST_TENSOR_BYTES`, measured once by ``measure()`` (one forward of ``inputs``) under hooks,
    later from the record; ``fallback`` where the model cannot be watched."""
    modules = watchable_modules(forward_func, inputs)
    if not modules:
        return fallback
    width = known_width(modules[0], inputs)
    if width is None:
        with largest_output(modules) as largest:
            measure()
        width = remember_width(modules[0], inputs, largest[0])
    return max(1, min(copies, CPU_LARGEST_TENSOR_BYTES // (width * inputs[0].shape[0])))
