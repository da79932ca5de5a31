"""Adding a method: XGrad-CAM (Fu et al., 2020) as a GradCAM variant, then watched by the monitor.

A CAM differs from GradCAM only in how it weighs the layer's channels, so the new class overrides
``channel_weights`` and nothing else (pytorch-grad-cam's ``get_cam_weights``, torch-cam's
``_get_weights``). ``register`` gives it a name and a record of traits read from the class: it inherits
``needs_layer``, ``needs_spatial_layer`` and ``takes_reshape_transform`` from LayerGradCam, so the
registry, the monitor and the docs' method table treat it as a CAM with no list to update.

    python examples/custom_cam.py --out /tmp/custom_cam    # checks the oracle, trains 2 epochs, logs the maps
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from attribution import LayerGradCam, registry
from attribution.registry import register


@register("layer_xgrad_cam")
class LayerXGradCam(LayerGradCam):
    """XGrad-CAM: each channel weighted by its gradient averaged with the activations as weights."""

    @staticmethod
    def channel_weights(activations: Tensor, gradients: Tensor) -> Tensor:
        spatial = tuple(range(2, activations.dim()))
        weighted = (gradients * activations).sum(spatial, keepdim=True)
        return weighted / (activations.sum(spatial, keepdim=True) + 1e-7)


def check_against_gradcam() -> float:
    """On a global-average-pool + linear head the gradient is constant over positions, so XGrad-CAM's
    weights are GradCAM's and the two maps agree. Returns the largest difference."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    model = torch.nn.Sequential(conv, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    images = torch.rand(4, 3, 16, 16)
    ours = LayerXGradCam(model, conv).attribute(images, target=1)
    gradcam = LayerGradCam(model, conv).attribute(images, target=1)
    return float((ours - gradcam).abs().max())


def train(out: Path) -> Path:
    """Two short epochs on the demo shapes with the new method beside GradCAM."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_xai import AttributionMonitor
    from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(methods=["layer_xgrad_cam", "layer_gradcam"], layer="features.10", gradcam=False)
    logger = TensorBoardLogger(out, name="custom_cam")
    trainer = L.Trainer(
        max_epochs=2, logger=logger, callbacks=[monitor], enable_checkpointing=False, enable_model_summary=False
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=128, n_val=16, batch_size=32))
    return Path(logger.log_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where the logs go (default: a new temp dir)")
    args = parser.parse_args()
    record = registry.record("layer_xgrad_cam")
    print(f"registered {record.name}: needs_spatial_layer={record.needs_spatial_layer}")
    print(f"largest difference to GradCAM on a pooled head: {check_against_gradcam():.2e}")
    out = args.out or Path(tempfile.mkdtemp(prefix="custom_cam_"))
    log_dir = train(out)
    print(f"logs in {log_dir}; view them with: tensorboard --logdir {out}")


if __name__ == "__main__":
    main()
