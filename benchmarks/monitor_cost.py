"""What one logged point of the AttributionMonitor costs at a real image size, part by part.

    python -m benchmarks.monitor_cost                   # 224 px: breakdown before/after, and an epoch's share
    python -m benchmarks.monitor_cost --size 128 --epoch-images 0

torchvision's ResNet-18 (``num_classes=10``, random weights) on 8 probe images, the examples' monitor
(integrated gradients, occlusion, GradCAM; infidelity; images), explained before the first step and at
every epoch end of a fit of one-batch epochs.  Two configurations in one process, interleaved:

* ``before``: the options this monitor used before it scaled them to a time budget (integrated gradients
  16 steps, occlusion windows an eighth of the side: 64 windows, images as PNG);
* ``after``: the defaults (``time_budget``, ``image_format="auto"``).

Each part's time is exclusive (a part inside another counts once, for the inner one; a metric keeps the
explanations it makes itself): each method's attribution, each metric, the self-check, predictions,
drawing, encoding, writing the events and writing the maps and manifest.  Per point: the median over the
points after the first (which also draws the probe sheet); the filmstrips (every ``filmstrip_every``
points) and the end of fit (timelines, filmstrips) are listed apart.

``--epoch-images N`` then fits one epoch of N images of that size (batch 32, SGD) without and with the
default monitor (one point at the epoch's end) and reports the monitor's share of the fit.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from attribution import registry
from benchmarks.log_size import _Classifier, _images, fit
from lightning_xai import AttributionMonitor

METHODS = ("integrated_gradients", "occlusion")


@dataclass
class _Frame:
    start: float
    absorbing: bool
    inner: float = 0.0  # the time of the parts inside it


class PartTimer:
    """Exclusive wall time per named part, per logged point; parts nest, and an "absorbing" part (a metric)
    keeps the time of every part called inside it."""

    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []
        self._stack: list[_Frame] = []

    @contextmanager
    def part(self, label: str, absorbing: bool = False) -> Iterator[None]:
        if any(frame.absorbing for frame in self._stack):  # inside a metric: its own time
            yield
            return
        frame = _Frame(time.perf_counter(), absorbing)
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - frame.start
            if self._stack:
                self._stack[-1].inner += elapsed
            if self.points:
                self.points[-1][label] += elapsed - frame.inner

    def wrap(self, owner: Any, name: str, label: str | Callable[..., str], absorbing: bool = False) -> Any:
        original = getattr(owner, name)

        @wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(label(*args, **kwargs) if callable(label) else label, absorbing):
                return original(*args, **kwargs)

        return mock.patch.object(owner, name, timed)


def _timed_monitor(timer: PartTimer) -> ExitStack:
    """Patch the monitor's parts with ``timer``'s stopwatches (see the module's docstring)."""
    from lightning_xai import monitor as monitor_module
    from lightning_xai._compute import explain
    from lightning_xai._compute.self_check import Diagnosis
    from lightning_xai._draw.visuals import Visuals
    from lightning_xai._write import image_sinks, picture, writers

    def start_point(*args: Any, **kwargs: Any) -> str:
        timer.points.append(defaultdict(float))
        return "other"

    stack = ExitStack()
    patches = [
        timer.wrap(monitor_module.AttributionMonitor, "_monitor_point", start_point),
        timer.wrap(explain.Subject, "scores", "predictions"),
        timer.wrap(explain, "_infidelity", "metric: infidelity", absorbing=True),
        timer.wrap(explain, "faithfulness", "metric: faithfulness", absorbing=True),
        timer.wrap(explain, "_sensitivity", "metric: sensitivity", absorbing=True),
        timer.wrap(Diagnosis, "flags", "self-check", absorbing=True),
        timer.wrap(Visuals, "point", "draw: grids"),
        timer.wrap(Visuals, "filmstrips", "draw: filmstrips"),
        timer.wrap(Visuals, "timelines", "draw: timelines"),
        timer.wrap(picture, "_png_of_pixels", "encode"),
        timer.wrap(picture, "_jpeg_of_pixels", "encode"),
        timer.wrap(image_sinks.TensorBoardSink, "write", "write: events"),
        timer.wrap(writers.ExplanationWriter, "artifacts", "write: maps, manifest"),
    ]
    for name in (*METHODS, "layer_gradcam"):
        patches.append(timer.wrap(registry.get(name), "attribute", f"method: {name}"))
    for patch in patches:
        stack.enter_context(patch)
    return stack


def _fit(
    size: int, root: Path, points: int, methods: dict[str, Any], timer: PartTimer | None = None, **options: Any
) -> AttributionMonitor:
    images, labels = _images(size)
    monitor = AttributionMonitor(
        methods, probe=(images, labels), display_std=(0.25,), display_mean=(0.5,), filmstrip_every=10, **options
    )
    data = DataLoader(TensorDataset(images, labels), batch_size=len(images))
    with _timed_monitor(timer) if timer is not None else ExitStack():
        fit(monitor, data, root, points)
    return monitor


def _before_methods(size: int) -> dict[str, Any]:
    """The registry's probe options, which the monitor used at every size before ``time_budget``."""
    side = max(1, size // 8)
    return {
        "integrated_gradients": {"n_steps": 16},
        "occlusion": {"sliding_window_shapes": (3, side, side), "strides": (3, side, side)},
    }


def breakdown(size: int, points: int = 4) -> list[str]:
    """The per-point parts before and after, side by side; the lines to print."""
    configurations: dict[str, tuple[Any, dict[str, Any]]] = {
        "before": (_before_methods(size), {"image_format": "png"}),
        "after": ({name: {} for name in METHODS}, {}),
    }
    timers = {name: PartTimer() for name in configurations}
    chosen: dict[str, Any] = {}
    for name, (methods, options) in configurations.items():
        with tempfile.TemporaryDirectory() as root:
            monitor = _fit(size, Path(root), points, methods, timers[name], **options)
        chosen[name] = {**methods, **(monitor.state_dict()["budgeted_options"] or {})}
    medians = {name: _median_point(timer) for name, timer in timers.items()}
    parts = sorted({part for found in medians.values() for part in found}, key=_part_order)
    lines = [f"monitor cost per point, ResNet-18 {size}x{size}, 8 probe images, {torch.get_num_threads()} threads"]
    lines.append(f"{'part':<34} {'before':>9} {'after':>9} {'ratio':>7}")
    for part in parts:
        before, after = medians["before"].get(part, 0.0), medians["after"].get(part, 0.0)
        lines.append(f"{part:<34} {before:8.2f}s {after:8.2f}s {_ratio(before, after):>7}")
    total_before, total_after = sum(medians["before"].values()), sum(medians["after"].values())
    lines.append(f"{'one point':<34} {total_before:8.2f}s {total_after:8.2f}s {_ratio(total_before, total_after):>7}")
    for name, options in chosen.items():
        lines.append(f"{name} options: {options}")
    return lines


def _median_point(timer: PartTimer) -> dict[str, float]:
    later = timer.points[1:] or timer.points
    parts = {part for point in later for part in point}
    return {part: statistics.median(point.get(part, 0.0) for point in later) for part in parts}


def _part_order(part: str) -> tuple[int, str]:
    order = ("predictions", "method", "metric", "self-check", "draw", "encode", "write", "other")
    return next(i for i, prefix in enumerate(order) if part.startswith(prefix)), part


def _ratio(before: float, after: float) -> str:
    return f"x{before / after:5.2f}" if after > 0 else "-"


def epoch_share(size: int, images: int, batch_size: int = 32) -> list[str]:
    """One epoch of ``images`` images fitted without and with the default monitor; the monitor's share."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(images, 3, size, size, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    probe_images, probe_labels = _images(size)
    times: dict[str, float] = {}
    inside: list[float] = []
    for name in ("without", "with"):
        monitor = AttributionMonitor(
            list(METHODS),
            probe=(probe_images, probe_labels),
            display_std=(0.25,),
            display_mean=(0.5,),
            log_at_start=False,
        )
        with tempfile.TemporaryDirectory() as root:
            trainer = L.Trainer(
                max_epochs=1,
                limit_val_batches=0,
                logger=TensorBoardLogger(root, name="", version=0),
                callbacks=[monitor] if name == "with" else [],
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                accelerator="cpu",
            )
            data = DataLoader(TensorDataset(inputs, labels), batch_size=batch_size, shuffle=True)
            hooks = ExitStack()
            if name == "with":
                hooks.enter_context(_hook_time(inside))
            start = time.perf_counter()
            with hooks:
                trainer.fit(_Classifier(), data)
            times[name] = time.perf_counter() - start
    share = sum(inside) / times["with"]
    return [
        f"one epoch of {images} images {size}x{size} (batch {batch_size}): fit {times['without']:.1f} s without the "
        f"monitor, {times['with']:.1f} s with it; inside its hooks {sum(inside):.1f} s = {share:.1%} of the fit"
    ]


@contextmanager
def _hook_time(collected: list[float]) -> Iterator[None]:
    """Time spent in the monitor's hooks that do work (the start of fit, where it picks its probe options,
    the epoch ends and the end of fit), appended to ``collected``."""
    patches = []
    for hook in ("on_fit_start", "on_train_start", "on_train_epoch_end", "on_fit_end"):
        original = getattr(AttributionMonitor, hook)

        def timed(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                collected.append(time.perf_counter() - start)

        patches.append(mock.patch.object(AttributionMonitor, hook, timed))
    with ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def bench_monitor_cost(size: int = 224, epoch_images: int = 2000) -> list[str]:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines = breakdown(size)
        if epoch_images:
            lines += epoch_share(size, epoch_images)
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epoch-images", type=int, default=2000)
    arguments = parser.parse_args()
    for line in bench_monitor_cost(arguments.size, arguments.epoch_images):
        print(line)
