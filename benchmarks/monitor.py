"""The monitor's share of fit time in the shapes example's default configuration.

    python -m benchmarks.monitor

Fits ShapesNet for the example's 8 epochs twice in one process, without and
with the example's AttributionMonitor (integrated gradients, occlusion,
GradCAM, infidelity), and reports the monitor's share of the monitored fit.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
import warnings
from pathlib import Path

TARGET_SHARE = 0.10


def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "shapes.py"
    spec = importlib.util.spec_from_file_location("shapes_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fit_seconds(example, root: Path, monitored: bool, epochs: int) -> float:
    start = time.perf_counter()
    example.train(root, epochs, example.example_data(), example.build_monitor() if monitored else None)
    return time.perf_counter() - start


def bench_monitor(epochs: int = 8) -> list[str]:
    example = _example()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _fit_seconds(example, Path(root) / "warmup", False, 1)
        plain = min(_fit_seconds(example, Path(root) / f"plain{i}", False, epochs) for i in range(2))
        watched = min(_fit_seconds(example, Path(root) / f"watched{i}", True, epochs) for i in range(2))
    share = (watched - plain) / watched
    verdict = "within" if share < TARGET_SHARE else "over"
    return [
        f"{'shapes example fit, ' + str(epochs) + ' epochs':<44} plain {plain:6.2f} s | with monitor {watched:6.2f} s",
        f"{'':<44} monitor share of fit time {share:.1%} ({verdict} the {TARGET_SHARE:.0%} target)",
    ]


if __name__ == "__main__":
    print("\n".join(bench_monitor()))
