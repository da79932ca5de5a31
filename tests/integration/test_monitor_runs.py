"""The monitor across the ways people run fits: resumed into a new logger version, twice without a logger,
``fast_dev_run``, a ``torch.compile``-d model, and a progress bar whose output goes to a log file."""

import glob
import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor
from lightning_xai._compute import progress as _progress
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow


def _data():
    return ShapesDataModule(n_train=64, n_val=32, size=16, batch_size=32)


def _trainer(root, callbacks, logger=False, **kwargs):
    return L.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        logger=logger,
        callbacks=callbacks,
        enable_model_summary=False,
        **{"max_epochs": 1, "enable_checkpointing": False, "enable_progress_bar": False, **kwargs},
    )


def _tags(directory):
    (path,) = glob.glob(str(directory / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"images": 0})
    events.Reload()
    return events.Tags()["images"]


def test_a_run_resumed_into_a_new_logger_version_has_a_manifest_that_resolves_from_its_own_directory(tmp_path):
    first = AttributionMonitor(["saliency"], num_probe_samples=2, metrics=())
    logger = TensorBoardLogger(tmp_path, name="logs", version=0)
    saving = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    L.seed_everything(0, verbose=False)
    _trainer(tmp_path, [first, saving], logger, max_epochs=2, enable_checkpointing=True).fit(
        ShapesNet(), datamodule=_data()
    )
    resumed = AttributionMonitor(["saliency"], num_probe_samples=2, metrics=())
    logger = TensorBoardLogger(tmp_path, name="logs", version=1)
    trainer = _trainer(tmp_path, [resumed], logger, max_epochs=3)
    trainer.fit(ShapesNet(), datamodule=_data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    new = tmp_path / "logs" / "version_1"
    manifest = json.loads((new / "xai" / "manifest.json").read_text())
    assert sorted({r["step"] for r in manifest}) == [0, 2, 4, 6]  # the first fit's points, then the resumed one
    for record in manifest:
        maps = torch.load(new / "xai" / record["maps"], weights_only=True)  # every file is beside the manifest
        assert set(maps) == {"saliency", "layer_gradcam"}
    assert (new / "xai" / "probe.pt").is_file()
    assert "xai_per_step/probe" in _tags(new)  # the new version shows the probe too
    old = json.loads((tmp_path / "logs" / "version_0" / "xai" / "manifest.json").read_text())
    assert [r["step"] for r in old] == [0, 0, 2, 2, 4, 4]  # the first version is left as it was


def test_a_second_fit_without_a_logger_does_not_overwrite_the_first(tmp_path, caplog):
    for seed in (0, 1):
        L.seed_everything(seed, verbose=False)
        monitor = AttributionMonitor(["saliency", "input_x_gradient"], num_probe_samples=2)  # 4 units of work
        with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
            _trainer(tmp_path, [monitor]).fit(ShapesNet(), datamodule=_data())
    first = json.loads((tmp_path / "xai" / "manifest.json").read_text())
    second = json.loads((tmp_path / "xai_1" / "manifest.json").read_text())
    assert first[0]["target"] != second[0]["target"] or first[0]["metrics"] != second[0]["metrics"]
    assert f"{tmp_path / 'xai'} holds an earlier fit's maps; this fit writes to {tmp_path / 'xai_1'}" in caplog.text


def test_fast_dev_run_says_that_the_probe_is_not_explained(tmp_path, caplog):
    monitor = AttributionMonitor(["saliency"], num_probe_samples=2)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        _trainer(tmp_path, [monitor], fast_dev_run=True).fit(ShapesNet(), datamodule=_data())
    assert "the probe is not explained in this fit: fast_dev_run" in caplog.text
    assert monitor.history == [] and not (tmp_path / "xai").exists()


class _Compiled(L.LightningModule):
    def __init__(self):
        super().__init__()
        net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
        )
        self.net = torch.compile(net, backend="eager")  # dynamo's guards and recompiles, without code generation

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _compiled_frames(tmp_path, callbacks):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))), batch_size=8)
    _trainer(tmp_path, callbacks, max_epochs=2).fit(_Compiled(), data, data)
    return dict(counters["frames"]), dict(counters["recompiles"])


def test_a_compiled_model_is_not_recompiled_because_of_the_monitor(tmp_path):
    monitor = AttributionMonitor(
        ["integrated_gradients", "occlusion"], metrics=("infidelity", "sensitivity"), num_probe_samples=5
    )  # explains 5 examples at a time, in both grad modes: each would be a new graph for dynamo
    plain = _compiled_frames(tmp_path / "plain", [])
    watched = _compiled_frames(tmp_path / "watched", [monitor])
    assert len(monitor.history) == 3 * 3  # three points, three methods (GradCAM included): it did explain
    assert watched == plain


def test_no_progress_bar_goes_to_output_that_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_progress, "SHOW_AFTER", 0.0)  # every explanation would show its bar

    def fit():
        monitor = AttributionMonitor(["saliency", "input_x_gradient"], num_probe_samples=2)  # 4 units of work
        trainer = _trainer(tmp_path, [monitor, TQDMProgressBar()], enable_progress_bar=True)
        trainer.fit(ShapesNet(), datamodule=_data())
        return capsys.readouterr()

    assert "Explaining the probe" not in fit().out + fit().err  # captured output: no terminal
    monkeypatch.setattr(_progress, "_is_terminal", lambda stream: True)
    shown = fit()
    assert "Explaining the probe" in shown.out + shown.err  # the same fit on a terminal shows it


@pytest.mark.parametrize(
    "probe", [torch.tensor(1.0), (torch.tensor(1.0), torch.tensor(0)), {"image": torch.tensor(2.0)}]
)
def test_a_0_dim_probe_is_refused_with_the_fix(probe):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match=r"probe: expected a batch .* got a 0-dim tensor .*unsqueeze"):
        AttributionMonitor(probe=probe)


def test_a_model_on_the_meta_device_is_refused_with_the_fix(tmp_path):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    with torch.device("meta"):
        model = ShapesNet()
    monitor = AttributionMonitor(["saliency"], probe=torch.rand(2, 3, 16, 16))
    with pytest.raises(MisconfigurationException, match=r"meta device .*to_empty"):
        monitor._prepare(_trainer(tmp_path, [monitor]), model)


class _TakesTheBatch(ShapesNet):
    def forward(self, batch):
        return super().forward(batch["image"])

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch), batch["label"])


def test_a_forward_that_takes_the_whole_batch_gets_a_hint(tmp_path):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    monitor = AttributionMonitor(["saliency"], num_probe_samples=2)
    with pytest.raises(MisconfigurationException, match=r"forward takes 'batch', which looks like the whole batch"):
        _trainer(tmp_path, [monitor]).fit(_TakesTheBatch(), datamodule=_data())
    assert Path(tmp_path).exists()
