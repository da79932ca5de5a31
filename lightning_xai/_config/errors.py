"""What the monitor does when something fails: by default it warns once and training goes on; with
``on_error="raise"`` it stops training with an error that says what failed, where, on which probe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_warn
from lightning_utilities.core.rank_zero import WarningCache  # (lightning re-exports it, undeclared)

from lightning_xai._config.choices import OnError


class AttributionMonitorError(RuntimeError):
    """A failure of the monitor with ``on_error="raise"``: says what failed, where in training, on which probe."""


class ErrorPolicy:
    """``on_error`` applied: failures raise or warn (each kind of warning once per fit)."""

    def __init__(self, on_error: OnError) -> None:
        self.on_error = on_error
        self._warnings = WarningCache()

    def reset(self) -> None:
        """Warn again in the next fit."""
        self._warnings.clear()

    def guarded(self, what: str, shape: tuple[int, ...] | None, action: Callable[..., Any], *args: Any) -> None:
        """Run ``action``; a failure warns (or raises, naming ``what`` and the probe's ``shape``)."""
        try:
            action(*args)
        except (MisconfigurationException, AttributionMonitorError):
            raise
        except Exception as error:
            if self.on_error == "raise":
                raise AttributionMonitorError(
                    f"AttributionMonitor failed in {what} on a probe of shape {shape}: {type(error).__name__}: {error}"
                ) from error
            rank_zero_warn(
                f"AttributionMonitor skipped {what}: {type(error).__name__}: {error} "
                f"(pass on_error='raise' to stop training instead)"
            )

    def method_failed(self, name: str, error: Exception, where: str, shape: tuple[int, ...] | None) -> None:
        """Method ``name`` failed at ``where`` (a point's label): raise, or warn the first time."""
        failed = f"{name} failed at {where} on a probe of shape {shape}"
        if self.on_error == "raise":
            raise AttributionMonitorError(f"AttributionMonitor: {failed}: {type(error).__name__}: {error}") from error
        self.warn_once(
            f"failed:{name}",
            f"{failed} and is skipped (the other methods are logged): {type(error).__name__}: {error} "
            f"(later failures of {name} are not reported; pass on_error='raise' to stop training instead)",
        )

    def warn_once(self, kind: str, message: str) -> None:
        """Warn (on global rank zero) the first time this ``kind`` of trouble happens in a fit.

        Lightning's ``WarningCache`` says each text once; the texts of one kind differ in where it happened
        (a point's label, an error's details), so the cache remembers the kind.
        """
        if kind not in self._warnings:
            self._warnings.add(kind)
            self._warnings.warn(f"AttributionMonitor: {message}")
