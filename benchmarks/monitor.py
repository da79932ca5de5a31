"""The monitor's share of fit time: in the shapes example, and what sensitivity costs on small real data.

    python -m benchmarks.monitor                      # both
    python -m benchmarks.monitor --only sensitivity   # one of them (share, sensitivity)

``share``: fits ShapesNet for the example's 10 epochs without and with the
example's AttributionMonitor (integrated gradients, occlusion, GradCAM,
infidelity, drift, images, timelines; explained before the first step and at
every epoch end), interleaved, best of three each.  The share is reported two
ways: from the time spent inside the monitor's hooks (precise) and from the
difference of the fit times (noisier, about a second here).

``sensitivity``: a small CNN on scikit-learn's digits (1789 images of 8x8,
an 8-example probe, 5 epochs, the shapes example's methods), fitted without
the monitor, with infidelity, and with infidelity and sensitivity, the latter
twice: as the monitor computes sensitivity now (from the explanation it
already has) and as it did before (explaining the unperturbed probe again).
Interleaved, best of five each; sensitivity's share of the fit is reported
from the time inside it (precise) and from the fit times, with the
before/after ratios.  Needs scikit-learn (an example extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from attribution.metrics import sensitivity_max
from lightning_xai import AttributionMonitor
from lightning_xai._compute import explain as _explain

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


METHODS = ("integrated_gradients", "occlusion")
"""The shapes example's methods (plus GradCAM, on by default); sensitivity explains both again per copy."""


class _DigitsNet(L.LightningModule):
    """Two convolutions and a linear head for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 2)
        return self.head(x.flatten(1))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), 1e-3)


def _digits() -> tuple[torch.utils.data.TensorDataset, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's digits scaled to [0, 1]: all but the last 8 to train on, those 8 as the probe."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    y = torch.tensor(digits.target)
    return torch.utils.data.TensorDataset(x[:-8], y[:-8]), (x[-8:], y[-8:])


def _fit_digits(root: Path, epochs: int, monitor: AttributionMonitor | None) -> float:
    """Seconds to fit the digits net for ``epochs``, with ``monitor`` or without one."""
    train, _ = _digits()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root),
        callbacks=[] if monitor is None else [monitor],
        enable_model_summary=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    start = time.perf_counter()
    trainer.fit(_DigitsNet(), train_dataloaders=torch.utils.data.DataLoader(train, batch_size=64, shuffle=True))
    return time.perf_counter() - start


def _sensitivity_recomputing_the_explanation(explainer, inputs, targets, options, explained):
    """The monitor's sensitivity before it reused its explanation: ``e(x)`` explained again."""
    samples = _explain.PERTURBATION_SAMPLES
    scores = sensitivity_max(explainer.attribute, inputs, n_perturb_samples=samples, target=targets, **options)
    return scores.detach().float()


def _counting(sensitivity: Callable, seconds: list[float]) -> Callable:
    """``sensitivity`` adding the seconds spent inside it to ``seconds[0]``."""

    def counted(*args, **kwargs):
        start = time.perf_counter()
        try:
            return sensitivity(*args, **kwargs)
        finally:
            seconds[0] += time.perf_counter() - start

    return counted


def bench_sensitivity(epochs: int = 5, repeats: int = 5) -> list[str]:
    """Sensitivity's share of a small fit, as the monitor computes it now and as it did before."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    _, probe = _digits()
    variants = {
        "plain": None,
        "infidelity": None,
        "sensitivity before": _sensitivity_recomputing_the_explanation,
        "sensitivity now": _explain._sensitivity,
    }
    fits: dict[str, list[float]] = {name: [] for name in variants}
    inside: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(repeats):
            for name, sensitivity in variants.items():
                metrics = ("infidelity",) if sensitivity is None else ("infidelity", "sensitivity")
                monitor = None if name == "plain" else AttributionMonitor(METHODS, metrics=metrics, probe=probe)
                seconds = [0.0]
                counted = _counting(sensitivity or _explain._sensitivity, seconds)
                with mock.patch.object(_explain, "_sensitivity", counted):
                    fits[name].append(_fit_digits(Path(root) / f"{name}{i}", epochs, monitor))
                inside[name].append(seconds[0])
    best = {name: min(times) for name, times in fits.items()}
    spent = {name: min(times) for name, times in inside.items()}
    label = f"digits fit, {epochs} epochs, 8-example probe"
    lines = [
        f"{label:<44} plain {best['plain']:5.2f} s | infidelity {best['infidelity']:5.2f} s | "
        f"+ sensitivity before {best['sensitivity before']:5.2f} s, now {best['sensitivity now']:5.2f} s "
        f"(best of {repeats})"
    ]
    for when in ("before", "now"):
        total = best[f"sensitivity {when}"]
        lines.append(
            f"{'':<44} sensitivity {when:<6}: {spent[f'sensitivity {when}']:5.2f} s inside it, "
            f"{spent[f'sensitivity {when}'] / total:5.1%} of the fit; "
            f"{(total - best['infidelity']) / total:5.1%} from the fit times; "
            f"fit x{total / best['plain']:.2f} of plain, x{total / best['infidelity']:.2f} of infidelity only"
        )
    lines.append(
        f"{'':<44} now vs before: time inside sensitivity "
        f"x{spent['sensitivity before'] / spent['sensitivity now']:.2f} faster, whole fit "
        f"x{best['sensitivity before'] / best['sensitivity now']:.2f}"
    )
    return lines


PARTS = {"share": bench_monitor, "sensitivity": bench_sensitivity}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(PARTS), action="append", help="run only these parts")
    for part in parser.parse_args().only or PARTS:
        print("\n".join(PARTS[part]()), flush=True)
