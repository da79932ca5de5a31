"""Timing and peak-memory helpers for side-by-side benchmarks."""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _high_water_mark() -> int | None:
    """The kernel's peak RSS of this process since the last reset (``VmHWM``), or None where unreadable."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_high_water_mark() -> bool:
    """Set ``VmHWM`` to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _high_water_mark() is not None


@dataclass
class Run:
    seconds: float
    peak_bytes: int  # peak RSS growth over the baseline during the call
    result: Any


def release_freed_memory() -> None:
    """Hand freed heap back to the OS, so one run's leftovers do not hide the next one's peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def measure(fn: Callable[[], Any], *, repeats: int = 1) -> Run:
    """Best wall time over ``repeats`` calls and the peak RSS growth.

    The peak is the kernel's own high-water mark, reset before the call: exact, where sampling misses a
    peak shorter than its period (a forward pass of a small model lasts a few milliseconds). Where the
    kernel does not offer the reset, RSS is sampled every 2 ms instead.
    """
    release_freed_memory()
    exact = _reset_high_water_mark()
    base = rss_bytes()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    if not exact:
        sampler.start()
    best = float("inf")
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - start)
    finally:
        done.set()
        if not exact:
            sampler.join()
    if exact:
        peak = _high_water_mark() or peak
    return Run(best, max(0, peak - base), result)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def row(name: str, ours: Run, theirs: Run, reference: str = "captum") -> str:
    speed = theirs.seconds / ours.seconds
    mem = theirs.peak_bytes / max(ours.peak_bytes, 1)
    return (
        f"{name:<44} ours {ours.seconds:7.2f} s {ours.peak_bytes / 2**20:7.0f} MiB | "
        f"{reference} {theirs.seconds:7.2f} s {theirs.peak_bytes / 2**20:7.0f} MiB | "
        f"speed x{speed:5.2f}  memory x{mem:6.2f}"
    )


def side_by_side(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int) -> tuple[Run, Run]:
    """Best of ``repeats`` runs each after a warm-up, alternating between the two: a busy machine slows both
    alike."""
    ours(), theirs()  # one-time set-up (kernel selection, lazy imports) is not timed
    runs: tuple[list[Run], list[Run]] = ([], [])
    for _ in range(repeats):
        runs[0].append(measure(ours))
        runs[1].append(measure(theirs))
    return tuple(min(r, key=lambda run: run.seconds) for r in runs)  # type: ignore[return-value]
