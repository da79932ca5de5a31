"""InfluenceMonitor and InfluenceRegressionCheck inside real Trainers: scores at the step's weights, of the
last layer or of all parameters, training unchanged, resume, tables, images and the cost, read back."""

import copy
import csv
import glob
import io
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import (
    AttributionRegressionError,
    IndexedDataset,
    InfluenceMonitor,
    InfluenceRegressionCheck,
    MissingIndexError,
)
from lightning_xai._compute.online_tracin import OnlineTracIn
from lightning_xai._compute.training_gradients import StepScores

pytestmark = pytest.mark.slow

N_TRAIN = 24


class Tiny(L.LightningModule):
    def __init__(self, dropout=0.3, shuffle=True, indexed=True, batch_size=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 3))
        self.shuffle, self.indexed, self.batch_size = shuffle, indexed, batch_size

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.3, momentum=0.5)
        return [optimizer], [{"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5), "interval": "step"}]

    def train_dataloader(self):
        g = torch.Generator().manual_seed(3)
        data = TensorDataset(torch.randn(N_TRAIN, 6, generator=g), torch.randint(0, 3, (N_TRAIN,), generator=g))
        return DataLoader(IndexedDataset(data) if self.indexed else data, self.batch_size, shuffle=self.shuffle)


def _probe():
    g = torch.Generator().manual_seed(4)
    return torch.randn(3, 6, generator=g), torch.tensor([0, 1, 2])


def _fit(tmp_path, callbacks=(), epochs=2, ckpt_path=None, model=None, **model_args):
    L.seed_everything(0, verbose=False)
    model = model or Tiny(**model_args)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_epochs=epochs,
        logger=TensorBoardLogger(tmp_path, name="logs", version=0),
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, ckpt_path=ckpt_path)
    return model, trainer


def test_training_is_identical_with_and_without_the_monitor(tmp_path):
    plain, _ = _fit(tmp_path / "plain")
    monitored, _ = _fit(tmp_path / "monitored", [InfluenceMonitor(_probe(), k=2)])
    for a, b in zip(plain.parameters(), monitored.parameters()):
        assert torch.equal(a, b)


class _Recorder(Callback):
    """The weights, learning rate and batch of each step, as the monitor sees them."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.steps.append((copy.deepcopy(pl_module.net).eval(), lr, [t.clone() for t in batch]))


def _weight_grads(net, x, y):
    rows = []
    for xi, yi in zip(x, y):
        (grad,) = torch.autograd.grad(F.cross_entropy(net(xi[None]), yi[None]), net[3].weight)
        rows.append(grad.flatten())
    return torch.stack(rows)


def test_scores_are_taken_at_the_weights_and_rate_of_each_step(tmp_path):
    recorder, monitor = _Recorder(), InfluenceMonitor(_probe(), k=2, num_candidates=N_TRAIN)
    _fit(tmp_path, [recorder, monitor])
    exact = torch.zeros(3, N_TRAIN)
    exact_self = torch.zeros(N_TRAIN)
    for net, lr, (x, y, index) in recorder.steps:
        train = _weight_grads(net, x, y)
        exact[:, index] += lr * _weight_grads(net, *_probe()) @ train.T
        exact_self[index] += lr * train.pow(2).sum(1)
    assert len({lr for _, lr, _ in recorder.steps}) > 1  # the schedule moved
    torch.testing.assert_close(monitor.tracin.self_influence, exact_self, rtol=1e-4, atol=1e-7)
    for p in range(3):
        torch.testing.assert_close(monitor.tracin.scores_of(p, torch.arange(N_TRAIN)), exact[p], rtol=1e-4, atol=1e-6)


def test_resume_continues_the_scores(tmp_path):
    def monitor():
        return InfluenceMonitor(_probe(), k=2, num_candidates=4)

    straight = monitor()
    _fit(tmp_path / "straight", [straight], epochs=3, dropout=0.0, shuffle=False)
    first = monitor()
    _, trainer = _fit(tmp_path / "first", [first], epochs=2, dropout=0.0, shuffle=False)
    trainer.save_checkpoint(tmp_path / "two.ckpt")
    resumed = monitor()
    _fit(tmp_path / "resumed", [resumed], epochs=3, ckpt_path=tmp_path / "two.ckpt", dropout=0.0, shuffle=False)
    assert resumed.tracin.steps == straight.tracin.steps == 9
    assert torch.equal(resumed.tracin.visits, straight.tracin.visits)
    torch.testing.assert_close(resumed.tracin.self_influence, straight.tracin.self_influence)
    assert torch.equal(resumed.tracin.pool_indices, straight.tracin.pool_indices)
    torch.testing.assert_close(resumed.tracin.pool_scores, straight.tracin.pool_scores)


def test_a_dataset_without_indices_stops_with_a_clear_error(tmp_path):
    with pytest.raises(MissingIndexError, match=r"\(x, y, index\).*IndexedDataset"):
        _fit(tmp_path, [InfluenceMonitor(_probe())], indexed=False)


def test_bad_arguments_and_layers_are_refused(tmp_path):
    with pytest.raises(MisconfigurationException, match="probe"):
        InfluenceMonitor(torch.zeros(3, 6))
    with pytest.raises(MisconfigurationException, match="num_candidates"):
        InfluenceMonitor(_probe(), k=5, num_candidates=2)
    with pytest.raises(MisconfigurationException, match="image_shape"):
        InfluenceMonitor(_probe(), image_shape=(4, 4))
    with pytest.raises(MisconfigurationException, match="layers must be"):
        InfluenceMonitor(_probe(), layers=[])
    with pytest.raises(MisconfigurationException, match=r"\['net\.9'\] do not exist.*\['net\.0', 'net\.3'\]"):
        _fit(tmp_path, [InfluenceMonitor(_probe(), layers=["net.0", "net.9"])])
    with pytest.raises(MisconfigurationException, match="no trainable parameters"):
        _fit(tmp_path, [InfluenceMonitor(_probe(), layers="net.1")])


def test_csv_and_tensorboard_are_written_and_read_back(tmp_path):
    monitor = InfluenceMonitor(_probe(), k=2, num_suspects=5)
    _fit(tmp_path, [monitor], epochs=2)
    log_dir = tmp_path / "logs" / "version_0"
    for epoch in (0, 1):
        assert (log_dir / f"influence_suspects_epoch_{epoch:04d}.csv").is_file()
    with open(log_dir / "influence_suspects_epoch_0001.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_TRAIN
    assert [int(r["index"]) for r in rows] == monitor.tracin.suspects().tolist()
    scores = [float(r["self_influence"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    torch.testing.assert_close(torch.tensor(scores), monitor.tracin.self_influence[monitor.tracin.suspects()])
    assert {int(r["visits"]) for r in rows} == {2}
    with open(log_dir / "influence_probe_epoch_0001.csv") as f:
        probe_rows = list(csv.DictReader(f))
    assert {r["kind"] for r in probe_rows} <= {"proponent", "opponent"} and probe_rows
    assert all((float(r["score"]) > 0) == (r["kind"] == "proponent") for r in probe_rows)

    (path,) = glob.glob(str(log_dir / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    assert {"influence/self_influence_max", "influence/self_influence_mean"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("influence/self_influence_max")] == [3, 6]
    suspects = events.Tensors("influence/suspects/text_summary")
    assert [e.step for e in suspects] == [3, 6]
    table = suspects[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("Most self-influential training examples, step 6 (epoch 1)")
    assert len([line for line in table.splitlines() if line.startswith("|")]) == 2 + 5
    assert f"| 0 | {rows[0]['index']} |" in table
    assert {f"influence/probe_{i}/text_summary" for i in range(3)} <= set(events.Tags()["tensors"])


def _scalars(log_dir):
    (path,) = glob.glob(str(log_dir / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_the_cost_is_measured_and_logged(tmp_path):
    _fit(tmp_path, [InfluenceMonitor(_probe(), k=2)], epochs=2)
    events = _scalars(tmp_path / "logs" / "version_0")
    seconds = [e.value for e in events.Scalars("influence/seconds")]
    shares = [e.value for e in events.Scalars("influence/share_of_time")]
    (state,) = {e.value for e in events.Scalars("influence/state_mib")}
    assert len(seconds) == 2 and all(s > 0 for s in seconds) and all(0 < s < 1 for s in shares)
    # per training example a float32 and two int64; per probe example 2 * 8 slots of an int64 and a float32
    assert state == pytest.approx((N_TRAIN * 20 + 3 * 16 * 12) / 2**20, rel=1e-6)


def test_flat_inputs_are_shown_as_images_with_their_influences(tmp_path):
    texts = []

    def as_text(x):
        texts.append(x.shape)
        return f"x0={float(x[0]):.2f}"

    monitor = InfluenceMonitor(_probe(), k=2, image_shape=(2, 3), example_text=as_text)
    _fit(tmp_path, [monitor], epochs=1)
    events = _scalars(tmp_path / "logs" / "version_0")
    assert {f"influence/probe_{i}" for i in range(3)} <= set(events.Tags()["images"])
    (image,) = events.Images("influence/probe_0")
    picture = torch.from_numpy(np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB")))
    # the probe row and one row per kind: 2x3 inputs become 64x96 tiles, two to a row
    assert image.step == 3 and image.width == 2 * 96 + 3 * 4 and image.height > 3 * 64
    assert picture.float().std() > 20  # tiles, text and white space: not a blank picture
    probe_tile = picture[:, 4:100]
    assert len(torch.unique(probe_tile.reshape(-1, 3), dim=0)) >= 6  # six pixels of the probe, each its shade
    table = events.Tensors("influence/probe_0/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| kind | rank | index | label | score | text |" in table and "x0=" in table
    assert texts and all(shape == (6,) for shape in texts)


def test_all_layers_add_every_parameter_to_the_last_weight(tmp_path):
    """Self-influence is a sum of squared gradient norms: over all parameters it is larger than over the last
    layer's weight alone, example by example, and the first layer's alone is the difference's part."""
    runs = {}
    for layers in (None, "all", ["net.0"]):
        monitor = InfluenceMonitor(_probe(), k=2, num_candidates=N_TRAIN, layers=layers)
        _fit(tmp_path / str(layers), [monitor], epochs=1, dropout=0.0, shuffle=False)
        runs[str(layers)] = monitor.tracin.self_influence[:N_TRAIN]
    last, everything, first = runs["None"], runs["all"], runs["['net.0']"]
    assert (everything > last).all() and (everything > first).all()
    assert (everything - last - first).min() > 0  # the biases and nothing negative


class Separable(Tiny):
    """Labels that the inputs decide (the largest of the first three features), with ``flipped`` wrong."""

    def __init__(self, flipped=()):
        super().__init__(dropout=0.0, batch_size=8)
        self.flipped = list(flipped)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(5)
        x = torch.randn(N_TRAIN * 2, 6, generator=g)
        y = x[:, :3].argmax(1)
        y[self.flipped] = (y[self.flipped] + 1) % 3
        return DataLoader(IndexedDataset(TensorDataset(x, y)), self.batch_size, shuffle=False)


FLIPPED = [1, 7, 20, 33]


def _check_fit(tmp_path, check, epochs=4, flipped=FLIPPED):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_epochs=epochs,
        logger=TensorBoardLogger(tmp_path, name="logs", version=0),
        callbacks=[InfluenceMonitor(_probe(), k=2), check],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Separable(flipped))
    return trainer


