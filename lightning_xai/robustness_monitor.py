"""RobustnessMonitor: how large a perturbation flips the probe's predictions, over training."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai._compute.explain import untouched_training_state
from lightning_xai._compute.robustness import AttackBudget, robustness_values
from lightning_xai._compute.training_gradients import scores_of
from lightning_xai._config.arguments import check_literal, labelled_probe, tag_prefix
from lightning_xai._config.choices import OnError
from lightning_xai.epoch_points import EpochPoints

__all__ = ["RobustnessMonitor"]


class RobustnessMonitor(EpochPoints):
    """Adversarial robustness of the probe's predictions, measured at every logged point of training: a curve
    to read beside the accuracy (a model can get more accurate and more brittle at once).

    At each point (before the first step, and at the end of every ``every_n_epochs``-th epoch) it logs to
    every logger, at the trainer's ``global_step``, under ``name`` (``robustness`` by default):

    - ``robustness/probe_accuracy``: the share of the probe the model classifies correctly;
    - ``robustness/fgsm_success`` and ``robustness/pgd_success``: the share of those correctly classified
      examples that FGSM (one signed gradient step) and PGD (``pgd_steps`` projected steps, ``norm``)
      misclassify within ``epsilon`` (:mod:`attribution.robust`);
    - ``robustness/min_epsilon_median``: per correctly classified example the smallest FGSM epsilon that
      flips its prediction, searched up to ``max_epsilon`` by bisection
      (:class:`attribution.robust.MinParamPerturbation`), and their median (an example not flipped counts
      as ``max_epsilon``, so the median is a lower bound when ``flipped_within_max`` is below one half);
      ``robustness/flipped_within_max``;
    - ``robustness/seconds``: the point's cost.

    A point where the model gets no probe example right logs only the accuracy, and says so once.

    The attacks run in eval mode on a forked RNG, with gradients taken for the inputs only: training,
    ``param.grad`` and ``requires_grad`` are unchanged. The cost is about ``2 + pgd_steps`` forward and
    backward passes of the probe, plus five FGSM evaluations per example for the minimal epsilon (set
    ``max_epsilon=0`` to skip it).

    Args:
        probe: ``(inputs, labels)`` as the model takes them (e.g. normalised images).
        epsilon: the attacks' budget, in input units (for images normalised by a std of about 0.25, 0.03
            is about 2/255 of the pixel range).
        norm: PGD's norm, ``"Linf"`` or ``"L2"``.
        pgd_steps: PGD's iterations.
        pgd_step_size: PGD's step; default ``2.5 * epsilon / pgd_steps``.
        lower_bound: the smallest valid input value (attacked inputs are clamped to it).
        upper_bound: the largest valid input value.
        max_epsilon: how far the minimal epsilon is searched; default ``8 * epsilon``; 0 skips the search.
        every_n_epochs: measure at the end of every n-th epoch.
        log_at_start: also measure the untrained model, before the first step.
        seed: seed of the private RNG stream the attacks run under.
        on_error: ``"warn"`` (default: a point that fails is skipped with one warning per kind of error;
            training never stops because of the monitor) or ``"raise"`` (the error stops training).
        name: the prefix of the tags. A second RobustnessMonitor in the same Trainer (another norm or
            budget) needs its own; Lightning refuses two with the same name, as their histories would share
            one key in a checkpoint.

    Example:
        >>> import lightning as L
        >>> from lightning_xai import RobustnessMonitor
        >>> probe = (torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
        >>> trainer = L.Trainer(callbacks=[RobustnessMonitor(probe, epsilon=0.03)])
    """

    default_name = "robustness"

    def __init__(
        self,
        probe: tuple[Tensor, Tensor],
        epsilon: float = 0.03,
        norm: str = "Linf",
        pgd_steps: int = 5,
        pgd_step_size: float | None = None,
        lower_bound: float = -math.inf,
        upper_bound: float = math.inf,
        max_epsilon: float | None = None,
        every_n_epochs: int = 1,
        log_at_start: bool = True,
        seed: int = 0,
        on_error: OnError = "warn",
        name: str = "robustness",
    ) -> None:
        self.name = tag_prefix("RobustnessMonitor", name)
        self.probe = labelled_probe(probe, "RobustnessMonitor")
        if self.probe[1].dim() != 1 or self.probe[1].is_floating_point():
            raise MisconfigurationException(
                f"RobustnessMonitor: probe labels must be class indices (N,), got {tuple(self.probe[1].shape)} "
                f"{self.probe[1].dtype}"
            )
        for name, value in (("epsilon", epsilon), ("pgd_step_size", pgd_step_size), ("max_epsilon", max_epsilon)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise MisconfigurationException(f"RobustnessMonitor: {name} must be a number >= 0, got {value!r}")
        if norm not in ("Linf", "L2"):
            raise MisconfigurationException(f"RobustnessMonitor: norm must be 'Linf' or 'L2', got {norm!r}")
        for name, count in (("pgd_steps", pgd_steps), ("every_n_epochs", every_n_epochs)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise MisconfigurationException(f"RobustnessMonitor: {name} must be a positive int, got {count!r}")
        if not lower_bound < upper_bound:
            raise MisconfigurationException(
                f"RobustnessMonitor: lower_bound ({lower_bound}) must be below upper_bound ({upper_bound})"
            )
        self.budget = AttackBudget(
            float(epsilon),
            norm,
            pgd_steps,
            pgd_step_size,
            float(lower_bound),
            float(upper_bound),
            float(8 * epsilon if max_epsilon is None else max_epsilon),
        )
        self.every_n_epochs = every_n_epochs
        self.log_at_start = log_at_start
        self.seed = seed
        check_literal(on_error, "on_error", OnError)
        self.on_error = on_error
        self.history: list[dict[str, Any]] = []
        self._warned = False

    @override
    def measure(self, trainer: pl.Trainer, model: pl.LightningModule) -> None:
        start = time.perf_counter()
        inputs, labels = (t.to(model.device) for t in self.probe)

        def forward(x: Tensor) -> Tensor:
            return scores_of(model(x))

        with torch.inference_mode(False), torch.enable_grad(), untouched_training_state(model, self.seed):
            values = robustness_values(forward, inputs, labels, self.budget)
        if "fgsm_success" not in values and not self._warned:
            self._warned = True
            rank_zero_warn(
                f"RobustnessMonitor: the model gets no probe example right at step {trainer.global_step}, so no "
                f"attack success rate is defined there (only {self.name}/probe_accuracy is logged); this is "
                "expected early in training"
            )
        values["seconds"] = time.perf_counter() - start
        metrics = {f"{self.name}/{name}": value for name, value in values.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self.history.append({"step": trainer.global_step, "epoch": trainer.current_epoch, **values})

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
