"""The monitor on models shaped like users' models: other outputs, several input tensors, token-shaped
layers, and the mistakes that must fail early or warn once instead of failing every epoch."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import torchvision
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from attribution import IntegratedGradients, LayerIntegratedGradients
from attribution.outputs import ModelScores
from lightning_xai import AttributionMonitor, AttributionRegressionCheck
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow


class Classifier(L.LightningModule):
    """Any network with a classification or segmentation loss; ``read`` finds the scores in its output."""

    def __init__(self, net: nn.Module, read=lambda out: out):
        super().__init__()
        self.net, self.read = net, read

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        out = self.read(self(x))
        if out.dim() == 4:  # segmentation: the image label is every pixel's label
            return F.cross_entropy(out, y[:, None, None].expand(-1, *out.shape[2:]))
        if out.dim() == 1 or out.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(out.reshape(-1), y.float())
        return F.cross_entropy(out, y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _images(n=8, size=16, classes=3, masks=False):
    torch.manual_seed(0)
    x, y = torch.rand(n, 3, size, size), torch.arange(n) % classes
    tensors = (x, y, torch.rand(n, size, size) > 0.5) if masks else (x, y)
    return DataLoader(TensorDataset(*tensors), batch_size=4)


def _fit(module, monitor, data, tmp_path, callbacks=(), **kwargs):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        callbacks=[monitor, *callbacks],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **{"max_epochs": 1, "limit_train_batches": 1, **kwargs},
    )
    trainer.fit(module, data, data)
    return trainer


def _shapes(n=8, seed=0):
    """Shapes with masks as one small dataloader, for training and validation alike."""
    data = ShapesDataModule(n_train=n, n_val=n, size=16, batch_size=16, seed=seed)
    data.setup("fit")
    return data.val_dataloader()


def _maps(tmp_path, step=1):
    """The maps of the point at ``step`` (default: after the one training step of these fits)."""
    return torch.load(tmp_path / "xai" / f"maps_step_{step:07d}.pt", weights_only=True)


# --------------------------------------------------------------------------- outputs


class _OneLogit(nn.Module):
    def __init__(self, flat):
        super().__init__()
        self.conv, self.head, self.flat = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 1), flat

    def forward(self, x):
        logit = self.head(F.relu(self.conv(x)).mean((2, 3)))
        return logit[:, 0] if self.flat else logit


@pytest.mark.parametrize("flat", [True, False], ids=["(N,)", "(N, 1)"])
def test_a_binary_head_predicts_logit_above_zero_and_explains_it(tmp_path, flat):
    net = _OneLogit(flat)
    monitor = AttributionMonitor(["integrated_gradients"], num_probe_samples=4, on_error="raise")
    _fit(Classifier(net), monitor, _images(classes=2), tmp_path)
    inputs = monitor.probe.inputs
    with torch.no_grad():
        logit = net(inputs).reshape(-1)
    (record, *_) = monitor.history
    assert record["target"] == (logit > 0).long().tolist()  # target="pred"
    sign = torch.where(logit > 0, 1.0, -1.0).view(-1, 1, 1, 1)  # class 0 explains the negated logit
    expected = IntegratedGradients(lambda x: net(x).reshape(-1, 1)).attribute(inputs, target=0, n_steps=16) * sign
    expected = expected.sum(1, keepdim=True)  # the maps files keep the channels' sum
    torch.testing.assert_close(_maps(tmp_path)["integrated_gradients"].float(), expected, rtol=2e-2, atol=1e-4)


def test_a_model_that_returns_class_scores_is_explained_as_it_is(tmp_path):
    """Class scores (N, C) as the output: the engine gets the module itself (so occlusion's local
    re-evaluation can trace it, as for a Captum user); any other output goes through ModelScores."""
    scores = Classifier(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    )
    monitor = AttributionMonitor(["occlusion"], num_probe_samples=4, on_error="raise")
    _fit(scores, monitor, _images(), tmp_path)
    assert monitor._subject.forward is scores
    binary = Classifier(_OneLogit(flat=False))
    monitor = AttributionMonitor(["occlusion"], num_probe_samples=4, on_error="raise")
    _fit(binary, monitor, _images(classes=2), tmp_path / "binary")
    assert isinstance(monitor._subject.forward, ModelScores) and monitor._subject.forward.model is binary


class _Segmenter(nn.Module):
    """A small fully convolutional net returning torchvision's ``{"out": (N, C, H, W)}``."""

    def __init__(self, classes=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        return {"out": self.features(x)}


@pytest.mark.parametrize("chunk", [None, 3])  # 3: each chunk's class scores over its own rows of the masks
def test_segmentation_outputs_explain_a_class_score_over_the_probe_masks(tmp_path, chunk):
    net = _Segmenter()
    monitor = AttributionMonitor(
        {"integrated_gradients": {"n_steps": 8}}, target=2, num_probe_samples=4, probe_chunk_size=chunk
    )
    _fit(Classifier(net, read=lambda out: out["out"]), monitor, _images(masks=True), tmp_path)
    probe = monitor.probe
    assert probe.masks is not None and monitor.history[0]["target"] == [2, 2, 2, 2]
    scores = ModelScores(net, with_region=True)
    expected = IntegratedGradients(scores).attribute(
        probe.inputs, target=2, additional_forward_args=(probe.masks,), n_steps=8
    )
    logged = _maps(tmp_path)
    expected = expected.sum(1, keepdim=True)  # the maps files keep the channels' sum
    torch.testing.assert_close(logged["integrated_gradients"].float(), expected, rtol=2e-2, atol=1e-4)
    assert logged["layer_gradcam"].shape == (4, 1, 16, 16)  # GradCAM on the last convolution


# --------------------------------------------------------------------------- several input tensors


class _Sentences(Dataset):
    """Dict items like a Hugging Face tokenizer's: padded input_ids, attention_mask, labels."""

    def __init__(self, n=8, length=6):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 12, (n, length), generator=generator)
        self.mask = torch.ones(n, length, dtype=torch.long)
        self.mask[::2, 4:] = 0  # every other sentence is padded
        self.ids[self.mask == 0] = 0
        self.labels = torch.arange(n) % 2

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


