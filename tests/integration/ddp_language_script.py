"""Run by tests/integration/test_language_monitor.py, from the repository root, as
``python -m tests.integration.ddp_language_script ROOT``: the LanguageModelMonitor and a PromptAttributionCheck
that stops training, under strategy='ddp' with 2 CPU processes (gloo).

Every process computes the probe's point on its own replica; the logger (rank zero's) writes the event file
under ``ROOT``. Each process writes what its monitor and check hold to ``ROOT/rank<r>.json``.
"""

import json
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import LanguageModelMonitor, PromptAttributionCheck
from tests.integration._tiny_lm import PROBE, Module, gpt2, loader, word_tokenizer

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    root = Path(sys.argv[1])
    L.seed_everything(0, verbose=False)
    tokenizer = word_tokenizer()
    monitor = LanguageModelMonitor(PROBE, tokenizer)
    check = PromptAttributionCheck(1.0, on_fail="stop")  # every share is below 1: it fires at the first epoch end
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=3,
        default_root_dir=root,
        logger=TensorBoardLogger(root, name="", version=""),
        callbacks=[monitor, check],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Module(gpt2()), loader(tokenizer))
    violated = [h["violated"] for h in check.history]
    held = {"epoch": trainer.current_epoch, "history": monitor.history, "violated": violated}
    (root / f"rank{trainer.global_rank}.json").write_text(json.dumps(held))
