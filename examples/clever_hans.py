"""Catching a model that looks at the wrong thing ("Clever Hans").

The shapes data again, but with a small white mark in a corner that depends
on the label.  The mark predicts the label perfectly, so the model learns the
shortcut and reaches 100% validation accuracy without looking at the shapes.
Accuracy cannot tell; the explanations can: the share of attribution on the
object (``xai/integrated_gradients/mass_in_mask``) collapses, and an
``AttributionRegressionCheck`` stops training.  The same script on the clean
data trains to the end without a word.

    python examples/clever_hans.py          # both runs, then a comparison figure
    python examples/clever_hans.py --only spurious
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import matplotlib
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor, AttributionRegressionCheck
from lightning_xai.demos.shapes import SHAPES_MEAN, SHAPES_STD, ShapesDataModule, ShapesNet, denormalize_images

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRIC = "integrated_gradients/mass_in_mask"
THRESHOLD = 0.3


def run(root: Path, spurious: bool, epochs: int = 4, quick: bool = False) -> dict:
    """Train on clean or marked data with the monitor and the check; return what happened."""
    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(
        methods=["integrated_gradients", "occlusion"],
        target="label",
        metrics=(),
        display_mean=SHAPES_MEAN,
        display_std=SHAPES_STD,
    )
    check = AttributionRegressionCheck(METRIC, threshold=THRESHOLD, direction="above", on_fail="stop")
    name = "spurious" if spurious else "clean"
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name=name),
        callbacks=[monitor, check],
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    data = ShapesDataModule(n_train=400 if quick else 3000, n_val=100 if quick else 300, spurious_mark=spurious)
    trainer.fit(ShapesNet(), datamodule=data)
    fired = any(r["violated"] for r in check.history)
    print(
        f"{name:>8}: val_acc {float(trainer.callback_metrics['val_acc']):.3f}, "
        f"{METRIC} per epoch {[round(r['value'], 3) for r in check.history]}, "
        f"check {'FIRED, training stopped' if fired else 'quiet'} after epoch {trainer.current_epoch - 1}"
    )
    return {"log_dir": Path(trainer.log_dir), "fired": fired, "history": check.history}


def comparison_figure(runs: dict[str, dict], path: Path, shown: int = 4) -> Path:
    """The probe with integrated-gradients overlays at each run's last logged point."""
    figure, axes = plt.subplots(len(runs), shown, figsize=(2.2 * shown, 2.4 * len(runs)), squeeze=False)
    for row, (name, result) in enumerate(runs.items()):
        artifacts = result["log_dir"] / "xai"
        manifest = json.loads((artifacts / "manifest.json").read_text())
        last = max(r["step"] for r in manifest)
        (record,) = [r for r in manifest if r["step"] == last and r["method"] == "integrated_gradients"]
        maps = torch.load(artifacts / record["maps"], weights_only=True)["integrated_gradients"].float()
        probe = torch.load(artifacts / "probe.pt", weights_only=True)
        images = denormalize_images(probe["inputs"]).clamp(0, 1).permute(0, 2, 3, 1)
        heat = maps.abs().sum(1)
        mass = record["metrics"]["mass_in_mask"]
        for i in range(shown):
            ax = axes[row, i]
            ax.imshow(images[i])
            ax.imshow(heat[i], cmap="inferno", alpha=0.6)
            ax.set_axis_off()
        axes[row, 0].set_title(
            f"{name}: mass on object {mass:.2f}, check {'fired' if result['fired'] else 'quiet'}",
            fontsize=9,
            loc="left",
        )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def main(root: Path, only: str | None = None, epochs: int = 4, quick: bool = False) -> dict[str, dict]:
    runs = {
        name: run(root, name == "spurious", epochs, quick) for name in ("clean", "spurious") if only in (None, name)
    }
    if len(runs) == 2:
        print(f"Comparison figure: {comparison_figure(runs, root / 'clever_hans.png')}")
    print(f"TensorBoard: .venv/bin/tensorboard --logdir {root} --samples_per_plugin images=100")
    return runs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/clever_hans"))
    parser.add_argument("--only", choices=("clean", "spurious"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="small data set (smoke test)")
    args = parser.parse_args()
    main(args.root, args.only, args.epochs, args.quick)
