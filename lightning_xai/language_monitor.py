"""LanguageModelMonitor: token attributions of a causal LM's answers to fixed prompts while it is fine-tuned; and
PromptAttributionCheck, which acts when the share of attribution on watched prompt tokens crosses a bound."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor
from typing_extensions import override

from lightning_xai._compute.explain import untouched_training_state
from lightning_xai._compute.prompt_attribution import (
    PreparedPrompt,
    PromptPoint,
    attribute_prompts,
    cosine,
    language_model,
    prepared_prompts,
)
from lightning_xai._config.arguments import check_literal, tag_prefix
from lightning_xai._config.choices import Direction, OnError, OnFail
from lightning_xai._config.prompts import PromptMethod, prompt_pairs
from lightning_xai._draw.token_text import PromptRows, point_html, token_sheet
from lightning_xai._write.image_sinks import image_sinks
from lightning_xai._write.picture import Picture
from lightning_xai._write.prompt_tables import write_prompt_tables
from lightning_xai._write.writers import default_artifact_dir
from lightning_xai.epoch_points import EpochPoints
from lightning_xai.regression import ThresholdCheck, finite_threshold

__all__ = ["LanguageModelMonitor", "PromptAttributionCheck"]

PREFIX = "llm"
"""Every tag of the monitor starts with its name, this by default."""


class LanguageModelMonitor(EpochPoints):
    """Token attributions of a causal language model's continuations of fixed prompts, at every logged point of a
    fine-tune: which prompt tokens the model answers from, and how that changes as the loss falls.

    The probe is a list of ``(prompt, target)`` pairs, or ``(prompt, target, mask)`` where ``mask`` marks the
    prompt tokens to watch (token strings, e.g. ``["apple"]``, or one 0/1 flag per prompt token).  At each
    point (before the first step, and at the end of every ``every_n_epochs``-th epoch) each target's
    log-probability is attributed to the prompt's tokens with ``LLMAttribution(FeatureAblation)`` (one forward
    per prompt token: a token's attribution is how much the log-probability drops when it becomes the baseline
    token) or, with ``method="layer_integrated_gradients"``, ``LLMGradientAttribution(LayerIntegratedGradients)``
    on the input embeddings. It logs, at the trainer's ``global_step``:

    - ``llm/tokens`` (images tab): every prompt as coloured text, green where a token raises the target's
      log-probability and red where it lowers it (watched tokens in brackets), and with ``per_token=True`` a
      line per target token;
    - ``llm/attributions`` (TensorBoard's text tab; a table for W&B and MLflow): per prompt a table of the
      attributions, a row for the whole target and with ``per_token`` one per target token;
    - ``llm/log_prob/prompt_<i>`` and ``llm/log_prob/mean``: the targets' log-probabilities;
    - ``llm/similarity_previous``: the mean over prompts of the cosine similarity of the attributions to the
      previous point's (from the second point on): how fast the explanations still move;
    - ``llm/mask_share/prompt_<i>`` and ``llm/mask_share/mean`` for prompts with a mask: the share of absolute
      attribution on the watched tokens (what :class:`PromptAttributionCheck` reads);
    - ``llm/seconds``: the point's cost.

    The Hugging Face model is found in the LightningModule (the first ``PreTrainedModel`` among its modules,
    also under a PEFT wrapper, whose adapters are then part of what is explained) or named by ``model_attr``.
    Attribution runs in eval mode, in float32 without autocast (also under ``precision="bf16-mixed"``), on a
    forked and seeded RNG; each module's training flag is restored, ``param.grad`` and ``requires_grad`` are
    never touched and no hook is left: training with the monitor gives the same weights as without.

    Args:
        probe: the ``(prompt, target[, mask])`` pairs.
        tokenizer: the model's tokenizer (Hugging Face style: ``encode``, ``decode``, ``convert_ids_to_tokens``).
        method: ``"feature_ablation"`` or ``"layer_integrated_gradients"``.
        method_options: passed to the attribution call, e.g. ``{"n_steps": 16}`` for integrated gradients.
        model_attr: the dotted attribute of the LightningModule that holds the language model; default: found.
        baseline: the token an ablated prompt token becomes (id or token string); default the tokenizer's
            unknown, padding or end-of-text token.
        per_token: also show and tabulate the attribution to each target token.
        every_n_epochs: measure at the end of every n-th epoch.
        log_at_start: also measure before the first step.
        seed: seed of the private RNG stream.
        on_error: ``"warn"`` (default: a point that fails is skipped with one warning per kind of error;
            training never stops because of the monitor) or ``"raise"`` (the error stops training).
        name: the prefix of the tags (``llm`` above). A second LanguageModelMonitor in the same Trainer (e.g.
            another method) needs its own; two with the same name are refused at fit start.

    Example::

        from lightning_xai import LanguageModelMonitor, PromptAttributionCheck

        probe = [("the colour of the apple is", "red", ["apple"]), ("the colour of the sky is", "blue", ["sky"])]
        monitor = LanguageModelMonitor(probe, tokenizer, per_token=True)  # the model's tokenizer
        trainer = L.Trainer(callbacks=[monitor, PromptAttributionCheck(0.5, on_fail="stop")])
    """

    default_name = PREFIX

    def __init__(
        self,
        probe: Sequence[tuple[str, str] | tuple[str, str, Any]],
        tokenizer: Any,
        method: PromptMethod = "feature_ablation",
        method_options: Mapping[str, Any] | None = None,
        model_attr: str | None = None,
        baseline: int | str | None = None,
        per_token: bool = False,
        every_n_epochs: int = 1,
        log_at_start: bool = True,
        seed: int = 0,
        on_error: OnError = "warn",
        name: str = PREFIX,
    ) -> None:
        owner = "LanguageModelMonitor"
        self.name = tag_prefix(owner, name)
        self.pairs = prompt_pairs(probe, owner)
        missing = [
            name
            for name in ("encode", "decode", "convert_ids_to_tokens")
            if not callable(getattr(tokenizer, name, None))
        ]
        if missing:
            raise MisconfigurationException(
                f"{owner}: tokenizer must be the model's tokenizer (with encode, decode and convert_ids_to_tokens), "
                f"got {type(tokenizer).__name__} without {missing}"
            )
        check_literal(method, "method", PromptMethod)
        if method_options is not None and not isinstance(method_options, Mapping):
            raise MisconfigurationException(
                f"{owner}: method_options must be a dict of attribute() options, got {method_options!r}"
            )
        if model_attr is not None and (not isinstance(model_attr, str) or not model_attr):
            raise MisconfigurationException(
                f"{owner}: model_attr must be an attribute name or None, got {model_attr!r}"
            )
        if baseline is not None and (isinstance(baseline, bool) or not isinstance(baseline, (int, str))):
            raise MisconfigurationException(
                f"{owner}: baseline must be a token id, a token string or None, got {baseline!r}"
            )
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise MisconfigurationException(f"{owner}: every_n_epochs must be a positive int, got {every_n_epochs!r}")
        self.tokenizer = tokenizer
        self.method: PromptMethod = method
        self.method_options = dict(method_options or {})
        self.model_attr = model_attr
        self.baseline = baseline
        self.per_token = bool(per_token)
        self.every_n_epochs = every_n_epochs
        self.log_at_start = bool(log_at_start)
        self.seed = seed
        check_literal(on_error, "on_error", OnError)
        self.on_error = on_error
        self.history: list[dict[str, Any]] = []
        self.attributions: dict[int, list[Tensor]] = {}
        """``step -> [seq_attr of each prompt]``, the points kept for the drift and for reading back."""
        self._prompts: list[PreparedPrompt] | None = None

    @property
    def has_masks(self) -> bool:
        """Whether some probe entry marks tokens to watch."""
        return any(pair.mask is not None for pair in self.pairs)

    @property
    @override
    def state_key(self) -> str:
        named = {} if self.name == self.default_name else {"name": self.name}  # the default: keys before names
        return self._generate_state_key(
            method=self.method, model_attr=self.model_attr, probe=[(p.prompt, p.target) for p in self.pairs], **named
        )

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        try:
            model = language_model(pl_module, self.model_attr)
            if self.method == "layer_integrated_gradients" and not callable(
                getattr(model, "get_input_embeddings", None)
            ):
                raise ValueError(
                    f"method: 'layer_integrated_gradients' needs the model's get_input_embeddings(); "
                    f"{type(model).__name__} has none (use 'feature_ablation')"
                )
            self._prompts = prepared_prompts(self.pairs, self.tokenizer, self.baseline)
        except ValueError as error:
            raise MisconfigurationException(f"LanguageModelMonitor: {error}") from error

    def attribute(self, pl_module: pl.LightningModule) -> PromptPoint:
        """The probe's attributions and log-probabilities for the module's current weights, computed as at a
        logged point (eval mode, float32, private RNG; nothing of training changes)."""
        if self._prompts is None:
            self._prompts = prepared_prompts(self.pairs, self.tokenizer, self.baseline)
        model = language_model(pl_module, self.model_attr)
        with torch.inference_mode(False), torch.enable_grad(), untouched_training_state(pl_module, self.seed):
            return attribute_prompts(model, self.tokenizer, self._prompts, self.method, self.method_options)

    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        point = self.attribute(pl_module)
        step, epoch = trainer.global_step, trainer.current_epoch
        metrics = self._metrics(point, step)
        metrics[f"{self.name}/seconds"] = time.perf_counter() - start
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        self.attributions[step] = point.seq_attr()
        self.history.append(
            {"step": step, "epoch": epoch, **{k.removeprefix(f"{self.name}/"): v for k, v in metrics.items()}}
        )
        # Trainer.log_dir is a broadcast under DDP: every process asks, only rank zero writes.
        directory = default_artifact_dir(trainer)
        if trainer.is_global_zero:
            self._show(trainer, point, step, epoch, directory)
        for callback in trainer.callbacks:  # type: ignore[attr-defined]  # Lightning sets it undeclared
            if isinstance(callback, PromptAttributionCheck) and callback.monitor is self:
                callback.check(trainer, step, epoch)

    def _metrics(self, point: PromptPoint, step: int) -> dict[str, float]:
        metrics = {f"{self.name}/log_prob/prompt_{i}": float(v) for i, v in enumerate(point.log_probs)}
        metrics[f"{self.name}/log_prob/mean"] = float(point.log_probs.mean())
        shares = {i: s for i, s in enumerate(point.shares) if s is not None}
        metrics.update({f"{self.name}/mask_share/prompt_{i}": s for i, s in shares.items()})
        if shares:
            metrics[f"{self.name}/mask_share/mean"] = sum(shares.values()) / len(shares)
        earlier = [s for s in self.attributions if s < step]
        if earlier:
            previous = self.attributions[max(earlier)]
            similarities = [cosine(a, b) for a, b in zip(point.seq_attr(), previous)]
            metrics[f"{self.name}/similarity_previous"] = sum(similarities) / len(similarities)
        return metrics

    def _show(self, trainer: pl.Trainer, point: PromptPoint, step: int, epoch: int, directory: Path) -> None:
        assert self._prompts is not None
        rows = [
            PromptRows(
                tokens=[_readable(t) for t in result.input_tokens],
                target=list(result.output_tokens),
                seq_attr=result.seq_attr.detach().float().cpu(),
                token_attr=None if result.token_attr is None else result.token_attr.detach().float().cpu(),
                log_prob=float(point.log_probs[i]),
                share=point.shares[i],
                mask=prompt.mask,
            )
            for i, (result, prompt) in enumerate(zip(point.results, self._prompts))
        ]
        picture = Picture(token_sheet(rows, self.per_token))
        for sink in image_sinks(trainer, directory):
            sink.write(f"{self.name}/tokens", picture, step, f"token attributions at step {step} (epoch {epoch})")
        title = (
            f"Token attributions ({self.method}) of each target's log-probability at step {step} (epoch {epoch}); "
            "bold: the largest magnitude of a row, italics: watched tokens"
        )
        columns = ["prompt", "target", "token", "position", "attribution", "watched"]
        table = [
            [
                i,
                " ".join(r.target),
                token,
                j,
                round(float(r.seq_attr[j]), 6),
                bool(r.mask[j]) if r.mask is not None else False,
            ]
            for i, r in enumerate(rows)
            for j, token in enumerate(r.tokens)
        ]
        write_prompt_tables(
            trainer, f"{self.name}/attributions", point_html(rows, self.per_token, title), columns, table, step, title
        )

    def value(self, step: int, prompt: int | None) -> float | None:
        """The mask share logged at ``step``: of probe entry ``prompt``, or the mean (None); None if not logged."""
        key = "mask_share/mean" if prompt is None else f"mask_share/prompt_{prompt}"
        for record in self.history:
            if record["step"] == step:
                return record.get(key)
        return None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "attributions": {step: [a.tolist() for a in attrs] for step, attrs in self.attributions.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.attributions = {
            int(step): [torch.tensor(a) for a in attrs] for step, attrs in state_dict.get("attributions", {}).items()
        }


def _readable(token: str) -> str:
    """A token as shown: without the word-start markers of byte-level and sentencepiece vocabularies."""
    return token.replace("Ġ", " ").replace("▁", " ").strip() or token


class PromptAttributionCheck(ThresholdCheck):
    """Warn, stop or fail training when the share of attribution on the watched prompt tokens crosses a
    threshold: e.g. when a fine-tune stops answering from the instruction's key word
    (``direction="above"``, the default: the share must stay at or above ``threshold``) or starts answering
    from a token that should not matter (mark that token, ``direction="below"``).

    Reads the :class:`LanguageModelMonitor` of the same trainer right after each of its points (the point
    before the first step is not checked): the mean share over the probe entries with a mask, or one entry's
    (``prompt``). Under DDP the decision is agreed across processes.

    Args:
        threshold: the bound, a share in [0, 1].
        direction: ``"above"`` (default) or ``"below"``: the side the share must stay on.
        prompt: the probe entry to watch; default the mean over entries with a mask.
        patience: violations in a row tolerated before acting.
        start_epoch: first epoch whose points are checked.
        on_fail: ``"warn"``, ``"stop"`` or ``"raise"`` (:class:`~lightning_xai.AttributionRegressionError`).
        monitor_name: the ``name`` of the LanguageModelMonitor to read, when the Trainer has several.

    Example:
        >>> check = PromptAttributionCheck(0.5, on_fail="stop")
    """

    def __init__(
        self,
        threshold: float,
        direction: Direction = "above",
        prompt: int | None = None,
        patience: int = 0,
        start_epoch: int = 0,
        on_fail: OnFail = "warn",
        monitor_name: str | None = None,
    ) -> None:
        super().__init__(patience, start_epoch, on_fail)
        self.monitor_name = None if monitor_name is None else tag_prefix("PromptAttributionCheck", monitor_name)
        self.threshold: float = finite_threshold(threshold)
        if not 0 <= self.threshold <= 1:
            raise MisconfigurationException(f"threshold: expected a share in [0, 1], got {threshold!r}")
        check_literal(direction, "direction", Direction)
        if prompt is not None and (isinstance(prompt, bool) or not isinstance(prompt, int) or prompt < 0):
            raise MisconfigurationException(f"prompt: expected a probe index >= 0 or None, got {prompt!r}")
        self.direction: Direction = direction
        self.prompt = prompt
        self.monitor: LanguageModelMonitor | None = None

    def _scalar(self, prefix: str) -> str:
        return f"{prefix}/mask_share/" + ("mean" if self.prompt is None else f"prompt_{self.prompt}")

    @property
    def name(self) -> str:
        """The scalar the check reads, as logged (under the monitor's name, known when fit starts)."""
        return self._scalar(self.monitor.name if self.monitor is not None else self.monitor_name or PREFIX)

    @property
    @override
    def state_key(self) -> str:  # fixed from construction on: Lightning reads it before fit starts
        scalar = self._scalar(self.monitor_name or PREFIX)
        return self._generate_state_key(name=scalar, threshold=self.threshold, direction=self.direction)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        monitors = [c for c in trainer.callbacks if isinstance(c, LanguageModelMonitor)]  # type: ignore[attr-defined]
        if not monitors:
            raise MisconfigurationException(
                "PromptAttributionCheck reads the mask shares of a LanguageModelMonitor; add one to the callbacks"
            )
        named = [m for m in monitors if self.monitor_name in (None, m.name)]
        if len(named) != 1:
            raise MisconfigurationException(
                "monitor_name: expected the name of the LanguageModelMonitor to read among "
                f"{[m.name for m in monitors]}, got {self.monitor_name!r}"
            )
        monitor = named[0]
        if self.prompt is not None and self.prompt >= len(monitor.pairs):
            raise MisconfigurationException(
                f"prompt: expected an index below the probe's {len(monitor.pairs)} entries, got {self.prompt}"
            )
        masked = (
            self.prompt is None
            and monitor.has_masks
            or (self.prompt is not None and monitor.pairs[self.prompt].mask is not None)
        )
        if not masked:
            where = "no probe entry" if self.prompt is None else f"probe entry {self.prompt}"
            raise MisconfigurationException(
                f"PromptAttributionCheck: {where} of the LanguageModelMonitor has a mask; give entries as "
                "(prompt, target, mask) with the tokens to watch"
            )
        self.monitor = monitor

    def check(self, trainer: pl.Trainer, step: int, epoch: int) -> None:
        """Check the share the monitor logged at ``step`` (called on every rank at every point)."""
        assert self.monitor is not None
        value = self.monitor.value(step, self.prompt) if epoch >= self.start_epoch and step > 0 else None
        if value is not None:
            violated = value < self.threshold if self.direction == "above" else value > self.threshold
            self._record(step, epoch, value, violated)
        shown = "another process's value" if value is None else f"{value:.3f}"
        side = "below" if self.direction == "above" else "above"
        message = (
            f"PromptAttributionCheck: {self.name} = {shown} at step {step} (epoch {epoch}) is {side} the "
            f"threshold {self.threshold:g}"
        )
        self._vote(trainer, value is not None and self.violations > self.patience, message)
