"""Run by tests/integration/test_concept_monitor.py as ``python ddp_concept_robustness_script.py ROOT``: the
ConceptMonitor with a ConceptRegressionCheck that stops training, and the RobustnessMonitor, in one fit under
strategy='ddp' with 2 CPU processes (gloo). Each process writes what its monitors and check hold to
``ROOT/rank<r>.json``; the logger (rank zero's) writes the event file under ``ROOT/logs``.
"""

import json
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import ConceptMonitor, ConceptRegressionCheck, RobustnessMonitor
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet, corner_mark_concept, make_shapes, normalize_images

SIZE = 16
NAME = "mark_tl/features.4/class_0"

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    root = Path(sys.argv[1])
    L.seed_everything(0, verbose=False)
    data = ShapesDataModule(n_train=256, n_val=64, size=SIZE, batch_size=16)
    data.setup("fit")
    val = data.val_set
    probe = (torch.stack([val[i]["image"] for i in range(32)]), torch.stack([val[i]["label"] for i in range(32)]))
    concept = corner_mark_concept(30, corner=0, size=SIZE, seed=7)
    random = normalize_images(make_shapes(150, SIZE, seed=8)[0])
    concepts = ConceptMonitor({"mark_tl": concept}, random, "features.4", probe, targets=[0], num_random_sets=3)
    # The score must stay at 1.0, every probe example's derivative positive: a clean model's is below.
    check = ConceptRegressionCheck(NAME, 1.0, direction="above", significant_only=False, on_fail="stop")
    robustness = RobustnessMonitor(probe, epsilon=0.05, pgd_steps=2)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=3,
        default_root_dir=root,
        logger=TensorBoardLogger(root, name="logs", version=0),
        callbacks=[concepts, check, robustness],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShapesNet(), datamodule=data)
    held = {
        "epoch": trainer.current_epoch,
        "concepts": concepts.history,
        "violated": [h["violated"] for h in check.history],
        "robustness": robustness.history,
    }
    (root / f"rank{trainer.global_rank}.json").write_text(json.dumps(held))