class _Encoder(nn.Module):
    """Keyword inputs and a ``ModelOutput``-like result, as Hugging Face sequence classifiers have."""

    def __init__(self):
        super().__init__()
        self.embeddings = nn.Embedding(12, 8)
        self.attention = nn.Linear(8, 1)
        self.classifier = nn.Linear(8, 2)

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        hidden = self.embeddings(input_ids)
        weights = self.attention(hidden)[..., 0].masked_fill(attention_mask == 0, -1e9).softmax(1)
        logits = self.classifier((weights[..., None] * hidden).sum(1))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return SimpleNamespace(logits=logits, loss=loss)


class _HFStyle(L.LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch, batch_idx):
        return self(**batch).loss

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


@pytest.mark.parametrize("chunk", [None, 3])  # 3: chunks of 3 and 1, each with its rows of the attention mask
def test_dict_batches_feed_every_tensor_the_forward_takes(tmp_path, chunk):
    model = _Encoder()
    monitor = AttributionMonitor(
        {"layer_integrated_gradients": {"n_steps": 8}},
        layer="model.embeddings",
        num_probe_samples=4,
        probe_chunk_size=chunk,
    )
    _fit(_HFStyle(model), monitor, DataLoader(_Sentences(), batch_size=4), tmp_path)
    probe = monitor.probe
    assert probe.input_key == "input_ids" and set(probe.forward_tensors) == {"attention_mask"}
    mask = probe.forward_tensors["attention_mask"]
    logged = _maps(tmp_path)["layer_integrated_gradients"].float()
    forward = ModelScores(model, input_key="input_ids", forward_keys=("attention_mask",))
    expected = LayerIntegratedGradients(forward, model.embeddings).attribute(
        probe.inputs, target=torch.tensor(monitor.history[0]["target"]), additional_forward_args=(mask,), n_steps=8
    )
    torch.testing.assert_close(logged, expected, rtol=2e-2, atol=1e-5)
    assert logged[mask == 0].abs().max() < 1e-6  # padded tokens are not attended to, so they get nothing
    assert {r["method"] for r in monitor.history} == {"layer_integrated_gradients"}  # no GradCAM on tokens


def test_token_probes_refuse_input_gradients_and_skip_input_metrics(tmp_path):
    data = DataLoader(_Sentences(), batch_size=4)
    with pytest.raises(MisconfigurationException, match=r"\['integrated_gradients'\] differentiate .*torch.int64"):
        _fit(_HFStyle(_Encoder()), AttributionMonitor(["integrated_gradients"]), data, tmp_path)
    monitor = AttributionMonitor(["occlusion"], metrics=("infidelity", "sensitivity"), on_error="raise")
    _fit(_HFStyle(_Encoder()), monitor, data, tmp_path)  # infidelity would need inputs.std() of token ids
    assert "infidelity" not in monitor.history[0]["metrics"]
    assert _maps(tmp_path)["occlusion"].is_floating_point()


# --------------------------------------------------------------------------- layers


def _vit():
    return torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
    )


