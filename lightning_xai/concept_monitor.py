"""ConceptMonitor: TCAV scores of named concepts over training, a shortcut detector that needs a few concept
examples instead of per-pixel masks; and ConceptRegressionCheck, which acts when a score crosses a bound."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor
from typing_extensions import override

from lightning_xai._compute.concept_examples import ConceptSource, concept_examples, random_sets
from lightning_xai._compute.concepts import ConceptScore, concept_scores
from lightning_xai._compute.explain import untouched_training_state
from lightning_xai._config.arguments import check_literal, labelled_probe, tag_prefix
from lightning_xai._config.choices import Direction, OnError, OnFail
from lightning_xai._write.table_sinks import table_sinks
from lightning_xai.epoch_points import EpochPoints
from lightning_xai.regression import ThresholdCheck, finite_threshold

__all__ = ["ConceptMonitor", "ConceptRegressionCheck"]


def score_name(score: ConceptScore) -> str:
    """``<concept>/<layer>/class_<target>``: the name a score is logged under (after the monitor's name)."""
    return f"{score.concept}/{score.layer}/class_{score.target}"


class ConceptMonitor(EpochPoints):
    """TCAV (Kim et al., 2018) at every logged point of training: is the model relying on a concept, given
    only examples of it? A concept's activation vector (CAV) separates, at a layer, the activations of its
    examples from those of random counter-examples; its TCAV score for a class is the share of the probe's
    examples of that class whose class score rises along it. A score near 1 (or 0) that differs
    significantly from the scores of random directions says that the class prediction uses the concept;
    watching it over training catches a shortcut as it is learned, with no masks.

    At each point (before the first step, and at the end of every ``every_n_epochs``-th epoch) the CAVs are
    trained afresh on the current model, and it logs to every logger, at the trainer's ``global_step``,
    under ``name`` (``concept`` by default):

    - ``concept/<concept>/<layer>/class_<c>``: the TCAV score (``sign_count``), the mean over
      ``num_random_sets`` CAVs, each against another random set;
    - ``concept/<concept>/<layer>/class_<c>/p_value``: two-sided t-test of those scores against the scores
      of a random set in the concept's place (the significance test of Kim et al.);
    - ``concept/seconds``: the point's cost;

    and a table of all of them with their significance at level ``alpha`` (``concept/scores``) to
    TensorBoard's text tab, W&B and MLflow.

    The CAVs are computed in eval mode on a forked RNG, with hooks removed afterwards and gradients taken for
    the layers' activations only: training is unchanged. Cost per point: one forward of every concept and
    random example, ``len(concepts) * num_random_sets + num_random_sets`` small linear classifiers per layer,
    and a forward and backward of the probe per target class.

    Args:
        concepts: ``name -> examples``: a tensor ``(N, ...)`` of model inputs, a dataset, or a folder of
            images (see ``transform``).
        random: counter-examples (same forms), split into ``num_random_sets + 1`` disjoint random sets.
        layers: the dotted name(s) of the layers whose activations the CAVs live in.
        probe: ``(inputs, labels)``: the examples whose class scores are differentiated.
        targets: the classes to score; default every class in the probe's labels.
        num_random_sets: CAVs per concept (each against another random set).
        alpha: the significance level shown in the table.
        every_n_epochs: measure at the end of every n-th epoch.
        log_at_start: also measure the untrained model.
        batch_size: examples per forward pass.
        transform: applied to each example read from a folder or dataset (e.g. resize and normalise).
        input_key: the input's key in dict items of a dataset.
        seed: seed of the random sets' split and of the private RNG stream.
        on_error: ``"warn"`` (default: a point that fails is skipped with one warning per kind of error;
            training never stops because of the monitor) or ``"raise"`` (the error stops training).
        name: the prefix of the tags. A second ConceptMonitor in the same Trainer (other concepts, or a
            costlier one every few epochs) needs its own; Lightning refuses two with the same name, as their
            histories would share one key in a checkpoint.

    Example:
        >>> import lightning as L
        >>> from lightning_xai import ConceptMonitor
        >>> stripes, noise = torch.randn(20, 3, 32, 32), torch.randn(50, 3, 32, 32)
        >>> probe = (torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,)))
        >>> monitor = ConceptMonitor({"stripes": stripes}, noise, layers="features.4", probe=probe)
        >>> trainer = L.Trainer(callbacks=[monitor])
    """

    default_name = "concept"

    def __init__(
        self,
        concepts: Mapping[str, ConceptSource],
        random: ConceptSource,
        layers: str | Sequence[str],
        probe: tuple[Tensor, Tensor],
        targets: Sequence[int] | None = None,
        num_random_sets: int = 4,
        alpha: float = 0.05,
        every_n_epochs: int = 1,
        log_at_start: bool = True,
        batch_size: int = 64,
        transform: Callable[[Tensor], Tensor] | None = None,
        input_key: str = "input",
        seed: int = 0,
        on_error: OnError = "warn",
        name: str = "concept",
    ) -> None:
        self.name = tag_prefix("ConceptMonitor", name)
        if not isinstance(concepts, Mapping) or not concepts:
            raise MisconfigurationException(
                f"ConceptMonitor: concepts must be a non-empty mapping name -> examples, got {type(concepts).__name__}"
            )
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers or not all(isinstance(name, str) for name in self.layers):
            raise MisconfigurationException(
                f"ConceptMonitor: layers must be a layer name or a list of them, got {layers!r}"
            )
        for name, value in (
            ("num_random_sets", num_random_sets),
            ("every_n_epochs", every_n_epochs),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MisconfigurationException(f"ConceptMonitor: {name} must be a positive int, got {value!r}")
        if num_random_sets < 2:
            raise MisconfigurationException(
                f"ConceptMonitor: num_random_sets must be at least 2 for the t-test, got {num_random_sets}"
            )
        if not 0 < alpha < 1:
            raise MisconfigurationException(f"ConceptMonitor: alpha must be in (0, 1), got {alpha!r}")
        self.probe = labelled_probe(probe, "ConceptMonitor")
        try:
            self.concepts = {str(n): concept_examples(s, str(n), input_key, transform) for n, s in concepts.items()}
            pool = concept_examples(random, "random", input_key, transform)
            self.randoms = random_sets(pool, num_random_sets + 1, seed)
        except ValueError as error:
            raise MisconfigurationException(f"ConceptMonitor: {error}") from error
        shapes = {tuple(x.shape[1:]) for x in [*self.concepts.values(), *self.randoms, self.probe[0]]}
        if len(shapes) > 1:
            raise MisconfigurationException(
                "ConceptMonitor: concept, random and probe examples must have the model's input shape; got "
                f"{sorted(shapes)}"
            )
        classes = sorted({int(c) for c in self.probe[1].tolist()})
        self.targets = classes if targets is None else [int(t) for t in targets]
        missing = sorted(set(self.targets) - set(classes))
        if missing:
            raise MisconfigurationException(
                f"ConceptMonitor: targets {missing} have no example in the probe (its classes are {classes})"
            )
        self.alpha = float(alpha)
        self.every_n_epochs = every_n_epochs
        self.log_at_start = log_at_start
        self.batch_size = batch_size
        self.seed = seed
        check_literal(on_error, "on_error", OnError)
        self.on_error = on_error
        self.history: list[dict[str, Any]] = []

    def value(self, name: str, step: int) -> tuple[float, float] | None:
        """``(score, p_value)`` of ``<concept>/<layer>/class_<c>`` logged at ``step``; None if not logged."""
        for record in self.history:
            if record["step"] == step and record["name"] == name:
                return record["score"], record["p_value"]
        return None

    @property
    def names(self) -> list[str]:
        """Every ``<concept>/<layer>/class_<c>`` this monitor logs."""
        return [f"{c}/{layer}/class_{t}" for c in self.concepts for layer in self.layers for t in self.targets]

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            modules = dict(pl_module.named_modules())
            unknown = [name for name in self.layers if name not in modules]
            if unknown:
                raise MisconfigurationException(
                    f"ConceptMonitor: layers {unknown} are not in the model; its layers are "
                    f"{[n for n in modules if n][:30]}"
                )

    @override
    def measure(self, trainer: pl.Trainer, model: pl.LightningModule) -> None:
        start = time.perf_counter()
        device = model.device
        concepts = {name: x.to(device) for name, x in self.concepts.items()}
        randoms = [x.to(device) for x in self.randoms]
        inputs, labels = (t.to(device) for t in self.probe)
        with torch.inference_mode(False), untouched_training_state(model, self.seed):
            scores = concept_scores(
                model, self.layers, concepts, randoms, inputs, labels, self.targets, self.batch_size
            )
        step, epoch = trainer.global_step, trainer.current_epoch
        metrics: dict[str, float] = {f"{self.name}/seconds": time.perf_counter() - start}
        rows = []
        for score in scores:
            name = score_name(score)
            metrics[f"{self.name}/{name}"] = score.score
            metrics[f"{self.name}/{name}/p_value"] = score.p_value
            self.history.append(
                {"step": step, "epoch": epoch, "name": name, "score": score.score, "p_value": score.p_value}
            )
            significant = "yes" if score.p_value < self.alpha else "no"
            rows.append(
                [score.concept, score.layer, score.target, f"{score.score:.3f}", f"{score.p_value:.3g}", significant]
            )
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if trainer.is_global_zero:
            title = (
                f"TCAV scores at step {step} (epoch {epoch}), each the mean over {len(self.randoms) - 1} random sets; "
                f"significant: p < {self.alpha:g} against random directions"
            )
            columns = ["concept", "layer", "class", "TCAV", "p-value", "significant"]
            for sink in table_sinks(trainer):
                sink.write(f"{self.name}/scores", columns, rows, step, title)
        for callback in trainer.callbacks:  # type: ignore[attr-defined]  # Lightning sets it undeclared
            if isinstance(callback, ConceptRegressionCheck) and callback.monitor is self:
                callback.check(trainer, step, epoch)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


class ConceptRegressionCheck(ThresholdCheck):
    """Warn, stop or fail training when a concept's TCAV score crosses a threshold, e.g. when the model
    starts to use a known shortcut (``direction="below"``: the score must stay at or below it) or stops using
    the concept it should (``"above"``).

    Reads the :class:`ConceptMonitor` of the same trainer right after each of its points. With
    ``significant_only`` (default) a score whose p-value is not below the monitor's ``alpha`` never counts
    as a violation: random directions score like that too. Under DDP the decision is agreed across
    processes.

    Args:
        name: ``"<concept>/<layer>/class_<c>"``, as logged under the monitor's name (``concept/``); with
            several ConceptMonitors that log it, prefixed with the name of the one to read.
        threshold: the bound.
        direction: ``"below"`` (default) or ``"above"``: the side the score must stay on.
        significant_only: only significant scores can violate.
        patience: violations in a row tolerated before acting.
        start_epoch: first epoch whose points are checked.
        on_fail: ``"warn"``, ``"stop"`` or ``"raise"`` (:class:`~lightning_xai.AttributionRegressionError`).

    Example:
        >>> check = ConceptRegressionCheck("mark/features.4/class_0", 0.8, on_fail="stop")
    """

    def __init__(
        self,
        name: str,
        threshold: float,
        direction: Direction = "below",
        significant_only: bool = True,
        patience: int = 0,
        start_epoch: int = 0,
        on_fail: OnFail = "warn",
    ) -> None:
        super().__init__(patience, start_epoch, on_fail)
        if not isinstance(name, str) or name.count("/") < 2 or "/class_" not in name:
            raise MisconfigurationException(
                f"name: expected '<concept>/<layer>/class_<c>' as logged under concept/, got {name!r}"
            )
        check_literal(direction, "direction", Direction)
        self.name = name
        self.score_name = name  # the score, without the monitor's prefix: known in setup
        self.threshold: float = finite_threshold(threshold)
        self.direction: Direction = direction
        self.significant_only = significant_only
        self.monitor: ConceptMonitor | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, threshold=self.threshold, direction=self.direction)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        monitors = [c for c in trainer.callbacks if isinstance(c, ConceptMonitor)]  # type: ignore[attr-defined]
        reading = [(m, score) for m in monitors for score in m.names if self.name in (score, f"{m.name}/{score}")]
        if not reading:
            logged = [f"{m.name}/{score}" for m in monitors for score in m.names]
            raise MisconfigurationException(
                f"ConceptRegressionCheck: no ConceptMonitor logs {self.name!r}"
                + (f"; they log {logged}" if logged else "; add one to the callbacks")
            )
        if len(reading) > 1:
            raise MisconfigurationException(
                f"ConceptRegressionCheck: {len(reading)} ConceptMonitors log {self.name!r} (named "
                f"{[m.name for m, _ in reading]}); prefix the name with the one to read, e.g. "
                f"{reading[-1][0].name + '/' + reading[-1][1]!r}"
            )
        self.monitor, self.score_name = reading[0]

    def check(self, trainer: pl.Trainer, step: int, epoch: int) -> None:
        """Check the score the monitor logged at ``step`` (called on every rank at every point)."""
        assert self.monitor is not None
        found = self.monitor.value(self.score_name, step) if epoch >= self.start_epoch and step > 0 else None
        if found is not None:
            score, p_value = found
            beyond = score > self.threshold if self.direction == "below" else score < self.threshold
            significant = p_value < self.monitor.alpha
            self._record(step, epoch, score, beyond and (significant or not self.significant_only))
        shown = "another process's value" if found is None else f"{found[0]:.3f} (p = {found[1]:.2g})"
        side = "above" if self.direction == "below" else "below"
        message = (
            f"ConceptRegressionCheck: {self.monitor.name}/{self.score_name} = {shown} at step {step} (epoch {epoch}) "
            f"is {side} the threshold {self.threshold:g}"
        )
        self._vote(trainer, found is not None and self.violations > self.patience, message)
