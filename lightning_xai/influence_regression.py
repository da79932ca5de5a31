"""InfluenceRegressionCheck: act when the training examples the model struggles with change."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor
from typing_extensions import override

from lightning_xai._compute.online_tracin import OnlineTracIn
from lightning_xai._config.arguments import check_literal
from lightning_xai._config.choices import InfluenceMetric, OnFail
from lightning_xai.influence_monitor import InfluenceMonitor, InfluencePoint
from lightning_xai.regression import ThresholdCheck, finite_threshold


class InfluenceRegressionCheck(ThresholdCheck):
    """Warn, stop or fail training when the self-influence ranking of an :class:`InfluenceMonitor` shows a
    problem. Each metric is read from the monitor's running scores at each point (all processes added up),
    logged to every logger as ``influence/<metric>``, and must stay at or below ``threshold``:

    - ``"marked_self_influence"``: the mean self-influence of the ``marked`` training examples (e.g. ones
      checked by hand to be clean and typical) over the mean of all training examples seen so far. 1: the
      marked examples are as hard to fit as the average one; 3: three times as hard, which is what the
      model shows when it is learning something that contradicts them (a shortcut, label noise in their
      classes, a shifted data source).
    - ``"suspect_class_shift"``: the total variation distance between the classes of the ``top`` most
      self-influential examples and the classes of all training examples seen. 0: the suspects mirror the
      training set; towards 1: they come from a few classes (a class that is mislabeled or that the model
      cannot learn).

    Self-influence is a sum over the steps so far, so both ratios are stable under training length; the
    point of the first epoch is checked as well (use ``start_epoch`` to let the ranking settle first).
    Under DDP every process sees the same scores and the decision is agreed across processes.

    Args:
        metric: ``"marked_self_influence"`` or ``"suspect_class_shift"``.
        threshold: the bound the metric must stay at or below.
        marked: dataset indices of the marked examples (``"marked_self_influence"`` only).
        top: how many top suspects ``"suspect_class_shift"`` looks at; default the monitor's ``num_suspects``.
        patience: violations in a row (at logged points) that are tolerated before acting.
        start_epoch: first epoch whose points are checked.
        on_fail: ``"warn"``, ``"stop"`` (ends training gracefully) or ``"raise"``
            (:class:`~lightning_xai.AttributionRegressionError`).

    Example:
        >>> import lightning as L
        >>> from lightning_xai import InfluenceMonitor, InfluenceRegressionCheck
        >>> probe = (torch.randn(4, 8), torch.tensor([0, 1, 0, 1]))
        >>> check = InfluenceRegressionCheck("marked_self_influence", 3.0, marked=[0, 5, 9], on_fail="stop")
        >>> trainer = L.Trainer(callbacks=[InfluenceMonitor(probe), check])
    """

    def __init__(
        self,
        metric: InfluenceMetric,
        threshold: float,
        marked: Sequence[int] | None = None,
        top: int | None = None,
        patience: int = 0,
        start_epoch: int = 0,
        on_fail: OnFail = "warn",
    ) -> None:
        super().__init__(patience, start_epoch, on_fail)
        check_literal(metric, "metric", InfluenceMetric)
        if metric == "marked_self_influence":
            if marked is None or len(marked) == 0:
                raise MisconfigurationException(
                    f"marked: 'marked_self_influence' needs the dataset indices of the marked examples, got {marked!r}"
                )
            if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 0 for i in marked):
                raise MisconfigurationException(f"marked: expected dataset indices (ints >= 0), got {list(marked)!r}")
        elif marked is not None:
            raise MisconfigurationException(f"marked: only 'marked_self_influence' reads it, not {metric!r}")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise MisconfigurationException(f"top: expected a positive int, got {top!r}")
        self.metric: InfluenceMetric = metric
        self.threshold: float = finite_threshold(threshold)
        self.marked: Tensor | None = None if marked is None else torch.as_tensor(list(marked), dtype=torch.long)
        self.top: int | None = top
        self._monitor: InfluenceMonitor | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(metric=self.metric, threshold=self.threshold, top=self.top)

    @property
    def influence_read(self) -> InfluenceMonitor | None:
        """The monitor this check reads; it calls :meth:`on_influence_point` after each point."""
        return self._monitor

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        monitors = [c for c in trainer.callbacks if isinstance(c, InfluenceMonitor)]  # type: ignore[attr-defined]
        if not monitors:
            raise MisconfigurationException(
                "InfluenceRegressionCheck reads the scores of an InfluenceMonitor; add one to the callbacks"
            )
        self._monitor = monitors[0]

    def value(self, tracin: OnlineTracIn, top: int) -> float | None:
        """The metric from running scores; None while it is undefined (nothing seen, no marked example seen,
        no class labels)."""
        seen = tracin.visits > 0
        if not bool(seen.any()):
            return None
        if self.metric == "marked_self_influence":
            assert self.marked is not None
            marked = self.marked[self.marked < len(seen)]
            marked = marked[seen[marked]]
            overall = float(tracin.self_influence[seen].mean())
            if len(marked) == 0 or overall <= 0:
                return None
            return float(tracin.self_influence[marked].mean()) / overall
        labels = tracin.labels[seen]
        if bool((labels < 0).any()):
            return None
        suspects = tracin.labels[tracin.suspects(top)]
        classes = int(labels.max()) + 1
        share_all = torch.bincount(labels, minlength=classes).double() / len(labels)
        share_top = torch.bincount(suspects, minlength=classes).double() / len(suspects)
        return 0.5 * float((share_all - share_top).abs().sum())

    def on_influence_point(self, trainer: pl.Trainer, point: InfluencePoint) -> None:
        """Check the scores the monitor logged at ``point`` (called on every rank at every point)."""
        value = self.value(point.tracin, self.top or point.num_suspects) if point.epoch >= self.start_epoch else None
        if value is not None:
            for logger in trainer.loggers:
                logger.log_metrics({f"influence/{self.metric}": value}, step=point.step)
            self._record(point.step, point.epoch, value, value > self.threshold)
        shown = "another process's value" if value is None else f"{value:.4g}"
        message = (
            f"InfluenceRegressionCheck: influence/{self.metric} = {shown} at step {point.step} (epoch {point.epoch}) "
            f"is above the threshold {self.threshold:g}"
        )
        self._vote(trainer, value is not None and self.violations > self.patience, message)
