"""The monitor on a ``torch.compile``-d model: does explaining the probe make dynamo recompile, and what does
a training step cost right after a point?

    python -m benchmarks.compiled [--backend inductor] [--epochs 3]

A small CNN (ShapesNet-sized, 32x32 shapes) is compiled with the given backend and trained with the
monitor explaining after every 4th step (integrated gradients, occlusion, GradCAM, infidelity and
sensitivity: batch sizes and grad modes unlike training's), three ways, each in a fresh dynamo state:
without the monitor; with it (the compiled model runs eagerly while the monitor explains); and with it
as it was before (the monitor's forwards going through the compiled model, which recompiles for each new
batch size and grad mode until dynamo's recompile limit, 8, after which the model runs uncompiled, training
included).  Printed: the frames dynamo compiled, the median time of the training step right after a
point and of the other steps, the fit time, and the ratios against training without the monitor.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import warnings
from unittest import mock

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_xai import AttributionMonitor
from lightning_xai._compute import explain as _explain
from lightning_xai.demos.shapes import ShapesDataModule

EVERY_N_STEPS = 4


class _Compiled(L.LightningModule):
    def __init__(self, backend: str) -> None:
        super().__init__()
        net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3),
        )  # fmt: skip
        self.net = torch.compile(net, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch["image"]), batch["label"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class _StepTimes(Callback):
    """Seconds of each training step, and which steps came right after a monitor point."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # before the monitor's own on_train_batch_end (this callback is listed first): the step alone
        self.seconds[trainer.global_step] = time.perf_counter() - self._started


def _run(backend: str, epochs: int, monitored: bool, old_behaviour: bool = False) -> dict:
    import torch._inductor.config
    from torch._dynamo.utils import counters

    torch._inductor.config.force_disable_caches = True  # every run compiles, as a fresh process would
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    timer = _StepTimes()
    callbacks: list[Callback] = [timer]
    if monitored:
        methods = {"integrated_gradients": {"n_steps": 8}, "occlusion": {}}
        callbacks.append(
            AttributionMonitor(
                methods,
                metrics=("infidelity", "sensitivity"),
                num_probe_samples=6,
                every_n_epochs=None,
                every_n_steps=EVERY_N_STEPS,
            )  # fmt: skip
        )
    patch = mock.patch.object(_explain, "_eager", contextlib.nullcontext) if old_behaviour else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as root, patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(
            default_root_dir=root, max_epochs=epochs, logger=False, callbacks=callbacks, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        )  # fmt: skip
        data = ShapesDataModule(n_train=256, n_val=32, size=32, batch_size=16)
        started = time.perf_counter()
        trainer.fit(_Compiled(backend), datamodule=data)
        fit = time.perf_counter() - started
    steps = sorted(timer.seconds)[1:]  # the first step compiles
    after = [timer.seconds[s] for s in steps if (s - 1) % EVERY_N_STEPS == 0 and s > 1]
    others = [timer.seconds[s] for s in steps if (s - 1) % EVERY_N_STEPS != 0]
    return {
        "frames": counters["frames"].get("total", 0),
        "after": statistics.median(after),
        "others": statistics.median(others),
        "fit": fit,
    }


def bench_compiled(backend: str = "inductor", epochs: int = 2) -> list[str]:
    plain = _run(backend, epochs, monitored=False)
    now = _run(backend, epochs, monitored=True)
    before = _run(backend, epochs, monitored=True, old_behaviour=True)
    lines = [f"torch.compile(backend={backend!r}), a step is 16 images of 32x32; a point every {EVERY_N_STEPS} steps"]
    header = f"{'':<36} {'frames':>7} {'step after a point':>19} {'other steps':>12} {'fit':>8}"
    lines.append(header)
    for name, run in (("without the monitor", plain), ("monitor (eager while explaining)", now),
                      ("monitor, before (compiled forwards)", before)):  # fmt: skip
        lines.append(
            f"{name:<36} {run['frames']:>7} {run['after'] * 1e3:>16.1f} ms "
            f"{run['others'] * 1e3:>9.1f} ms {run['fit']:>6.1f} s"
        )
    ratio, old_ratio = now["after"] / plain["after"], before["after"] / plain["after"]
    lines.append(
        f"step after a point, with the monitor / without: x{ratio:.2f} (before: x{old_ratio:.2f}); "
        f"frames compiled with / without: {now['frames']} / {plain['frames']} (before: {before['frames']}); "
        f"fit now / before: x{now['fit'] / before['fit']:.2f}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print("\n".join(bench_compiled(args.backend, args.epochs)))


if __name__ == "__main__":
    main()
