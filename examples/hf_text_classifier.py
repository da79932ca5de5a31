"""A Hugging Face text classifier under the monitor, without a wrapper module.

A tiny ``BertForSequenceClassification``, built from a config (random weights, nothing downloaded),
learns the sentiment of generated sentences in which one or two planted words ("great", "awful", ...)
decide the label.  Batches are dicts as a tokenizer gives them (``input_ids``, ``attention_mask``,
``labels``, plus the planted-word ``mask`` as ground truth).  The monitor explains ``input_ids`` with
``layer_integrated_gradients`` on BERT's word embeddings, passes ``attention_mask`` along by keyword,
reads the scores from the model's ``SequenceClassifierOutput`` and logs the probe sentences as coloured
text with the share of attribution on the planted words (``mass_in_mask``).

    pip install 'lightning-xai[zoo]'   # transformers (and timm, segmentation-models-pytorch)
    python examples/hf_text_classifier.py
    tensorboard --logdir runs/hf_text --samples_per_plugin images=100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai import AttributionMonitor
from lightning_xai.demos.text import VOCABULARY, make_sentences

WORDS, PADDING = 9, 3
"""Words per sentence, then padding tokens: the attention mask must keep the padding out of the explanations."""


class Sentences(Dataset):
    """Tokenizer-style items: ``input_ids`` and ``attention_mask`` (padded), ``labels``, and ``mask``
    (the planted words, the ground truth of the explanations)."""

    def __init__(self, n: int, seed: int) -> None:
        words, self.labels, planted = make_sentences(n, WORDS, seed=seed)
        pad = torch.zeros(n, PADDING, dtype=torch.long)  # id 0 is the padding token
        self.input_ids = torch.cat([words, pad], dim=1)
        self.attention_mask = torch.cat([torch.ones_like(words), pad], dim=1)
        self.planted = torch.cat([planted, pad.bool()], dim=1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": self.attention_mask[i],
            "labels": self.labels[i],
            "mask": self.planted[i],
        }


class SentimentBert(L.LightningModule):
    """A tiny BERT from a config; ``forward`` takes what a tokenizer gives and returns the HF output."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(
            vocab_size=len(VOCABULARY), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=WORDS + PADDING, num_labels=2, pad_token_id=0,
        )  # fmt: skip
        self.model = BertForSequenceClassification(config)
        self.lr = lr

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        self.log("train_loss", out.loss)
        return out.loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"]).logits
        self.log("val_acc", (logits.argmax(1) == batch["labels"]).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def build_monitor() -> AttributionMonitor:
    return AttributionMonitor(
        methods={"layer_integrated_gradients": {"n_steps": 16}},
        layer="model.bert.embeddings.word_embeddings",
        metrics=(),
        target="label",
        num_probe_samples=6,
        token_names=VOCABULARY,
    )


def main(root: Path, epochs: int = 4, quick: bool = False) -> dict:
    """Train with the monitor; returns the monitor, the log dir and the final share on the planted words."""
    L.seed_everything(0, verbose=False)
    train, val = Sentences(200 if quick else 2000, seed=0), Sentences(60 if quick else 200, seed=1)
    monitor = build_monitor()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name="hf_text"),
        callbacks=[monitor],
        enable_model_summary=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(SentimentBert(), DataLoader(train, batch_size=32, shuffle=True), DataLoader(val, batch_size=64))
    shares = [r["metrics"].get("mass_in_mask") for r in monitor.history]
    print(f"\nval_acc {float(trainer.callback_metrics['val_acc']):.3f}")
    print("Share of attribution on the planted words, per epoch:", " ".join(f"{s:.2f}" for s in shares))
    print(f"TensorBoard: .venv/bin/tensorboard --logdir {root} --samples_per_plugin images=100")
    return {"monitor": monitor, "log_dir": Path(trainer.log_dir), "shares": shares}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/hf_text"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="small data set (smoke test)")
    args = parser.parse_args()
    main(args.root, args.epochs, args.quick)
