"""The monitor on models other people wrote: torchvision, timm and Hugging Face, random weights, tiny sizes.

Each model trains for one step; the monitor must log integrated gradients, occlusion and GradCAM, and
GradCAM's map must be spatial (a grid over the image, not a vector drawn as a heat map).  Every map must
hold an explanation: finite, not all zero and not constant for each example, with nothing flagged by the
monitor's self-check (class-token transformers once gave GradCAM maps that were exactly zero).  timm and
transformers are optional test extras: their models are skipped when the library is absent.
"""

import importlib.util

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_xai import AttributionMonitor

pytestmark = pytest.mark.slow

tv = torchvision.models


def _timm(name, **kwargs):
    import timm

    return timm.create_model(name, pretrained=False, num_classes=3, **kwargs)


def _hf_vit():
    import transformers

    config = transformers.ViTConfig(
        image_size=64, patch_size=16, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
        intermediate_size=64, num_labels=3,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


def _needs(module):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {module} (test extra)")


MODELS = {
    "resnet18": lambda: tv.resnet18(num_classes=3),
    "mobilenet_v3_small": lambda: tv.mobilenet_v3_small(num_classes=3),
    "efficientnet_b0": lambda: tv.efficientnet_b0(num_classes=3),
    "convnext_tiny": lambda: tv.convnext_tiny(num_classes=3),
    "vit": lambda: tv.VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3
    ),
    "swin_t": lambda: tv.swin_t(num_classes=3),
    "fcn_resnet50": lambda: tv.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3),
    "timm_vit_tiny": lambda: _timm("vit_tiny_patch16_224", img_size=64),
    "timm_deit_tiny_distilled": lambda: _timm("deit_tiny_distilled_patch16_224", img_size=64),
    "timm_convnext_atto": lambda: _timm("convnext_atto"),
    "timm_resnet18_32px": lambda: _timm("resnet18"),
    "hf_vit": _hf_vit,
}
IMAGE_SIZE = {"timm_resnet18_32px": 32}  # the others: 64
NEEDS = {"timm_": "timm", "hf_": "transformers"}
EXPECTED_LAYER = {  # GradCAM's default layer: the last convolution with 2x2 positions or more, or a transformer's
    # last block; the first normalisation of that block when the classifier reads only a class token after it
    "resnet18": "net.layer4.1.conv2",
    "vit": "net.encoder.layers.encoder_layer_1.ln_1",
    "swin_t": "net.features.7.1",
    "timm_vit_tiny": "net.blocks.11.norm1",
    "timm_deit_tiny_distilled": "net.blocks.11.norm1",
    "timm_resnet18_32px": "net.layer3.1",  # layer4 maps are 1x1 on 32x32 inputs: the last block with 2x2
    "hf_vit": "net.vit.layers.1.layernorm_before",
}


class _Images(Dataset):
    def __init__(self, n=4, size=64):
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 3, size, size, generator=generator), torch.arange(n) % 3

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


class _Wrapped(L.LightningModule):
    """The user's model in a LightningModule; its loss reads whatever the model returns."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, pixel_values):
        return self.net(pixel_values)

    def training_step(self, batch, batch_idx):
        out = self(batch["pixel_values"])
        if hasattr(out, "logits"):  # a Hugging Face ModelOutput (itself a dict)
            out = out.logits
        logits = out["out"].mean((2, 3)) if isinstance(out, dict) else out
        return F.cross_entropy(logits, batch["labels"])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-4)


def _params():
    for name, build in MODELS.items():
        marks = [_needs(module) for prefix, module in NEEDS.items() if name.startswith(prefix)]
        yield pytest.param(name, build, marks=marks, id=name)


@pytest.mark.parametrize("name, build", _params())
def test_the_monitor_logs_ig_occlusion_and_spatial_gradcam(tmp_path, name, build):
    torch.manual_seed(0)
    net: nn.Module = build()
    size = IMAGE_SIZE.get(name, 64)
    half = size // 2
    window = {"sliding_window_shapes": (3, half, half), "strides": (3, half, half)}  # four windows: enough here
    monitor = AttributionMonitor(
        {"integrated_gradients": {"n_steps": 2}, "occlusion": window, "lrp": {"composite": "epsilon_plus_flat"}},
        num_probe_samples=2,
        metrics=(),
        on_error="raise",
    )
    data = DataLoader(_Images(size=size), batch_size=2)
    trainer = L.Trainer(
        callbacks=[monitor],
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_Wrapped(net), data, data)
    maps = torch.load(tmp_path / "xai" / "maps_step_0000001.pt", weights_only=True)  # after the training step
    assert set(maps) == {"integrated_gradients", "occlusion", "lrp", "layer_gradcam"}
    assert (
        maps["integrated_gradients"].shape == maps["occlusion"].shape == maps["lrp"].shape == (2, 1, size, size)
    )  # channels summed
    cam = maps["layer_gradcam"]
    assert cam.dim() == 4 and cam.shape[:2] == (2, 1) and min(cam.shape[2:]) >= 2  # a grid over the image
    assert cam.shape[2] == cam.shape[3]  # square inputs give square grids: no channel axis read as space
    assert set(monitor._history.thumbnails) == set(maps)  # all drawn as heat maps
    for method, attributions in maps.items():  # content, not only shapes: every example's map explains something
        flat = attributions.float().flatten(1)
        assert torch.isfinite(flat).all(), method
        assert (flat != 0).any(dim=1).all(), f"{method}: an all-zero map"
        assert (flat.amax(dim=1) > flat.amin(dim=1)).all(), f"{method}: a constant map"
    after_step = [r for r in monitor.history if r["step"] == 1]
    assert [r["flags"] for r in after_step] == [[]] * len(maps)  # the self-check found nothing wrong
    if name in EXPECTED_LAYER:
        assert monitor._layer_choice.name == EXPECTED_LAYER[name]
