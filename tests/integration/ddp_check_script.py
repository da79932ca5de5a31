"""Run by tests/integration/test_regression.py: on_fail='stop' under strategy='ddp' with 2 CPU processes."""

import sys
import warnings
from pathlib import Path

import lightning as L

from lightning_xai import AttributionMonitor, AttributionRegressionCheck
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    root = Path(sys.argv[1])
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=4,
        logger=False,
        default_root_dir=root,  # the monitor's artifacts go under the test's directory, not the working directory
        callbacks=[
            AttributionMonitor(["integrated_gradients"], gradcam=False, metrics=(), target="label", on_error="raise"),
            AttributionRegressionCheck("integrated_gradients/mass_in_mask", 0.3, on_fail="stop"),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=256, n_val=64, size=16, spurious_mark=True))
    (root / f"rank{trainer.global_rank}_epochs.txt").write_text(str(trainer.current_epoch))
