"""Catching a shortcut with a concept instead of masks (TCAV over training).

The shapes data of ``clever_hans.py``: in the spurious run a small white mark
in corner k of every image of class k predicts the label perfectly, and the
model learns the mark instead of the shape.  ``clever_hans.py`` needs the
objects' masks to see it; here the only extra input is thirty example images
of the concept "a white mark in the top-left corner" (class 0's corner) and
some random shapes images as counter-examples: no masks, no labels.

A ``ConceptMonitor`` trains the concept's activation vector (CAV) in a
convolution layer at every epoch end and logs its TCAV score for class 0: the
share of class-0 probe images whose class-0 score rises along the concept,
with the p-value against random directions.  On the shortcut the score
jumps to 1.0 (significant) after the first epoch and a
``ConceptRegressionCheck`` stops training; on the clean data it stays
indistinguishable from random directions and training runs to the end.

    python examples/clever_hans_concepts.py          # both runs, then the TCAV curves
    python examples/clever_hans_concepts.py --only spurious
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import matplotlib
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import ConceptMonitor, ConceptRegressionCheck
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet, corner_mark_concept, make_shapes, normalize_images

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LAYER = "features.4"
"""The second convolution: where the CAVs live."""
SCORE = f"mark_top_left/{LAYER}/class_0"
"""The score the check watches: the top-left mark concept, for class 0 (whose shortcut mark sits there)."""
THRESHOLD = 0.9


def concept_monitor(data: ShapesDataModule, size: int) -> ConceptMonitor:
    """TCAV of the top-left mark concept for class 0 on 64 validation images, four CAVs against random sets."""
    data.setup("fit")
    assert data.val_set is not None
    items = [data.val_set[i] for i in range(64)]
    probe = torch.stack([item["image"] for item in items]), torch.stack([item["label"] for item in items])
    concept = corner_mark_concept(30, corner=0, size=size, seed=7)
    random = normalize_images(make_shapes(150, size, seed=8)[0])  # shapes of every class, no mark
    return ConceptMonitor({"mark_top_left": concept}, random, layers=LAYER, probe=probe, targets=[0], num_random_sets=4)


def run(root: Path, spurious: bool, epochs: int = 4, quick: bool = False) -> dict:
    """Train on clean or marked data with the concept monitor and its check; return what happened."""
    L.seed_everything(0, verbose=False)
    size = 16 if quick else 32
    data = ShapesDataModule(
        n_train=512 if quick else 3000, n_val=64 if quick else 300, size=size, spurious_mark=spurious
    )
    monitor = concept_monitor(data, size)
    check = ConceptRegressionCheck(SCORE, THRESHOLD, on_fail="stop")
    name = "spurious" if spurious else "clean"
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name=name),
        callbacks=[monitor, check],
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(ShapesNet(), datamodule=data)
    curve = [(r["step"], r["score"], r["p_value"]) for r in monitor.history if r["name"] == SCORE]
    fired = any(r["violated"] for r in check.history)
    shown = ", ".join(f"step {s}: {v:.2f} (p={p:.2g})" for s, v, p in curve)
    print(f"{name:>8}: val_acc {float(trainer.callback_metrics['val_acc']):.3f}; TCAV {SCORE}: {shown}")
    print(f"{'':>8}  check {'FIRED, training stopped' if fired else 'quiet'} after epoch {trainer.current_epoch - 1}")
    return {"log_dir": Path(trainer.log_dir), "fired": fired, "curve": curve, "alpha": monitor.alpha}


def curve_figure(runs: dict[str, dict], path: Path) -> Path:
    """The TCAV score over training for each run; filled markers where it is significant."""
    figure, ax = plt.subplots(figsize=(6, 3.6))
    for name, result in runs.items():
        steps, scores, p_values = zip(*result["curve"])
        line = ax.plot(steps, scores, label=f"{name} (check {'fired' if result['fired'] else 'quiet'})")[0]
        for step, score, p_value in result["curve"]:
            filled = p_value < result["alpha"]
            ax.plot(step, score, "o", color=line.get_color(), markerfacecolor=line.get_color() if filled else "white")
    ax.axhline(THRESHOLD, color="grey", lw=0.8, ls="--", label=f"check threshold {THRESHOLD}")
    ax.set(
        xlabel="training step",
        ylabel="TCAV score (class 0)",
        ylim=(-0.02, 1.05),
        title="Concept 'white mark top left' in features.4; filled: p < 0.05",
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(root: Path, only: str | None = None, epochs: int = 4, quick: bool = False) -> dict[str, dict]:
    runs = {
        name: run(root, name == "spurious", epochs, quick) for name in ("clean", "spurious") if only in (None, name)
    }
    if len(runs) == 2:
        print(f"TCAV curves: {curve_figure(runs, root / 'clever_hans_concepts.png')}")
    print(f"TensorBoard: .venv/bin/tensorboard --logdir {root}")
    return runs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/clever_hans_concepts"))
    parser.add_argument("--only", choices=("clean", "spurious"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="small data set (smoke test)")
    args = parser.parse_args()
    main(args.root, args.only, args.epochs, args.quick)
