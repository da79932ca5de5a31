"""A segmentation model under the monitor, explained per class over the object's pixels.

A U-Net from segmentation_models_pytorch (a ResNet-18 encoder cut after its second stage, random
weights, nothing downloaded) learns to segment generated shapes: every pixel is background (class 0)
or the class of the shape it belongs to (1 square, 2 circle, 3 triangle).  The model returns an
``(N, 4, H, W)`` map; because the probe carries the object masks, the monitor explains each probe
image's shape class summed over the object's pixels (Captum's recipe for segmentation), with
``target="label"``.  It logs integrated gradients, GradCAM on the encoder's last stage and the share
of attribution on the object.

    pip install 'lightning-xai[zoo]'   # segmentation-models-pytorch
    python examples/segmentation.py
    tensorboard --logdir runs/segmentation --samples_per_plugin images=100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai import AttributionMonitor
from lightning_xai.demos.shapes import SHAPES_MEAN, SHAPES_STD, make_shapes, normalize_images

SIZE = 64
CLASS_WEIGHTS = torch.tensor([0.2, 1.0, 1.0, 1.0])


class SegmentedShapes(Dataset):
    """Items ``{"image", "label" (the shape's class, 1..3), "mask" (its pixels), "segmentation" (per pixel)}``."""

    def __init__(self, n: int, seed: int) -> None:
        images, labels, masks = make_shapes(n, SIZE, seed=seed)
        self.images, self.labels, self.masks = normalize_images(images), labels + 1, masks
        self.segmentation = torch.where(masks, self.labels[:, None, None], 0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "image": self.images[i],
            "label": self.labels[i],
            "mask": self.masks[i],
            "segmentation": self.segmentation[i],
        }


class ShapeSegmenter(L.LightningModule):
    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=4)
        self.lr = lr

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        # Objects cover a few percent of the pixels: weight them up so the net does not settle on background.
        loss = F.cross_entropy(self(batch["image"]), batch["segmentation"], weight=CLASS_WEIGHTS.to(self.device))
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        predicted = self(batch["image"]).argmax(1)
        on_object = batch["segmentation"] > 0
        accuracy = (predicted[on_object] == batch["segmentation"][on_object]).float().mean()
        self.log("val_object_pixel_acc", accuracy, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def build_monitor() -> AttributionMonitor:
    return AttributionMonitor(
        methods={"integrated_gradients": {"n_steps": 8}},
        layer="net.encoder.layer2",  # GradCAM on the encoder's deepest stage (8 x 8), not the 1x1 head
        target="label",
        metrics=(),
        num_probe_samples=6,
        display_mean=SHAPES_MEAN,
        display_std=SHAPES_STD,
    )


def main(root: Path, epochs: int = 3, quick: bool = False) -> dict:
    """Train with the monitor; returns the monitor, the log dir and the share of attribution on the object."""
    L.seed_everything(0, verbose=False)
    train, val = SegmentedShapes(32 if quick else 800, seed=0), SegmentedShapes(16 if quick else 100, seed=1)
    monitor = build_monitor()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name="segmentation"),
        callbacks=[monitor],
        enable_model_summary=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShapeSegmenter(), DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=32))
    shares = {
        method: [r["metrics"].get("mass_in_mask") for r in monitor.history if r["method"] == method]
        for method in monitor.method_names
    }
    print(f"\nval_object_pixel_acc {float(trainer.callback_metrics['val_object_pixel_acc']):.3f}")
    for method, values in shares.items():
        print(f"Share of {method} attribution on the object, per epoch:", " ".join(f"{v:.2f}" for v in values))
    print(f"TensorBoard: .venv/bin/tensorboard --logdir {root} --samples_per_plugin images=100")
    return {"monitor": monitor, "log_dir": Path(trainer.log_dir), "shares": shares}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/segmentation"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small data set (smoke test)")
    args = parser.parse_args()
    main(args.root, args.epochs, args.quick)
