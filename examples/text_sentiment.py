"""Token attributions of a text classifier, during and after training.

A small classifier over token embeddings learns the sentiment of generated
sentences, in which one or two planted words ("great", "awful", ...) decide
the label.  ``LayerIntegratedGradients`` on the embedding layer attributes
the prediction to tokens; the monitor logs the probe sentences as coloured
text every epoch (``xai_text/layer_integrated_gradients``) and the share of
attribution on the planted words (``.../mass_in_mask``).  At the end the
validation sentences are written as an HTML page and an image.

    python examples/text_sentiment.py
    tensorboard --logdir runs/text --samples_per_plugin images=100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from attribution import LayerIntegratedGradients
from attribution.metrics import mass_in_mask
from attribution.text_visualization import token_figure, token_html
from lightning_xai import AttributionMonitor
from lightning_xai.demos.text import VOCABULARY, SentenceDataModule, TextClassifier


def build_monitor() -> AttributionMonitor:
    return AttributionMonitor(
        methods=["layer_integrated_gradients"],
        layer="embedding",
        gradcam=False,
        metrics=(),
        target="label",
        num_probe_samples=6,
        token_names=VOCABULARY,
    )


def main(root: Path, epochs: int = 5, quick: bool = False) -> dict:
    """Train with the monitor, then explain validation sentences; returns paths and the final share."""
    L.seed_everything(0, verbose=False)
    data = SentenceDataModule(n_train=400 if quick else 3000, n_val=100 if quick else 300)
    model = TextClassifier()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name="text"),
        callbacks=[build_monitor()],
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, datamodule=data)
    log_dir = Path(trainer.log_dir)

    batch = next(iter(data.val_dataloader()))
    tokens, labels, planted = batch["tokens"][:8], batch["label"][:8], batch["mask"][:8]
    model.eval()
    attributions = LayerIntegratedGradients(model, model.embedding).attribute(tokens, target=labels, n_steps=32)
    scores = attributions.sum(-1)  # one signed score per token
    share = float(mass_in_mask(scores[:, None], planted[:, None]).nanmean())  # sentences without a planted word: NaN
    with torch.no_grad():
        predicted = model(tokens).argmax(1)
    words = [[VOCABULARY[t] for t in row] for row in tokens.tolist()]
    titles = [f"label {'positive' if y else 'negative'}, predicted {'positive' if p else 'negative'}"
              for y, p in zip(labels.tolist(), predicted.tolist())]  # fmt: skip
    html_path = log_dir / "token_attributions.html"
    html_path.write_text(token_html(words, scores, titles))
    png_path = log_dir / "token_attributions.png"
    token_figure(words, scores, titles).savefig(png_path)

    print(f"\nval_acc {float(trainer.callback_metrics['val_acc']):.3f}")
    print(f"Share of positive attribution on the planted sentiment words: {share:.2f}")
    for row, title in zip(words[:3], titles[:3]):
        print(f"  {title}: {' '.join(row)}")
    print(f"Coloured tokens: {html_path} and {png_path}")
    print(f"TensorBoard: .venv/bin/tensorboard --logdir {root} --samples_per_plugin images=100")
    return {"log_dir": log_dir, "html": html_path, "png": png_path, "share": share}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/text"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small data set (smoke test)")
    args = parser.parse_args()
    main(args.root, args.epochs, args.quick)
