"""What the AttributionMonitor leaves on disk per logged point, and after a long run.

    python -m benchmarks.log_size                 # 64, 224 and 384 px
    python -m benchmarks.log_size --sizes 64 224  # some of them

The monitor with the defaults of the examples (integrated gradients, occlusion, GradCAM; infidelity; images)
on torchvision's ResNet-18 (``num_classes=10``, random weights), an 8-image probe, explained before the first
step and at every epoch end, in a fit of ``POINTS - 1`` one-batch epochs (learning rate 1e-9: the model
hardly moves, so every point costs the same).  Integrated gradients runs 4 steps and occlusion 16 windows
(a quarter of the side) instead of their probe defaults (16 steps, 64 windows): the maps' bytes do not depend
on it, the images' hardly, and a point at 384 px stays within seconds on a CPU.

Per size it reports the bytes of the TensorBoard event file and of the maps beside the logs (``xai/``),
per point, and extrapolates both to ``RUN`` points from the event file's images read back by kind: what
every point writes (grids, scalars), what a filmstrip write costs with ``MAX_FRAMES`` frames and how many
writes a run of ``RUN`` points makes, what the end of fit writes (timelines), and the maps files kept
at its end.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor

POINTS = 6
"""Points measured per size: the untrained model and 5 epoch ends; a filmstrip then holds its most frames."""
RUN = 300
SIZES = (64, 224, 384)
BUDGET_MB = 500.0


class _Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.net = resnet18(num_classes=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, _: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-9)


def _images(size: int, count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images (a blurred noise field per channel: compresses like a photograph more than
    white noise does) and a label each."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, 3, 8, 8, generator=generator)
    images = nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    images = images + 0.05 * torch.randn(count, 3, size, size, generator=generator)
    return (images - 0.5) / 0.25, torch.arange(count) % 10


def _images_by_kind(event_file: Path) -> dict[str, list[tuple[int, int]]]:
    """(step, PNG bytes) of every image in the event file, by kind: the tag's first part."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(event_file), size_guidance={"images": 0})
    events.Reload()
    kinds: dict[str, list[tuple[int, int]]] = {}
    for tag in events.Tags()["images"]:
        for image in events.Images(tag):
            kinds.setdefault(tag.split("/")[0], []).append((image.step, len(image.encoded_image_string)))
    return kinds


def fit(monitor: AttributionMonitor, data: DataLoader[Any], root: Path, points: int) -> L.Trainer:
    """``points - 1`` one-batch epochs of ResNet-18 on ``data`` with ``monitor``, logged under ``root``."""
    trainer = L.Trainer(
        max_epochs=points - 1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=TensorBoardLogger(root, name="", version=0),
        callbacks=[monitor],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(_Classifier(), data)
    return trainer


def measure(size: int, root: Path, points: int = POINTS, **options: Any) -> dict[str, float]:
    """Fit ``points - 1`` one-batch epochs with the monitor on ``size`` px images; the bytes it left, measured
    and extrapolated to ``RUN`` points (see the module's docstring)."""
    images, labels = _images(size)
    data = DataLoader(TensorDataset(images, labels), batch_size=len(images))
    side = size // 4
    methods = {
        "integrated_gradients": {"n_steps": 4},
        "occlusion": {"sliding_window_shapes": (3, side, side), "strides": (3, side, side)},
    }
    monitor = AttributionMonitor(methods, probe=(images, labels), display_std=(0.25,), display_mean=(0.5,), **options)
    trainer = fit(monitor, data, root, points)
    log_dir = Path(trainer.log_dir or root)
    (event_file,) = log_dir.glob("events.out.tfevents.*")
    maps = sorted((log_dir / "xai").glob("maps_step_*.pt"))
    maps_bytes = sum(path.stat().st_size for path in maps)
    kinds = _images_by_kind(event_file)
    other = event_file.stat().st_size - sum(n for shots in kinds.values() for _, n in shots)
    every = getattr(monitor, "filmstrip_every", 1)
    strips = kinds.get("xai_per_sample", [])
    strip_steps = sorted({step for step, _ in strips})
    last_strip = sum(n for step, n in strips if step == strip_steps[-1])
    strip_writes = len(range(0, RUN, every)) + (0 if (RUN - 1) % every == 0 else 1)
    per_point = sum(n for _, n in kinds.get("xai_per_step", [])) / points + other / points
    once = sum(n for _, n in kinds.get("xai_probe", []) + kinds.get("xai_overview", []))
    run_events = RUN * per_point + strip_writes * last_strip + once
    kept = len(_kept_maps(monitor, RUN))
    return {
        "events_per_point": event_file.stat().st_size / points,
        "maps_per_point": maps_bytes / len(maps),
        "run_events": run_events,
        "run_maps": kept * maps_bytes / len(maps),
        "kept": kept,
        "strip_writes": strip_writes,
    }


def _kept_maps(monitor: AttributionMonitor, run: int) -> list[int]:
    """The points whose maps files a run of ``run`` points keeps at its end (all of them before thinning)."""
    if not getattr(monitor, "thin_maps", False):
        return list(range(run))
    from lightning_xai._compute.history import kept_points

    return kept_points(run)


def bench_log_size(sizes: tuple[int, ...] = SIZES) -> list[str]:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for size in sizes:
            with tempfile.TemporaryDirectory() as root:
                found = measure(size, Path(root))
            total = (found["run_events"] + found["run_maps"]) / 1e6
            verdict = "within" if total < BUDGET_MB else "over"
            lines.append(
                f"{f'log size, ResNet-18 {size}x{size}, 8 probe images':<44} per point (first {POINTS}): "
                f"events {found['events_per_point'] / 1e6:5.2f} MB | maps {found['maps_per_point'] / 1e6:5.2f} MB"
            )
            lines.append(
                f"{'':<44} {RUN} points: events {found['run_events'] / 1e6:7.1f} MB "
                f"({found['strip_writes']} filmstrip writes) | maps {found['run_maps'] / 1e6:7.1f} MB "
                f"({found['kept']} files kept) | total {total:7.1f} MB ({verdict} the {BUDGET_MB:.0f} MB budget)"
            )
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    for line in bench_log_size(tuple(parser.parse_args().sizes)):
        print(line)
