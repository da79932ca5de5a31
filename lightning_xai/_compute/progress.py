"""A progress bar for explanations that take a while, shown by the trainer's own progress bar callback.

Lightning's bars (tqdm or rich) own the terminal while training; a stray tqdm line would tear them. The
explanation's bar is therefore made by the trainer's progress bar callback, as its validation bar is, and
only once the work has taken ``SHOW_AFTER`` seconds: short explanations leave the screen alone.  Output
that is not a terminal (a log file) gets no bar at all.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

SHOW_AFTER = 3.0
"""Seconds an explanation runs before its progress bar appears."""


class Progress:
    """Counts the units of work done; shows nothing."""

    def __init__(self) -> None:
        self.total = self.done = 0

    def start(self, total: int) -> None:
        self.total, self.done = total, 0

    def advance(self) -> None:
        self.done += 1

    def close(self) -> None:
        pass


class TrainerProgress(Progress):
    """Progress shown as a bar of the trainer's progress bar callback (tqdm or rich), once it takes a while."""

    def __init__(self, trainer: pl.Trainer, description: str) -> None:
        super().__init__()
        self.callback = trainer.progress_bar_callback if trainer.is_global_zero else None
        self.description = description
        self._started = 0.0
        self._bar: Any = None

    def start(self, total: int) -> None:
        super().start(total)
        self._started = time.monotonic()

    def advance(self) -> None:
        super().advance()
        if self._bar is None and self.done < self.total and time.monotonic() - self._started >= SHOW_AFTER:
            self._bar = self._open()
        if self._bar is not None:
            self._bar.show(self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _open(self) -> Any:
        callback = self.callback
        if isinstance(callback, TQDMProgressBar) and callback.is_enabled and _is_terminal(sys.stdout):
            return _TqdmBar(callback, self.description, self.total)
        if isinstance(callback, RichProgressBar) and callback.is_enabled and callback.progress is not None:
            return _RichBar(callback, self.description, self.total)  # rich redraws only on a terminal by itself
        return None


def _is_terminal(stream: Any) -> bool:
    """Whether ``stream`` (where Lightning's tqdm bars write) is a terminal: a bar redrawn into a log file
    leaves a line of carriage returns and escape codes per redraw, so none is shown there."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _TqdmBar:
    def __init__(self, callback: TQDMProgressBar, description: str, total: int) -> None:
        self.bar = callback.init_validation_tqdm()  # placed below the training bar, removed when done
        self.bar.set_description(description)
        self.bar.reset(total=total)

    def show(self, done: int) -> None:
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class _RichBar:
    def __init__(self, callback: RichProgressBar, description: str, total: int) -> None:
        if callback.progress is None:
            raise RuntimeError("RichProgressBar: its progress display is not running")  # checked by the caller
        self.progress = callback.progress
        self.task = self.progress.add_task(description, total=total)

    def show(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        self.progress.remove_task(self.task)