def test_the_check_stops_when_the_marked_examples_become_hard_to_fit(tmp_path):
    """Clean, typical examples get easier as the model learns; wrong labels get harder: their share of the
    self-influence rises until the check stops training (measured: about 1.0, 1.4, 2.5, 3.6 an epoch)."""
    clean = InfluenceRegressionCheck("marked_self_influence", 2.0, marked=[0, 2, 3, 4], on_fail="stop")
    trainer = _check_fit(tmp_path / "clean", clean)
    values = [h["value"] for h in clean.history]
    assert trainer.current_epoch == 4 and len(values) == 4 and not any(h["violated"] for h in clean.history)
    assert values == sorted(values, reverse=True) and values[-1] < 1.0
    wrong = InfluenceRegressionCheck("marked_self_influence", 2.0, marked=FLIPPED, on_fail="stop")
    with pytest.warns(UserWarning, match=r"marked_self_influence = .* at step 18 \(epoch 2\).*stopping training"):
        trainer = _check_fit(tmp_path / "wrong", wrong)
    values = [h["value"] for h in wrong.history]
    assert trainer.current_epoch == 3 and values == sorted(values) and values[0] < 2.0 < values[-1]
    events = _scalars(tmp_path / "wrong" / "logs" / "version_0")
    assert [e.value for e in events.Scalars("influence/marked_self_influence")] == pytest.approx(values)


