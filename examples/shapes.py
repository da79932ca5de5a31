"""Watch a CNN's explanations evolve while it learns to tell shapes apart.

A small CNN is trained on generated images of squares, circles and
triangles at random positions (``lightning_xai.demos.shapes``).  The object masks are
known, so besides the heat-map overlays and filmstrips the monitor logs which
share of each method's positive attribution falls on the object
(``xai/<method>/mass_in_mask``): it rises as the model learns to look at the
shape.

    python examples/shapes.py                 # logs to runs/shapes
    tensorboard --logdir runs/shapes --samples_per_plugin images=100

At the end a summary figure (first and last epoch per method, and the
mass-in-mask curves) is saved next to the logs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import matplotlib
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.demos.shapes import SHAPES_MEAN, SHAPES_STD, ShapesDataModule, ShapesNet, denormalize_images

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def build_monitor() -> AttributionMonitor:
    """The example's monitor: two input-space methods plus GradCAM on the last convolution."""
    return AttributionMonitor(
        methods=["integrated_gradients", "occlusion"],
        layer="features.8",
        target="label",
        metrics=("infidelity",),
        display_mean=SHAPES_MEAN,
        display_std=SHAPES_STD,
    )


def example_data(quick: bool = False) -> ShapesDataModule:
    """The example's data: 12000 training images of 32x32 (about three seconds an epoch on two CPU cores)."""
    return ShapesDataModule(n_train=400 if quick else 12000, n_val=100 if quick else 500)


def train(root: Path, epochs: int, data: ShapesDataModule, monitor: AttributionMonitor | None) -> L.Trainer:
    """Fit ShapesNet with the monitor (or without it, for timing comparisons)."""
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name="shapes"),
        callbacks=[] if monitor is None else [monitor],
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    trainer.fit(ShapesNet(), datamodule=data)
    return trainer


def summary_figure(log_dir: Path) -> Path:
    """First vs. last logged epoch per method, and the share of attribution on the object."""
    artifacts = log_dir / "xai"
    manifest = json.loads((artifacts / "manifest.json").read_text())
    probe = torch.load(artifacts / "probe.pt", weights_only=True)
    images = denormalize_images(probe["inputs"]).clamp(0, 1).permute(0, 2, 3, 1)
    methods = list(dict.fromkeys(r["method"] for r in manifest))
    epochs = sorted({r["epoch"] for r in manifest})
    shown = min(4, len(images))
    figure, axes = plt.subplots(len(methods), 2 * shown + 1, figsize=(2 * (2 * shown + 1), 2.1 * len(methods)))
    for row, method in enumerate(methods):
        for column, epoch in enumerate((epochs[0], epochs[-1])):
            maps = torch.load(artifacts / f"maps_epoch_{epoch:03d}.pt", weights_only=True)[method].float()
            heat = maps.abs().sum(1)
            heat = torch.nn.functional.interpolate(heat[:, None], size=images.shape[1:3], mode="bilinear")[:, 0]
            for i in range(shown):
                ax = axes[row, column * shown + i]
                ax.imshow(images[i])
                ax.imshow(heat[i], cmap="inferno", alpha=0.6)
                ax.set_axis_off()
                ax.set_title(f"{method}\nepoch {epoch}" if i == 0 else "", fontsize=8, loc="left")
        curve = [r["metrics"].get("mass_in_mask") for r in manifest if r["method"] == method]
        ax = axes[row, -1]
        ax.plot(epochs, curve, marker="o")
        ax.set_ylim(0, 1)
        ax.set_title("mass in mask", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
    figure.tight_layout()
    path = log_dir / "summary.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def main(root: Path, epochs: int = 10, quick: bool = False) -> Path:
    """Train with the monitor, print the per-epoch localisation, save the summary; return the log dir."""
    data = example_data(quick)
    monitor = build_monitor()
    trainer = train(root, epochs, data, monitor)
    log_dir = Path(trainer.log_dir)
    print("\nShare of positive attribution on the object (xai/<method>/mass_in_mask):")
    methods = list(dict.fromkeys(r["method"] for r in monitor.history))
    print("epoch  " + "  ".join(f"{m:>22}" for m in methods))
    for epoch in sorted({r["epoch"] for r in monitor.history}):
        values = {r["method"]: r["metrics"]["mass_in_mask"] for r in monitor.history if r["epoch"] == epoch}
        print(f"{epoch:5d}  " + "  ".join(f"{values[m]:22.3f}" for m in methods))
    print(f"\nSummary figure: {summary_figure(log_dir)}")
    print(f"Maps and manifest: {log_dir / 'xai'}")
    print("Open the logs in TensorBoard (images tab: overlays and filmstrips; custom scalars tab: curves):")
    print(f"  .venv/bin/tensorboard --logdir {root} --samples_per_plugin images=100")
    return log_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/shapes"), help="TensorBoard log root")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="small data set (smoke test)")
    args = parser.parse_args()
    main(args.root, args.epochs, args.quick)
