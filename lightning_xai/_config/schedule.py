"""When the monitor explains the probe: before the first step, at epoch ends, every n steps, and at
log-spaced steps (1, 2, 4, 8, ...), where explanations move most."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """The points of training at which the probe is explained (a step is never explained twice).

    Args:
        at_start: once before the first optimizer step, on the untrained model.
        every_n_epochs: at the end of every n-th epoch (epochs ``n - 1``, ``2n - 1``, ...); None: never.
        every_n_steps: after every n-th optimizer step; None: never.
        log_spaced_steps: after optimizer steps 1, 2, 4, 8, ... (each doubling).
    """

    at_start: bool = True
    every_n_epochs: int | None = 1
    every_n_steps: int | None = None
    log_spaced_steps: bool = False

    def at_epoch_end(self, epoch: int) -> bool:
        return self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0

    def after_step(self, step: int) -> bool:
        """``step``: optimizer steps taken so far (the trainer's ``global_step``)."""
        if step < 1:
            return False
        regular = self.every_n_steps is not None and step % self.every_n_steps == 0
        return regular or (self.log_spaced_steps and step & (step - 1) == 0)