def test_the_class_shift_of_the_suspects_is_their_distance_to_the_training_classes():
    tracin = OnlineTracIn(1, capacity=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])  # shares 1/4, 1/4, 1/2
    own = torch.tensor([5.0, 4.0, 0, 0, 0, 0, 0, 0])  # class 0 holds the two top suspects
    tracin.update(torch.arange(8), labels, StepScores(torch.zeros(1, 8), own))
    check = InfluenceRegressionCheck("suspect_class_shift", 0.5)
    assert check.value(tracin, top=2) == pytest.approx(0.5 * (0.75 + 0.25 + 0.5))
    assert check.value(tracin, top=8) == pytest.approx(0.0)
    assert InfluenceRegressionCheck("marked_self_influence", 1.0, marked=[0]).value(tracin, 2) == pytest.approx(
        5.0 / (9.0 / 8)
    )
    assert InfluenceRegressionCheck("marked_self_influence", 1.0, marked=[20]).value(tracin, 2) is None


def test_the_check_raises_and_refuses_bad_arguments(tmp_path):
    with pytest.raises(AttributionRegressionError, match="suspect_class_shift"):
        _check_fit(tmp_path, InfluenceRegressionCheck("suspect_class_shift", 0.0, on_fail="raise"), epochs=1)
    with pytest.raises(MisconfigurationException, match="marked"):
        InfluenceRegressionCheck("marked_self_influence", 1.0)
    with pytest.raises(MisconfigurationException, match="marked"):
        InfluenceRegressionCheck("suspect_class_shift", 1.0, marked=[1])
    with pytest.raises(MisconfigurationException, match="metric"):
        InfluenceRegressionCheck("loss", 1.0)
    with pytest.raises(MisconfigurationException, match="InfluenceMonitor"):
        L.Trainer(callbacks=[InfluenceRegressionCheck("suspect_class_shift", 0.5)], logger=False).fit(Tiny())


