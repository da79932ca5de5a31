"""EpochPoints: the schedule the concept and robustness monitors share."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class EpochPoints(Callback):
    """A callback that measures at points of training: before the first step (``log_at_start``) and at the
    end of every ``every_n_epochs``-th epoch; never in a ``fast_dev_run``. Subclasses set both attributes
    and implement :meth:`measure`."""

    every_n_epochs: int = 1
    log_at_start: bool = True

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure and log one point, at the trainer's ``global_step``."""
        raise NotImplementedError

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_at_start and trainer.global_step == 0 and not trainer.fast_dev_run:  # type: ignore[attr-defined]
            self.measure(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not trainer.fast_dev_run:  # type: ignore[attr-defined]
            self.measure(trainer, pl_module)
