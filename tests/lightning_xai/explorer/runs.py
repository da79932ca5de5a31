"""Log directories for the explorer's tests: tiny real monitored fits, and hand-made artifacts in the forms
the monitor may leave (channel-summed half-precision maps, thinned points)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

PROBE_SIZE = 4


def monitored_run(logdir: Path, name: str, seed: int = 0, **options: object) -> Path:
    """A 2-epoch fit on 16-pixel shapes with saliency (and the GradCAM the monitor adds) logged under
    ``logdir/name/version_0``; returns that run's artifact directory.  ``options`` go to the monitor."""
    L.seed_everything(seed, verbose=False)
    monitor = AttributionMonitor(["saliency"], num_probe_samples=PROBE_SIZE, **options)  # type: ignore[arg-type]
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=TensorBoardLogger(logdir, name=name, version=0),
        callbacks=[monitor],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=64, n_val=16, size=16, batch_size=16, seed=seed))
    return logdir / name / "version_0" / "xai"


def hand_made_run(directory: Path, width: int = 8) -> Path:
    """Artifacts written by hand: two points of one method, the first with float16 maps summed over channels
    (N, H, W) at 16 times the probe's 8 x ``width`` pixels, the second thinned (``"maps": null``); 2 probe
    examples, labels 1 and 0."""
    directory.mkdir(parents=True)
    maps = torch.zeros(2, 128, 16 * width)
    maps[0, :64, : 8 * width] = 2.0  # example 0: positive top-left quarter
    maps[1, 64:, 8 * width :] = -1.0  # example 1: negative bottom-right quarter
    torch.save({"saliency": maps.to(torch.float16)}, directory / "maps_step_0000000.pt")
    inputs = torch.linspace(-1, 1, 2 * 3 * 8 * width).reshape(2, 3, 8, width)
    torch.save({"inputs": inputs, "labels": torch.tensor([1, 0]), "masks": None}, directory / "probe.pt")
    base = {"method": "saliency", "target": [1, 1], "flags": []}
    records = [
        {
            **base,
            "step": 0,
            "epoch": 0,
            "prediction": [1, 1],
            "metrics": {"sparseness": 0.5},
            "maps": "maps_step_0000000.pt",
        },
        {
            **base,
            "step": 10,
            "epoch": 1,
            "prediction": [1, 0],
            "metrics": {"sparseness": 0.7},
            "maps": None,
            "maps_thinned": "maps_step_0000010.pt was deleted",
            "verdicts": [{"name": "saliency/sparseness", "value": 0.7, "violated": True}],
        },
    ]
    (directory / "manifest.json").write_text(json.dumps(records))
    return directory
