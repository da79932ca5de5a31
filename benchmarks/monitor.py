"""The monitor's share of fit time in the shapes example's default configuration.

    python -m benchmarks.monitor

Fits ShapesNet for the example's 10 epochs without and with the example's
AttributionMonitor (integrated gradients, occlusion, GradCAM, infidelity,
drift, images, timelines; explained before the first step and at every epoch
end), interleaved, best of three each.  The share is
reported two ways: from the time spent inside the monitor's hooks (precise)
and from the difference of the fit times (noisier, about a second here).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
import warnings
from pathlib import Path

from lightning_xai import AttributionMonitor

TARGET_SHARE = 0.05
HOOKS = ("setup", "on_fit_start", "on_train_start", "on_train_batch_end", "on_train_epoch_end", "on_fit_end")


def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "shapes.py"
    spec = importlib.util.spec_from_file_location("shapes_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(monitor: AttributionMonitor) -> AttributionMonitor:
    """Accumulate the seconds spent in the monitor's hooks on ``monitor.seconds``."""
    monitor.seconds = 0.0
    for name in HOOKS:
        hook = getattr(monitor, name)

        def timed(*args, _hook=hook, **kwargs):
            start = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                monitor.seconds += time.perf_counter() - start

        setattr(monitor, name, timed)
    return monitor


def bench_monitor(epochs: int = 10, repeats: int = 3) -> list[str]:
    example = _example()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    plain, watched, inside = [], [], []
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(repeats):
            for monitored in (False, True):
                monitor = _timed(example.build_monitor()) if monitored else None
                start = time.perf_counter()
                example.train(Path(root) / f"run{i}{monitored}", epochs, example.example_data(), monitor)
                (watched if monitored else plain).append(time.perf_counter() - start)
                if monitored:
                    inside.append(monitor.seconds)
                    points = len(monitor.points)
    best_plain, best_watched, hooks = min(plain), min(watched), min(inside)
    share = hooks / best_watched
    difference = (best_watched - best_plain) / best_watched
    verdict = "within" if share < TARGET_SHARE else "over"
    return [
        f"{'shapes example fit, ' + str(epochs) + ' epochs':<44} plain {best_plain:6.2f} s | "
        f"with monitor {best_watched:6.2f} s (best of {repeats})",
        f"{'':<44} time in the monitor's hooks {hooks:.2f} s ({hooks / points:.2f} s per logged point incl. the end, "
        f"{points} points)",
        f"{'':<44} monitor share of fit time {share:.1%} from its hooks, "
        f"{difference:.1%} from the fit times ({verdict} the {TARGET_SHARE:.0%} target)",
    ]


if __name__ == "__main__":
    print("\n".join(bench_monitor()))
