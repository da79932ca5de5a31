"""EpochPoints: the schedule the concept, robustness and language-model monitors share, and what a failing
point does."""

from __future__ import annotations

from typing import ClassVar

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_xai._config.arguments import check_strategy
from lightning_xai._config.choices import OnError
from lightning_xai.regression import AttributionRegressionError


class EpochPoints(Callback):
    """A callback that measures at points of training: before the first step (``log_at_start``) and at the
    end of every ``every_n_epochs``-th epoch; never in a ``fast_dev_run``. Subclasses set the attributes and
    implement :meth:`measure`.

    A point that fails warns (once per kind of error and fit) and training goes on, as with the
    AttributionMonitor: a monitor must not end the training it watches.  With ``on_error="raise"`` the error
    stops training.  Misconfiguration and a regression check's verdict always stop it.
    """

    every_n_epochs: int = 1
    log_at_start: bool = True
    on_error: OnError = "warn"
    name: str = ""
    """The prefix of the monitor's tags. Two monitors of one kind in a Trainer need different names: the
    name is also the state key Lightning files the monitor's history under in a checkpoint."""
    default_name: ClassVar[str] = ""

    @property
    @override
    def state_key(self) -> str:
        # Under its default name a monitor keeps the class name as its key, so checkpoints written before
        # monitors had names still resume their history.
        return super().state_key if self.name == self.default_name else self._generate_state_key(name=self.name)

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure and log one point, at the trainer's ``global_step``."""
        raise NotImplementedError

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            kind = type(self).__name__
            check_strategy(trainer.strategy, kind)
            # Lightning refuses equal state keys; a key may hold more than the name, so equal names are checked.
            callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning, undeclared
            same = [c for c in callbacks if type(c) is type(self) and c.name == self.name]
            if len(same) > 1:
                raise MisconfigurationException(
                    f"{kind}: {len(same)} {kind}s are named {self.name!r}; they would write the same tags, mixing "
                    f"their values. Give each its own name=, e.g. name='{self.name}_2'"
                )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._failures_told: set[str] = set()

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_at_start and trainer.global_step == 0 and not trainer.fast_dev_run:  # type: ignore[attr-defined]
            self._point(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not trainer.fast_dev_run:  # type: ignore[attr-defined]
            self._point(trainer, pl_module)

    def _point(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            self.measure(trainer, pl_module)
        except (MisconfigurationException, AttributionRegressionError):
            raise
        except Exception as error:
            if self.on_error == "raise":
                raise
            kind = type(error).__name__
            told: set[str] = getattr(self, "_failures_told", set())
            if kind not in told:
                self._failures_told = told | {kind}
                rank_zero_warn(
                    f"{type(self).__name__} skipped the point at step {trainer.global_step} (epoch "
                    f"{trainer.current_epoch}): {kind}: {error} (later failures of this kind are not reported; "
                    f"pass on_error='raise' to stop training instead)"
                )
