"""Run by tests/test_monitor.py: the monitor under strategy='ddp' with 2 CPU processes (gloo)."""

import sys
import warnings

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    root = sys.argv[1]
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=TensorBoardLogger(root, name="logs"),
        callbacks=[AttributionMonitor(["integrated_gradients"], num_probe_samples=3, on_error="raise")],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=128, n_val=32, size=16))
