"""Ours vs Captum on a busy machine: ResNet-18 at 224x224, alone and beside a competing process.

    python -m benchmarks.contended                       # IG n_steps=50 and 200, Occlusion (article settings)
    python -m benchmarks.contended --only occlusion --rounds 3
    python -m benchmarks.contended --competitors 2 --same-session

During training the cores are shared: dataloader workers, other ranks, another
user's job.  The competitor here is a pure-Python busy loop at the lowest
priority (``os.nice(19)``) pinned to no core.  By default it runs in a session
of its own: with the kernel's autogroup scheduling (the default on desktop and
server distributions), a nice value only orders processes within a session,
so a job started from another shell takes its full share of a core whatever
its nice value.  ``--same-session`` keeps it in ours, where nice 19 leaves it
almost nothing.

Each round runs every case alone and contended, ours and Captum's back to back
(the order alternates between rounds); each line reports the best time over the
rounds, the median as a ratio, and the peak RSS growth.  The thread count torch
had before each call is checked to be unchanged after it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from benchmarks._measure import Run, max_rel_diff, measure, row
from benchmarks._models import resnet

_SPIN = (
    "import os, sys\nparent = int(sys.argv[1])\nos.nice(19)\n"
    "while os.getppid() == parent:  # ends with the benchmark, also when it is killed\n"
    "    for _ in range(100_000):\n        pass\n"
)


@contextmanager
def competitors(count: int = 1, *, own_session: bool = True) -> Iterator[None]:
    """``count`` busy-loop processes at nice 19 for the duration of the block; killed on exit, and they end by
    themselves when this process dies (a timeout that kills the benchmark would otherwise leave them spinning)."""
    command = [sys.executable, "-c", _SPIN, str(os.getpid())]
    procs = [subprocess.Popen(command, start_new_session=own_session) for _ in range(count)]
    try:
        time.sleep(0.5)  # started and spinning
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def _cases(only: list[str] | None) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """``name -> (ours, captum)`` zero-argument calls."""
    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import Occlusion as CaptumOcclusion

    from attribution import IntegratedGradients, Occlusion

    model, x, target = resnet()
    occlusion = dict(target=target, strides=(3, 8, 8), sliding_window_shapes=(3, 15, 15), baselines=0)
    cases = {
        f"integrated_gradients_{n}": (
            lambda n=n: IntegratedGradients(model).attribute(x, target=target, n_steps=n),
            lambda n=n: CaptumIG(model).attribute(x, target=target, n_steps=n),
        )
        for n in (50, 200)
    }
    cases["occlusion"] = (
        lambda: Occlusion(model).attribute(x, **occlusion),
        lambda: CaptumOcclusion(model).attribute(x, **occlusion),
    )
    return {name: calls for name, calls in cases.items() if not only or name in only}


CASE_NAMES = ("integrated_gradients_50", "integrated_gradients_200", "occlusion")
LABELS = {
    "integrated_gradients_50": "IntegratedGradients n_steps=50",
    "integrated_gradients_200": "IntegratedGradients n_steps=200",
    "occlusion": "Occlusion 15x15/8 vs captum default call",
}


def _autogroup() -> str:
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return "autogroup scheduling on" if f.read().strip() == "1" else "autogroup scheduling off"
    except OSError:
        return "autogroup scheduling unknown"


def _busy_cores() -> tuple[float, float]:
    """Cumulative (core-seconds busy on the machine, CPU seconds of this process) for :func:`_timed`."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    times = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), times.user + times.system


def _timed(call: Callable[[], Any]) -> tuple[Run, float]:
    """One measured call and the cores other processes kept busy meanwhile (competitors included)."""
    threads = torch.get_num_threads()
    busy, ours = _busy_cores()
    run = measure(call)
    busy_after, ours_after = _busy_cores()
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"the call left torch with {torch.get_num_threads()} threads instead of {threads}")
    others = max(0.0, (busy_after - busy) - (ours_after - ours)) / max(run.seconds, 1e-9)
    return run, others


def bench_contended(
    only: list[str] | None = None, *, rounds: int = 3, count: int = 1, own_session: bool = True
) -> list[str]:
    """Lines of ``ours | captum | ratio`` per case, alone and contended."""
    cases = _cases(only)
    runs: dict[tuple[str, str, str], list[Run]] = {}
    others: dict[str, list[float]] = {}
    conditions = {"alone": nullcontext, "contended": lambda: competitors(count, own_session=own_session)}
    for r in range(rounds):
        for name, (ours, theirs) in cases.items():
            for condition, context in conditions.items():
                order = (("ours", ours), ("captum", theirs)) if r % 2 == 0 else (("captum", theirs), ("ours", ours))
                with context():
                    for who, call in order:
                        run, busy = _timed(call)
                        runs.setdefault((name, condition, who), []).append(run)
                        others.setdefault(condition, []).append(busy)
    session = "a session of its own" if own_session else "this session"
    lines = [f"competitors: {count} busy loop(s) at nice 19 in {session} ({_autogroup()}); best of {rounds} rounds"]
    for condition, busy in others.items():
        lines.append(f"{condition}: other processes kept {statistics.median(busy):.2f} cores busy (median over calls)")
    for name in cases:
        for condition in conditions:
            ours, theirs = runs[(name, condition, "ours")], runs[(name, condition, "captum")]
            lines.append(row(f"{LABELS[name]}, {condition}", _best(ours), _best(theirs)))
            median = statistics.median(t.seconds for t in theirs) / statistics.median(o.seconds for o in ours)
            agree = max_rel_diff(ours[-1].result, theirs[-1].result)
            lines.append(f"{'':<44} median speed x{median:5.2f}; max relative difference {agree:.1e}")
    return lines


def _best(runs: list[Run]) -> Run:
    """The fastest run, with the largest peak memory seen over all of them."""
    fastest = min(runs, key=lambda r: r.seconds)
    return Run(fastest.seconds, max(r.peak_bytes for r in runs), fastest.result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=CASE_NAMES, action="append", help="run only these cases")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (default 3)")
    parser.add_argument("--competitors", type=int, default=1, help="busy-loop processes (default 1)")
    parser.add_argument("--same-session", action="store_true", help="start the competitors in this session")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for line in bench_contended(
        args.only, rounds=args.rounds, count=args.competitors, own_session=not args.same_session
    ):
        print(line, flush=True)


if __name__ == "__main__":
    main()