DDP_SCRIPT = Path(__file__).with_name("ddp_influence_script.py")


def _ddp_run(root, devices, mode):
    result = subprocess.run(
        [sys.executable, str(DDP_SCRIPT), str(root), str(devices), mode], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(root / "logs" / "version_0" / "influence_probe_epoch_0001.csv") as f:
        probe = {(r["probe"], r["kind"], r["rank"]): (r["index"], float(r["score"])) for r in csv.DictReader(f)}
    return [torch.load(root / f"rank{r}_self_influence.pt") for r in range(devices)], probe


@pytest.mark.skipif(os.environ.get("LIGHTNING_XAI_SKIP_DDP") == "1", reason="DDP test disabled")
def test_ddp_processes_score_their_batches_and_gather_what_one_process_computes(tmp_path):
    (alone,), probe_alone = _ddp_run(tmp_path / "single", 1, "straight")
    ddp, probe_ddp = _ddp_run(tmp_path / "ddp", 2, "straight")
    resumed, probe_resumed = _ddp_run(tmp_path / "resumed", 2, "resumed")
    assert (alone > 0).all()
    for selfs in (ddp, resumed):  # every process holds the sum of all of them, equal to one process's
        for values in selfs:
            torch.testing.assert_close(values, alone, rtol=1e-4, atol=1e-7)
    for probe in (probe_ddp, probe_resumed):
        assert probe.keys() == probe_alone.keys()
        for key, (index, score) in probe_alone.items():
            assert probe[key][0] == index and probe[key][1] == pytest.approx(score, rel=1e-4, abs=1e-7)
