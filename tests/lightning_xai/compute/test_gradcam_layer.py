"""GradCAM's layer: the default is one whose positions receive gradient on the probe, with the right reason
when there is none; a user's layer that gradient does not reach is warned about, with a layer that works.

Models are other people's (torchvision, timm, Hugging Face) built from configs with random weights, plus
small ones that checkpoint a block or shrink the map below 2x2."""

import importlib.util

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, TensorDataset

from attribution import LayerGradCam
from attribution.outputs import ModelScores
from attribution.utils import resolve_layer
from lightning_xai import AttributionMonitor
from lightning_xai._compute.gradcam_layer import choose_layer, gradient_reach
from lightning_xai._compute.model import inspect_model
from lightning_xai._config.probe import Probe


def _choose(model, x, layer=None, gradcam_named=False):
    model.eval()
    view = inspect_model(model, Probe(x), x, None)
    return choose_layer(view, x, layer, gradcam=True, needs_layer=False, gradcam_named=gradcam_named)


def _needs(module):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {module} (test extra)")


def _gradcam_map(model, x, choice):
    explainer = LayerGradCam(model, resolve_layer(model, choice.name), reshape_transform=choice.reshape_transform)
    return explainer.attribute(x, target=model(x).argmax(1))


@_needs("timm")
def test_a_class_token_vit_gets_its_last_blocks_first_norm_and_a_non_zero_map():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=64)
    x = torch.rand(2, 3, 64, 64)
    choice = _choose(model, x)
    assert choice.name == "blocks.11.norm1" and choice.gradcam
    assert "reads only the class token" in choice.remark
    cam = _gradcam_map(model, x, choice)
    assert cam.shape == (2, 1, 4, 4) and (cam.flatten(1) != 0).any(1).all()
    old_default = _gradcam_map(model, x, _choose(model, x, layer="blocks.11"))
    assert not old_default.any()  # the last block itself: exactly zero, which is why it is not the default


@_needs("timm")
def test_a_users_layer_that_gradient_does_not_reach_is_kept_with_a_warning_naming_one_that_works(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=64)
    choice = _choose(model, torch.rand(2, 3, 64, 64), layer="blocks.11")
    assert choice.name == "blocks.11" and not choice.gradcam
    assert "no gradient reaches the patch tokens of 'blocks.11'" in choice.note
    assert "use layer='blocks.11.norm1'" in choice.note


@_needs("transformers")
def test_hugging_face_vit_gets_the_layernorm_before_its_last_layers_attention():
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
        intermediate_size=32, num_labels=3,
    )  # fmt: skip
    model = transformers.ViTForImageClassification(config).eval()
    x = torch.rand(2, 3, 32, 32)
    choice = _choose(model, x)
    assert choice.name.endswith("layers.1.layernorm_before") and choice.gradcam
    scores = ModelScores(model)
    cam = LayerGradCam(scores, resolve_layer(model, choice.name), reshape_transform=choice.reshape_transform)
    maps = cam.attribute(x, target=scores(x).argmax(1))
    assert maps.shape == (2, 1, 4, 4) and (maps.flatten(1) != 0).any(1).all()


def test_torchvision_vit_is_judged_once_its_head_is_not_zero():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
    )
    x = torch.rand(2, 3, 32, 32)
    untrained = _choose(model, x)  # the head is zero: nothing depends on the input yet, the structure decides
    assert untrained.name == "encoder.layers.encoder_layer_1.ln_1"
    view = inspect_model(model.eval(), Probe(x), x, None)
    assert gradient_reach(view.forward, (), x, untrained.candidate).verdict == "flat"
    torch.nn.init.normal_(model.heads.head.weight)
    view = inspect_model(model.eval(), Probe(x), x, None)
    assert gradient_reach(view.forward, (), x, untrained.candidate).verdict == "reaches"
    last_block = _choose(model, x, layer="encoder.layers.encoder_layer_1")
    assert "no gradient reaches the patch tokens" in last_block.note and not last_block.gradcam


def test_maps_smaller_than_2x2_fall_back_to_the_last_block_with_2x2_and_say_which():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    choice = _choose(model, torch.rand(2, 3, 32, 32))  # layer4 is 1x1 at 32x32
    assert choice.name == "layer3.1" and choice.gradcam
    assert "'layer4.1.conv2', outputs shape (2, 512, 1, 1): fewer than 2x2 positions" in choice.remark
    assert choice.remark.startswith("GradCAM uses 'layer3.1' (2x2 positions)")
    assert _choose(model, torch.rand(2, 3, 64, 64)).name == "layer4.1.conv2"  # 2x2: the usual default


def test_the_reason_for_no_gradcam_is_the_true_one():
    tiny = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 2), nn.Flatten(), nn.Linear(4, 2))
    choice = _choose(tiny, torch.rand(2, 1, 5, 5))  # 2x2 after the first convolution, 1x1 after the second
    assert choice.name == "0" and choice.gradcam  # the first convolution still has 2x2
    flat = nn.Sequential(nn.Conv2d(1, 4, 5), nn.Flatten(), nn.Linear(4, 2))
    choice = _choose(flat, torch.rand(2, 1, 5, 5))
    assert choice.name is None and "every convolution's output has fewer than 2x2 positions" in choice.note
    assert "the last, '0', outputs shape (2, 4, 1, 1)" in choice.note
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(25, 2))
    assert _choose(mlp, torch.rand(2, 1, 5, 5)).note == "the model has no convolution or transformer block"


class _Checkpointed(L.LightningModule):
    """A CNN whose second convolution and the pooling after it run inside gradient checkpointing."""

    def __init__(self, use_reentrant):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 3)
        self.use_reentrant = use_reentrant

    def forward(self, x):
        pooled = checkpoint(self._pooled_block, self.stem(x), use_reentrant=self.use_reentrant)
        return self.head(pooled)

    def _pooled_block(self, x):
        return self.block(x).mean((2, 3))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("use_reentrant", [True, False])
def test_reentrant_checkpointing_leaves_gradcam_out_with_the_fix_instead_of_zero_maps(tmp_path, use_reentrant):
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(4, 3, 8, 8), torch.arange(4) % 3)
    monitor = AttributionMonitor(["saliency"], num_probe_samples=2, metrics=())
    trainer = L.Trainer(
        callbacks=[monitor], default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    loader = DataLoader(data, batch_size=2)
    if use_reentrant:
        with pytest.warns(UserWarning, match=r"GradCAM is left out: .*use_reentrant=True.*use_reentrant=False"):
            trainer.fit(_Checkpointed(use_reentrant), loader, loader)
        assert {r["method"] for r in monitor.history} <= {"saliency"}  # no GradCAM maps that are silently zero
    else:
        trainer.fit(_Checkpointed(use_reentrant), loader, loader)
        gradcam = [r for r in monitor.history if r["method"] == "layer_gradcam"]
        assert gradcam and all(r["flags"] == [] for r in gradcam)
        assert monitor._layer_choice.name == "block.0"
