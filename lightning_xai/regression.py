"""AttributionRegressionCheck: act when an explanation metric crosses a threshold."""

from __future__ import annotations

import math
import numbers
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_xai._compute.history import Point
from lightning_xai._config.arguments import check_literal
from lightning_xai._config.choices import Direction, OnFail
from lightning_xai._config.tags import EPOCH_METRICS, METHOD_METRICS
from lightning_xai.monitor import AttributionMonitor, MonitorValues


class AttributionRegressionError(RuntimeError):
    """Raised by :class:`AttributionRegressionCheck` with ``on_fail="raise"``."""


class ThresholdCheck(Callback):
    """What the regression checks share: violations in a row counted against ``patience`` from
    ``start_epoch``, the history of the values checked, and the action (``on_fail``) taken when the processes
    agree that one fired. Carried in checkpoints."""

    def __init__(self, patience: int, start_epoch: int, on_fail: OnFail) -> None:
        super().__init__()
        check_literal(on_fail, "on_fail", OnFail)
        for name, value in (("patience", patience), ("start_epoch", start_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MisconfigurationException(f"{name}: expected an int >= 0, got {value!r}")
        self.patience: int = patience
        self.start_epoch: int = start_epoch
        self.on_fail: OnFail = on_fail
        self.violations: int = 0
        self.history: list[dict[str, Any]] = []

    def _record(self, step: int, epoch: int, value: float, violated: bool) -> None:
        self.violations = self.violations + 1 if violated else 0
        self.history.append({"step": step, "epoch": epoch, "value": value, "violated": violated})

    def _vote(self, trainer: pl.Trainer, fired: bool, message: str) -> None:
        """Act on ``message`` if any process's check ``fired``. Every rank takes part in the vote at every
        point, so the collective calls always match."""
        if not trainer.strategy.reduce_boolean_decision(fired, all=False):
            return
        message += f" for {self.violations} logged points in a row" if self.violations > 1 else ""
        if self.on_fail == "raise":
            raise AttributionRegressionError(message)
        if self.on_fail == "stop":
            trainer.should_stop = True
            message += "; stopping training"
        rank_zero_warn(message)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"violations": self.violations, "history": list(self.history)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.violations = state_dict.get("violations", 0)
        self.history = list(state_dict.get("history", []))


class AttributionRegressionCheck(ThresholdCheck):
    """Warn, stop or fail training when an explanation metric of the monitor crosses a threshold.

    Reads the values the :class:`AttributionMonitor` of the same trainer
    computes at each logged point (the monitor hands each point to the checks
    that read it, right after logging it, so the order of the callbacks list
    does not matter; the list is never changed, and any number of checks may
    read one monitor).  The point before the first optimizer step (the
    untrained model) is not checked.  Under DDP every rank sees the same
    values and the decision is agreed across ranks, so ``"stop"`` ends training
    everywhere and ``"raise"`` fails every rank instead of hanging the others.

    Args:
        metric: ``"<method>/<metric>"`` as logged under ``xai/`` (e.g.
            ``"integrated_gradients/mass_in_mask"``,
            ``"occlusion/similarity_reference"``) or ``"prediction_flips"``.
        threshold: the bound the metric must respect.
        direction: ``"above"``: the metric must stay at or above the threshold
            (similarities, localisation); ``"below"``: at or below (infidelity,
            sensitivity, flips).
        patience: violations in a row (at logged points) that are tolerated before acting.
        start_epoch: first epoch whose points are checked.
        on_fail: ``"warn"``, ``"stop"`` (ends training gracefully) or
            ``"raise"`` (:class:`AttributionRegressionError`).

    Example:
        >>> import lightning as L
        >>> from lightning_xai import AttributionMonitor, AttributionRegressionCheck
        >>> check = AttributionRegressionCheck("integrated_gradients/mass_in_mask", 0.5, on_fail="stop")
        >>> check.method, check.metric, check.direction
        ('integrated_gradients', 'mass_in_mask', 'above')
        >>> trainer = L.Trainer(callbacks=[AttributionMonitor(["integrated_gradients"]), check])
    """

    def __init__(
        self,
        metric: str,
        threshold: float,
        direction: Direction = "above",
        patience: int = 0,
        start_epoch: int = 0,
        on_fail: OnFail = "warn",
    ) -> None:
        super().__init__(patience, start_epoch, on_fail)
        self.method, self.metric = _parse_metric(metric)
        self.threshold: float = finite_threshold(threshold)
        check_literal(direction, "direction", Direction)
        self.direction: Direction = direction
        self._monitor: MonitorValues | None = None
        self._warned_missing: bool = False

    @property
    def name(self) -> str:
        return self.metric if self.method is None else f"{self.method}/{self.metric}"

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            metric=self.name,
            threshold=self.threshold,
            direction=self.direction,
            patience=self.patience,
            start_epoch=self.start_epoch,
            on_fail=self.on_fail,
        )

    @property
    def monitor_read(self) -> MonitorValues | None:
        """The monitor this check reads; it calls :meth:`on_monitor_point` after each logged point (this check
        is a :class:`~lightning_xai.monitor.MonitorReader`)."""
        return self._monitor

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            # Lightning sets Trainer.callbacks in a connector without declaring it.
            self._monitor = self._find_monitor(trainer.callbacks)  # type: ignore[attr-defined]
            self._warned_missing = False

    def _find_monitor(self, callbacks: list[Callback]) -> AttributionMonitor:
        """The monitor whose values this check reads (a Trainer has at most one: they would share tags)."""
        monitors = [c for c in callbacks if isinstance(c, AttributionMonitor)]
        if not monitors:
            raise MisconfigurationException(
                "AttributionRegressionCheck reads the values of an AttributionMonitor; add one to the callbacks"
            )
        if self.method is not None and self.method not in monitors[0].method_names:
            raise MisconfigurationException(
                f"metric: the monitor does not run {self.method!r}; it runs {monitors[0].method_names}"
            )
        return monitors[0]

    @property
    def _read(self) -> MonitorValues:
        """The monitor found at setup."""
        if self._monitor is None:
            raise MisconfigurationException("AttributionRegressionCheck: no monitor yet; it is found when fit starts")
        return self._monitor

    def on_monitor_point(self, trainer: pl.Trainer, point: Point) -> None:
        """Check the value the monitor logged at ``point`` (called on every rank at every point)."""
        checked = point.step > 0 and point.epoch >= self.start_epoch
        value = self._read.value(self.method, self.metric, point.step) if checked else None
        if checked and value is None and self._read.value_expected(point.step):
            self._warn_missing(point)
        if value is not None:
            violated = value < self.threshold if self.direction == "above" else value > self.threshold
            self._record(point.step, point.epoch, value, violated)
            verdict = {"name": self.name, "value": value, "threshold": self.threshold, "violated": violated}
            self._read.record_verdict(point.step, self.method, verdict)
        shown = "another process's value" if value is None else f"{value:.4g}"
        side = "below" if self.direction == "above" else "above"
        message = f"AttributionRegressionCheck: xai/{self.name} = {shown} at {point.label} is {side} the threshold "
        self._vote(trainer, value is not None and self.violations > self.patience, message + f"{self.threshold:g}")

    def _warn_missing(self, point: Point) -> None:
        reason = self._read.missing_reason(self.method, self.metric, point.step)
        if reason is not None and not self._warned_missing:
            self._warned_missing = True
            rank_zero_warn(
                f"AttributionRegressionCheck: xai/{self.name} has no value at {point.label}: {reason}; "
                f"the check cannot act on it (this warning is given once)"
            )


def finite_threshold(threshold: Any) -> float:
    """``threshold`` as a float; MisconfigurationException unless it is a finite number."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise MisconfigurationException(f"threshold: expected a finite number, got {threshold!r}")
    return float(threshold)


def _parse_metric(metric: Any) -> tuple[str | None, str]:
    if not isinstance(metric, str):
        raise MisconfigurationException(f"metric: expected a name like 'occlusion/mass_in_mask', got {metric!r}")
    parts = metric.removeprefix("xai/").split("/")
    if len(parts) == 1 and parts[0] in EPOCH_METRICS:
        return None, parts[0]
    if len(parts) == 2 and parts[1] in METHOD_METRICS:
        return parts[0], parts[1]
    raise MisconfigurationException(
        f"metric: unknown metric {metric!r}; use '<method>/<metric>' with a metric among {list(METHOD_METRICS)}, "
        f"or one of {list(EPOCH_METRICS)}"
    )
