"""Run by tests/integration/test_sharded_probe.py: the monitor under DDP with CPU processes (gloo), or in one
process.

``python ddp_monitor_script.py ROOT DEVICES [CHUNK]``: a fit of one epoch and a resumed second one. Writes
under ROOT the logs, the last checkpoint, and per rank how many probe examples the model saw while the
monitor explained the untrained model (``rank<r>_examples.txt``).
"""

import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

METHODS = ["integrated_gradients", "gradient_shap", "occlusion"]


class CountingNet(ShapesNet):
    """Counts the examples its forward sees in eval mode (the monitor's passes) before the first step."""

    seen = 0

    def forward(self, x):
        counted = isinstance(x, torch.Tensor) and not self.training and not self.trainer.sanity_checking
        if counted and self.trainer.global_step == 0:  # (layer choice traces the model with proxies)
            CountingNet.seen += x.shape[0]
        return super().forward(x)


def trainer(root: Path, devices: int, chunk: int | None, epochs: int) -> L.Trainer:
    monitor = AttributionMonitor(
        METHODS,
        num_probe_samples=6,
        metrics=("infidelity", "sensitivity"),
        probe_chunk_size=chunk,
        on_error="raise",
    )
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name="logs", version=0),
        callbacks=[monitor, ModelCheckpoint(dirpath=root / "ckpt", save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    root, devices = Path(sys.argv[1]), int(sys.argv[2])
    chunk = int(sys.argv[3]) if len(sys.argv) > 3 else None
    data = ShapesDataModule(n_train=128, n_val=32, size=16)
    L.seed_everything(0, verbose=False)
    first = trainer(root, devices, chunk, epochs=1)
    first.fit(CountingNet(), datamodule=data)
    (root / f"rank{first.global_rank}_examples.txt").write_text(str(CountingNet.seen))
    trainer(root, devices, chunk, epochs=2).fit(CountingNet(), datamodule=data, ckpt_path=root / "ckpt" / "last.ckpt")
