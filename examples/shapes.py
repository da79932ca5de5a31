"""Watch a CNN's explanations evolve while it learns to tell shapes apart.

A small CNN is trained on generated images of squares, circles and
triangles at random positions, on a noisy textured background
(``lightning_xai.demos.shapes``).  With a small learning rate it starts at
chance and needs about five epochs to reach high accuracy, so the
explanations have something to show: the monitor explains a fixed probe
before the first step (the untrained model) and at every epoch end.  The object masks are known, so besides the heat-map
overlays and filmstrips it logs which share of each method's positive
attribution falls on the object (``xai/<method>/mass_in_mask``), how far the
maps moved (``similarity_previous``) and how many predictions flipped: the
maps move from noise to the shape as the accuracy rises.  A ``RobustnessMonitor``
logs, beside the accuracy, how easily the probe's predictions are flipped:
the success rate of FGSM and PGD at a fixed budget and the median smallest
FGSM epsilon that flips a prediction (``robustness/*``).

    python examples/shapes.py                 # logs to runs/shapes
    tensorboard --logdir runs/shapes --samples_per_plugin images=100

At the end a summary figure (first and last point per method, and the
mass-in-mask curves) is saved next to the logs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import matplotlib
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor, RobustnessMonitor
from lightning_xai.demos.shapes import (
    CLASSES,
    SHAPES_MEAN,
    SHAPES_STD,
    ShapesDataModule,
    ShapesNet,
    denormalize_images,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOISE = 0.1
"""Pixel noise of the demo's images: enough that the shapes take several epochs to learn."""
LEARNING_RATE = 1e-4
"""Adam's step size: small, so the model starts at chance and improves epoch by epoch."""


def build_monitor() -> AttributionMonitor:
    """The example's monitor: two input-space methods plus GradCAM on the last convolution, explained
    before the first step and at every epoch end."""
    return AttributionMonitor(
        methods=["integrated_gradients", "occlusion"],
        target="label",
        metrics=("infidelity",),
        display_mean=SHAPES_MEAN,
        display_std=SHAPES_STD,
        class_names=CLASSES,
    )


ROBUSTNESS_EPSILON = 0.05
"""The attacks' budget in normalised input units: about 1.5% of the pixel range (the data's std is ~0.3)."""


def build_robustness_monitor(data: ShapesDataModule) -> RobustnessMonitor:
    """Attacks on the first 16 validation images, before the first step and at every epoch end."""
    data.setup("fit")
    assert data.val_set is not None
    items = [data.val_set[i] for i in range(16)]
    probe = torch.stack([item["image"] for item in items]), torch.stack([item["label"] for item in items])
    return RobustnessMonitor(probe, epsilon=ROBUSTNESS_EPSILON)


def example_data(quick: bool = False) -> ShapesDataModule:
    """The example's data: 12000 training images of 32x32 (about three seconds an epoch on two CPU cores)."""
    return ShapesDataModule(n_train=400 if quick else 12000, n_val=100 if quick else 500, noise=NOISE)


def train(
    root: Path, epochs: int, data: ShapesDataModule, monitor: AttributionMonitor | None, *others: Callback
) -> L.Trainer:
    """Fit ShapesNet with the monitor and ``others`` (or without any, for timing comparisons)."""
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name="shapes"),
        callbacks=([] if monitor is None else [monitor]) + list(others),
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    trainer.fit(ShapesNet(lr=LEARNING_RATE), datamodule=data)
    return trainer


def summary_figure(log_dir: Path) -> Path:
    """First vs. last logged point per method, and the share of attribution on the object."""
    artifacts = log_dir / "xai"
    manifest = json.loads((artifacts / "manifest.json").read_text())
    probe = torch.load(artifacts / "probe.pt", weights_only=True)
    images = denormalize_images(probe["inputs"]).clamp(0, 1).permute(0, 2, 3, 1)
    methods = list(dict.fromkeys(r["method"] for r in manifest))
    steps = sorted({r["step"] for r in manifest})
    files = {r["step"]: r["maps"] for r in manifest}
    epoch_of = {r["step"]: r["epoch"] for r in manifest}
    shown = min(4, len(images))
    figure, axes = plt.subplots(len(methods), 2 * shown + 1, figsize=(2 * (2 * shown + 1), 2.1 * len(methods)))
    for row, method in enumerate(methods):
        for column, step in enumerate((steps[0], steps[-1])):
            maps = torch.load(artifacts / files[step], weights_only=True)[method].float()
            heat = maps.abs().sum(1)
            heat = torch.nn.functional.interpolate(heat[:, None], size=images.shape[1:3], mode="bilinear")[:, 0]
            for i in range(shown):
                ax = axes[row, column * shown + i]
                ax.imshow(images[i])
                ax.imshow(heat[i], cmap="inferno", alpha=0.6)
                ax.set_axis_off()
                ax.set_title(
                    f"{method}\nstep {step} (epoch {epoch_of[step]})" if i == 0 else "", fontsize=8, loc="left"
                )
        curve = [r["metrics"].get("mass_in_mask") for r in manifest if r["method"] == method]
        ax = axes[row, -1]
        ax.plot([r["step"] for r in manifest if r["method"] == method], curve, marker="o")
        ax.set_ylim(0, 1)
        ax.set_title("mass in mask", fontsize=8)
        ax.set_xlabel("step", fontsize=8)
    figure.tight_layout()
    path = log_dir / "summary.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def validation_accuracy(log_dir: Path) -> dict[int, float]:
    """``val_acc`` by global step, read back from the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars("val_acc")} if "val_acc" in events.Tags()["scalars"] else {}


def _number(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def main(root: Path, epochs: int = 10, quick: bool = False) -> Path:
    """Train with the monitor, print the per-epoch localisation, save the summary; return the log dir."""
    data = example_data(quick)
    monitor = build_monitor()
    robustness = build_robustness_monitor(data)
    trainer = train(root, epochs, data, monitor, robustness)
    log_dir = Path(trainer.log_dir)
    print("\nShare of positive attribution on the object (xai/<method>/mass_in_mask), how much integrated")
    print("gradients' maps moved (similarity_previous), probe predictions that flipped, validation accuracy:")
    methods = list(dict.fromkeys(r["method"] for r in monitor.history))
    accuracy = validation_accuracy(log_dir)
    print(" step  epoch  " + "  ".join(f"{m[:20]:>20}" for m in methods) + "  similarity  flips  val_acc")
    for point in monitor.points:
        masses = "  ".join(f"{monitor.value(m, 'mass_in_mask', point.step):20.3f}" for m in methods)
        similarity = monitor.value("integrated_gradients", "similarity_previous", point.step)
        flips = monitor.value(None, "prediction_flips", point.step)
        print(
            f"{point.step:5d}  {point.epoch:5d}  {masses}  {_number(similarity, 10, 3)}  {_number(flips, 5, 0)}"
            f"  {_number(accuracy.get(point.step - 1), 7, 3)}"  # Lightning logs it at the epoch's last batch
        )
    print(f"\nRobustness of 16 validation predictions at epsilon {ROBUSTNESS_EPSILON} (robustness/*):")
    print(" step  accuracy  FGSM success  PGD success  median smallest epsilon")
    for point in robustness.history:
        print(
            f"{point['step']:5d}  {point['probe_accuracy']:8.3f}  {_number(point.get('fgsm_success'), 12, 3)}"
            f"  {_number(point.get('pgd_success'), 11, 3)}  {_number(point.get('min_epsilon_median'), 23, 3)}"
        )
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
