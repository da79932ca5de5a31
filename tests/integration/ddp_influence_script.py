"""Run by tests/integration/test_influence_monitor.py: the InfluenceMonitor under DDP with CPU processes
(gloo), or in one process.

``python ddp_influence_script.py ROOT DEVICES MODE``: MODE ``straight`` fits two epochs; ``resumed`` fits one,
then resumes from its checkpoint for the second. Each process sees half of every global batch (the sampler
deals examples out in turn), one process all of it: the same steps at the same weights. Writes the
monitor's CSV files under ``ROOT/logs`` and, per rank, the self-influence it holds after the fit
(``rank<r>_self_influence.pt``, the processes' sum since every process gathers).
"""

import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_xai import IndexedDataset, InfluenceMonitor, InfluenceRegressionCheck

N_TRAIN = 32
GLOBAL_BATCH = 8


class Net(L.LightningModule):
    def __init__(self, devices: int):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        self.devices = devices

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(3)
        data = TensorDataset(torch.randn(N_TRAIN, 6, generator=g), torch.randint(0, 3, (N_TRAIN,), generator=g))
        data = IndexedDataset(data)
        # Examples dealt out in turn, in order (Lightning's own sampler would shuffle them).
        sampler = DistributedSampler(data, self.devices, self.global_rank, shuffle=False) if self.devices > 1 else None
        return DataLoader(data, GLOBAL_BATCH // self.devices, sampler=sampler)


def fit(root: Path, devices: int, epochs: int, ckpt_path: Path | None = None) -> tuple[L.Trainer, InfluenceMonitor]:
    g = torch.Generator().manual_seed(4)
    monitor = InfluenceMonitor((torch.randn(3, 6, generator=g), torch.tensor([0, 1, 2])), k=3, num_candidates=N_TRAIN)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=epochs,
        default_root_dir=root,
        logger=CSVLogger(root, name="logs", version=0),
        callbacks=[monitor, InfluenceRegressionCheck("suspect_class_shift", 2.0)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
    )
    trainer.fit(Net(devices), ckpt_path=ckpt_path)
    return trainer, monitor


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    root, devices, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if mode == "resumed":
        first, _ = fit(root, devices, epochs=1)
        first.save_checkpoint(root / "one.ckpt")  # every process: the monitor gathers the scores for it
        trainer, monitor = fit(root, devices, epochs=2, ckpt_path=root / "one.ckpt")
    else:
        trainer, monitor = fit(root, devices, epochs=2)
    gathered = monitor._gathered(trainer)  # a collective call, made by every process
    torch.save(gathered.self_influence[:N_TRAIN].clone(), root / f"rank{trainer.global_rank}_self_influence.pt")
