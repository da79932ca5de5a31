"""The InfluenceMonitor's share of fit time on scikit-learn's digits, and the bound on its memory.

    python -m benchmarks.influence_monitor

Fits the MLP of ``examples/digits_mislabels.py`` (64-64-10, plain SGD, batch size 16, 1437 training digits
with 10% of the labels flipped) for 8 epochs without and with the example's ``InfluenceMonitor`` (an 8-digit
probe shown as images, ``k=5``, so 20 candidates per probe example and sign), alternating, same seeds, the
same TensorBoard logger in both, on one thread as the example runs; medians of 3 each.  The share is
reported two ways: from the fit times, ``(with - without) / with``, and from the time spent inside the
monitor's hooks (precise), split into set-up, the per-step scoring and the epoch-end writing.

Memory: the bytes the monitor's state holds (the tensors of ``monitor.tracin.state_dict()``) next to the
bound its docstring states, per training example one float32 self-influence and two int64 (visits, label),
per probe example ``2 * num_candidates`` pool entries of an int64 index and a float32 score; and the peak RSS
growth of each fit (the kernel's high-water mark, in separate fits that are not timed), for scale.  Needs
scikit-learn (an example extra).
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from benchmarks._measure import measure

HOOKS = ("setup", "on_train_start", "on_train_batch_start", "on_train_epoch_end")


def _example() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "examples" / "digits_mislabels.py"
    spec = importlib.util.spec_from_file_location("digits_mislabels", path)
    assert spec is not None and spec.loader is not None  # the file ships with the repository
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(monitor: Any) -> Any:
    """Accumulate the seconds spent in each of the monitor's hooks on ``monitor.seconds[hook]``."""
    monitor.seconds = dict.fromkeys(HOOKS, 0.0)
    for name in HOOKS:
        hook = getattr(monitor, name)

        def timed(*args: Any, _hook: Any = hook, _name: str = name, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                monitor.seconds[_name] += time.perf_counter() - start

        setattr(monitor, name, timed)
    return monitor


def _fit(example: ModuleType, root: Path, epochs: int, monitored: bool, rss: bool = False) -> tuple[float, Any]:
    """Seconds of one fit of the example's MLP (or, with ``rss``, its peak RSS growth in bytes: where the
    kernel cannot reset its high-water mark, a thread samples RSS and slows the fit, so those runs are not
    timed); the monitor, or None."""
    generator = torch.Generator().manual_seed(0)
    train_set, _, test_set = example.noisy_digits(0.1, generator)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = example.mlp(64)
    monitor = _timed(example.influence_monitor(test_set)) if monitored else None
    callbacks = [] if monitor is None else [monitor]
    if rss:
        run = measure(lambda: example.fit(model, train_set, epochs, 0.05, root, generator, callbacks))
        return float(run.peak_bytes), monitor
    start = time.perf_counter()
    example.fit(model, train_set, epochs, 0.05, root, generator, callbacks)
    return time.perf_counter() - start, monitor


def _state_bytes(state: dict[str, Any]) -> dict[str, int]:
    return {name: value.nbytes for name, value in state.items() if isinstance(value, torch.Tensor)}


def bench_influence_monitor(epochs: int = 8, repeats: int = 3) -> list[str]:
    """Fit time with and without the monitor, its share, and its memory; returns the lines to print."""
    example = _example()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the example runs: the matrices are tiny
    seconds: dict[bool, list[float]] = {False: [], True: []}
    peaks: dict[bool, list[float]] = {False: [], True: []}
    inside: dict[str, list[float]] = {name: [] for name in HOOKS}
    try:
        with tempfile.TemporaryDirectory() as folder:
            _fit(example, Path(folder) / "warm-up", 1, True)  # lazy imports, first-call set-up
            for i in range(repeats):
                for monitored in (False, True):
                    fit_seconds, monitor = _fit(example, Path(folder) / f"{i}{monitored}", epochs, monitored)
                    seconds[monitored].append(fit_seconds)
                    if monitor is not None:
                        for name in HOOKS:
                            inside[name].append(monitor.seconds[name])
                        tracin = monitor.tracin
            for i in range(repeats):
                for monitored in (False, True):
                    peak, _ = _fit(example, Path(folder) / f"rss{i}{monitored}", epochs, monitored, rss=True)
                    peaks[monitored].append(peak)
    finally:
        torch.set_num_threads(threads)
    plain, watched = statistics.median(seconds[False]), statistics.median(seconds[True])
    setup, start, per_step, writing = (statistics.median(inside[name]) for name in HOOKS)
    hooks = setup + start + per_step + writing
    steps = tracin.steps
    state = _state_bytes(tracin.state_dict())
    n_train = int((tracin.visits > 0).sum())
    n_probe, pool = tracin.pool_indices.shape
    per_example = 4 + 8 + 8  # self-influence float32, visits and label int64
    per_pool_entry = 8 + 4  # index int64, score float32
    formula = n_train * per_example + n_probe * pool * per_pool_entry
    per_training = sum(state[name] for name in ("self_influence", "visits", "labels"))
    allocated = len(tracin.self_influence)
    label = f"digits MLP fit, {epochs} epochs, {steps} steps"
    return [
        f"torch {torch.__version__}, 1 thread; median of {repeats}, alternating",
        f"{label:<44} without monitor {plain:6.2f} s | with monitor {watched:6.2f} s",
        f"{'':<44} monitor share of fit time {(watched - plain) / watched:.1%} from the fit times, "
        f"{hooks / watched:.1%} from its hooks ({hooks:.2f} s)",
        f"{'':<44} set-up {setup + start:.2f} s, scoring {per_step:.2f} s ({1e3 * per_step / steps:.2f} ms per "
        f"step), writing {writing:.2f} s ({1e3 * writing / epochs:.0f} ms per epoch end: CSVs, tables, images)",
        f"{'monitor state (tracin.state_dict())':<44} {sum(state.values()):,} bytes: "
        + ", ".join(f"{name} {size:,}" for name, size in state.items()),
        f"{'':<44} formula {formula:,} bytes = {n_train} training x {per_example} B "
        f"+ {n_probe} probe x {pool} pool entries x {per_pool_entry} B",
        f"{'':<44} per-example arrays hold {allocated} slots for {n_train} examples "
        f"({per_training:,} bytes; allocated once from the dataset's length)",
        f"{'peak RSS growth of a fit':<44} without monitor {statistics.median(peaks[False]) / 2**20:6.1f} MiB | "
        f"with monitor {statistics.median(peaks[True]) / 2**20:6.1f} MiB (medians)",
    ]


if __name__ == "__main__":
    print("\n".join(bench_influence_monitor()))
