"""InfluenceMonitor inside real Trainers: scores at the step's weights, training unchanged, resume, logs."""

import copy
import csv
import glob

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import IndexedDataset, InfluenceMonitor, MissingIndexError

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
    with pytest.raises(MisconfigurationException, match=r"'net\.1' is not an nn\.Linear.*\['net\.0', 'net\.3'\]"):
        _fit(tmp_path, [InfluenceMonitor(_probe(), layer="net.1")])


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
    assert table.count("\n") == 2 + 5 and f"| 0 | {rows[0]['index']} |" in table
    assert {f"influence/probe_{i}/text_summary" for i in range(3)} <= set(events.Tags()["tensors"])