def test_vision_transformers_get_gradcam_on_the_last_blocks_first_norm_laid_out_on_the_patch_grid(tmp_path):
    monitor = AttributionMonitor({"integrated_gradients": {"n_steps": 4}}, num_probe_samples=4, on_error="raise")
    _fit(Classifier(_vit()), monitor, _images(), tmp_path)
    # the last block's first norm: after the block itself only the class token gets gradient (the final LayerNorm
    # is no candidate either)
    assert monitor._layer_choice.name == "net.encoder.layers.encoder_layer_1.ln_1"
    cam = _maps(tmp_path)["layer_gradcam"]
    assert cam.shape == (4, 1, 4, 4)  # 1 class token + 4 x 4 patches
    assert set(monitor._history.thumbnails) == {"integrated_gradients", "layer_gradcam"}


def test_a_layer_without_a_spatial_map_is_refused_for_gradcam_and_never_drawn(tmp_path):
    with pytest.raises(MisconfigurationException, match="GradCAM needs a spatial map, but 'net.heads.head'"):
        _fit(Classifier(_vit()), AttributionMonitor(["layer_gradcam"], layer="net.heads.head"), _images(), tmp_path)
    monitor = AttributionMonitor(["layer_activation"], layer="net.heads.head", num_probe_samples=4)
    with pytest.warns(UserWarning, match="GradCAM is left out: the output of 'net.heads.head' has shape"):
        _fit(Classifier(_vit()), monitor, _images(), tmp_path)
    assert _maps(tmp_path)["layer_activation"].shape == (4, 3)  # saved, but no heat map of it
    assert "layer_activation" not in monitor._history.thumbnails


# --------------------------------------------------------------------------- mistakes found early


def test_a_probe_that_does_not_fit_the_model_fails_before_training(tmp_path):
    module = ShapesNet()
    before = [p.detach().clone() for p in module.parameters()]
    monitor = AttributionMonitor(probe=torch.zeros(4, 1, 16, 16))  # one channel for a 3-channel model
    with pytest.raises(MisconfigurationException, match=r"probe: the model fails on the probe \(inputs of shape"):
        _fit(module, monitor, _shapes(), tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))  # no step was taken


def test_a_check_on_a_metric_that_is_never_logged_warns_once(tmp_path):
    monitor = AttributionMonitor(["integrated_gradients"], gradcam=False, metrics=(), probe=torch.rand(4, 3, 16, 16))
    checks = [
        AttributionRegressionCheck("integrated_gradients/mass_in_mask", 0.5),
        AttributionRegressionCheck("integrated_gradients/sensitivity", 0.5, direction="below"),
    ]
    with pytest.warns(UserWarning) as caught:
        _fit(ShapesNet(), monitor, _shapes(), tmp_path, callbacks=checks, max_epochs=2)
    messages = [str(w.message) for w in caught if "AttributionRegressionCheck" in str(w.message)]
    assert len(messages) == 2  # once per check, not once per epoch
    assert "mass_in_mask has no value at step 1 (epoch 0): the probe has no ground-truth masks" in messages[0]
    assert "sensitivity has no value at step 1 (epoch 0): it was not requested (metrics=[])" in messages[1]


def test_a_reused_monitor_starts_a_fresh_history_and_a_small_dataset_warns(tmp_path):
    monitor = AttributionMonitor(["saliency"], gradcam=False, num_probe_samples=4)
    _fit(ShapesNet(), monitor, _shapes(), tmp_path / "a")
    first_probe = monitor.probe.inputs.clone()
    small = _shapes(n=3, seed=1)
    with pytest.warns(UserWarning, match="num_probe_samples=4, but the validation data holds only 3 examples"):
        _fit(ShapesNet(), monitor, small, tmp_path / "b", max_epochs=2)
    assert [(r["step"], r["epoch"]) for r in monitor.history] == [(0, 0), (1, 0), (2, 1)]
    assert len(monitor.probe) == 3 and not torch.equal(monitor.probe.inputs[:3], first_probe[:3])
    assert (tmp_path / "b" / "xai" / "maps_step_0000002.pt").exists()


class _Diverges(ShapesNet):
    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if not self.training else out


def test_non_finite_outputs_warn_once_and_log_no_maps(tmp_path):
    monitor = AttributionMonitor(["saliency"], gradcam=False, num_probe_samples=4)
    with pytest.warns(UserWarning, match="outputs on the probe are not finite") as caught:
        _fit(_Diverges(), monitor, _shapes(), tmp_path, max_epochs=2)
    assert sum("not finite" in str(w.message) for w in caught) == 1
    assert monitor.history == []


class _Tiny(ShapesNet):
    def forward(self, x):
        return super().forward(x) * 1e-9  # attributions far below float16's smallest number


def test_tiny_attributions_survive_in_the_saved_maps(tmp_path):
    monitor = AttributionMonitor(["saliency"], gradcam=False, num_probe_samples=4)
    _fit(_Tiny(), monitor, _shapes(), tmp_path)
    saved = _maps(tmp_path)["saliency"]
    assert saved.abs().max() < 1e-7 and (saved != 0).float().mean() > 0.9
