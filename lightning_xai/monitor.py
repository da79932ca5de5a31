"""AttributionMonitor: explanations of a fixed probe batch, logged at epoch ends."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from attribution import registry
from attribution.utils import resolve_layer
from lightning_xai import _arguments, _render, _tags
from lightning_xai._drift import DriftTracker, Golden, load_golden, save_golden
from lightning_xai._explain import Explanation, Subject, explain, resolve_targets, untouched_training_state
from lightning_xai._model import LayerChoice, choose_layer, inspect_model
from lightning_xai._probe import Probe, probe_from_value, select_probe, validation_dataloader
from lightning_xai._visuals import Visuals
from lightning_xai._writers import MAP_DTYPE, ExplanationWriter

SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy", "XLAFSDPStrategy")
GRADCAM_METHODS = ("layer_gradcam", "guided_gradcam")


class AttributionMonitorError(RuntimeError):
    """A failure of the monitor with ``on_error="raise"``: says what failed, at which epoch, on which probe."""


class AttributionMonitor(Callback):
    """Explain a fixed probe batch at epoch ends and log the maps, overlays and metrics.

    Each logged epoch writes, per method, a grid of the probe images with the
    attribution heat map overlaid (``xai/<method>``), a filmstrip per probe
    sample with one column per logged epoch (``xai_filmstrip/<method>/<i>``,
    written every five logged epochs and at the end of fit),
    scalars ``xai/<method>/<metric>`` (infidelity, sensitivity, IG convergence
    delta, attribution mass inside ground-truth masks when the data has them)
    and, beside the logs, the maps as float16 ``.pt`` files with a
    ``manifest.json``.  Training is not affected: modes, gradients, hooks and
    the global RNG are left as they were.

    Args:
        methods: registry names (``attribution.registry.available()``), or a
            mapping from name to ``attribute`` options, e.g.
            ``{"integrated_gradients": {"n_steps": 64}}``.
        layer: dotted name of the layer for layer methods and GradCAM; by
            default the model's last convolution, or for a transformer the last
            block (its tokens are laid out on the patch grid for GradCAM).
        gradcam: also log layer GradCAM on ``layer`` for image inputs, when
            the layer's output can be read as a spatial map.
        probe: explicit probe: a tensor, ``(inputs, labels[, masks])`` or a
            dict batch; by default ``num_probe_samples`` examples are taken
            from the first validation dataloader, covering the classes.
        num_probe_samples: size of the default probe.
        target: ``"pred"`` (the model's current prediction), ``"label"`` or
            a class index.
        every_n_epochs: log every n-th epoch (epochs ``n - 1``, ``2n - 1``, ...).
        metrics: any of ``"infidelity"`` and ``"sensitivity"`` (each costs a
            few extra passes of the method).
        display_mean: per-channel mean to undo for the overlays.
        display_std: per-channel std to undo for the overlays.
        artifact_dir: where maps and manifest go; default ``<log_dir>/xai``.
        on_error: ``"warn"`` (default: training never dies because of the
            monitor) or ``"raise"``.
        seed: seed of the monitor's private RNG stream (noisy methods, metrics).
        similarity: how drift is measured between two epochs' maps, one of
            ``attribution.metrics.SIMILARITY_MEASURES`` (default Spearman rank
            correlation of the magnitudes); logged as
            ``xai/<method>/similarity_previous`` and ``similarity_reference``.
        reference: what ``similarity_reference`` compares with: None (the
            first logged epoch), an epoch of this run, or the path of a golden
            reference saved by an earlier run with ``save_reference`` (its
            probe is then used, and epochs are compared one to one).
        save_reference: write a golden reference file here at the end of fit.
        token_names: for token inputs (integer ``(N, T)``), the word of each
            token id; token attributions (e.g. ``layer_integrated_gradients`` on
            the embedding layer) are then logged as coloured text
            (``xai_text/<method>``).
        input_key: in dict batches, the key of the tensor to explain (default:
            the first of ``image``, ``images``, ``pixel_values``, ``input_ids``,
            ...). The batch's other tensors that the model's ``forward`` takes
            by name (``attention_mask``, ``token_type_ids``, ...) are passed
            along unchanged.
        output_transform: from the model's output to ``(N, C)`` class scores;
            by default the scores are found in a tensor, a tuple (first), a
            dict (``"logits"``, then ``"out"``) or a Hugging Face output
            (``.logits``). A segmentation map ``(N, C, H, W)`` is explained as
            each class's score summed over the pixels (over the probe's masks
            when it has them); a single logit ``(N,)`` or ``(N, 1)`` as a binary
            classifier (class 1 explains the logit, class 0 its negation).
            See :mod:`attribution.outputs`.

    Example:
        >>> trainer = L.Trainer(callbacks=[AttributionMonitor(["integrated_gradients", "occlusion"])])  # doctest: +SKIP
    """

    def __init__(
        self,
        methods: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("integrated_gradients",),
        layer: str | None = None,
        gradcam: bool = True,
        probe: Any = None,
        num_probe_samples: int = 8,
        target: str | int = "pred",
        every_n_epochs: int = 1,
        metrics: Sequence[str] = ("infidelity",),
        display_mean: Sequence[float] | None = None,
        display_std: Sequence[float] | None = None,
        artifact_dir: str | None = None,
        on_error: str = "warn",
        seed: int = 0,
        similarity: str = "spearman",
        reference: int | str | None = None,
        save_reference: str | None = None,
        token_names: Sequence[str] | None = None,
        input_key: str | None = None,
        output_transform: Callable[[Any], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.methods = _arguments.method_options(methods)
        _arguments.check_scalars(
            layer=layer,
            gradcam=gradcam,
            num_probe_samples=num_probe_samples,
            target=target,
            every_n_epochs=every_n_epochs,
            on_error=on_error,
            seed=seed,
            similarity=similarity,
            artifact_dir=artifact_dir,
            input_key=input_key,
            output_transform=output_transform,
        )
        self.layer = layer
        self.gradcam = gradcam
        self.num_probe_samples = num_probe_samples
        self.target = target
        self.every_n_epochs = every_n_epochs
        self.metrics = _arguments.metric_names(metrics)
        self.display_mean = _arguments.display_statistics("display_mean", display_mean)
        self.display_std = _arguments.display_statistics("display_std", display_std)
        self.artifact_dir = artifact_dir
        self.on_error = on_error
        self.seed = seed
        self.similarity = similarity
        self.save_reference = save_reference
        self.token_names = _arguments.token_names(token_names)
        self.input_key = input_key
        self.output_transform = output_transform
        self._given_probe: Probe | None = None if probe is None else probe_from_value(probe, input_key)
        self._pinned_reference = self._reference(reference)
        self._start_history()

    def _start_history(self) -> None:
        """Forget what earlier fits logged (a resumed fit loads its history from the checkpoint after this)."""
        self._probe = self._given_probe
        self._drift = DriftTracker(self.similarity, self._pinned_reference)
        self._subject: Subject | None = None
        self._layer_choice = LayerChoice()
        self._writer: ExplanationWriter | None = None
        self._epochs: list[int] = []
        self._targets: list[Tensor] = []
        self._thumbnails: dict[str, list[Tensor]] = {}
        self._manifest: list[dict[str, Any]] = []
        self._visuals_cache: Visuals | None = None
        self._epoch_metrics: dict[int, dict[str, float]] = {}
        self._maps_by_epoch: dict[int, dict[str, Tensor]] = {}  # kept only to save a golden reference
        self._explained_at: tuple[int, int, int] | None = None  # (trainer, epoch, step) of the last attempt
        self._failures: dict[int, set[str]] = {}  # methods that failed, by epoch
        self._warned: set[str] = set()

    def _reference(self, reference: int | str | None) -> int | Golden | None:
        """Validate ``reference``; a golden file also supplies (or checks) the probe."""
        if reference is None or (isinstance(reference, int) and not isinstance(reference, bool) and reference >= 0):
            return reference
        if not isinstance(reference, (str, Path)):
            raise MisconfigurationException(
                f"reference: expected None, an epoch >= 0 or the path of a golden reference, got {reference!r}"
            )
        golden = load_golden(reference)
        saved = Probe.from_state_dict(golden.probe)
        if self._given_probe is None:
            self._given_probe = saved
        elif self._given_probe.inputs.shape != saved.inputs.shape:
            raise MisconfigurationException(
                f"reference: the golden reference explains a probe of shape {tuple(saved.inputs.shape)}, "
                f"but probe has shape {tuple(self._given_probe.inputs.shape)}"
            )
        return golden

    @property
    def method_names(self) -> list[str]:
        """The methods this monitor runs (GradCAM included when enabled)."""
        return list(self.methods) + (["layer_gradcam"] if self.gradcam and "layer_gradcam" not in self.methods else [])

    def epoch_metrics(self, epoch: int) -> dict[str, float]:
        """Values logged once per epoch (``xai/prediction_flips``) for a logged ``epoch``."""
        return dict(self._epoch_metrics.get(epoch, {}))

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(methods=sorted(self.methods), layer=self.layer, target=self.target)

    # ------------------------------------------------------------------ Lightning hooks: whether to act

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        strategy = type(trainer.strategy).__name__
        if strategy in SHARDED_STRATEGIES:
            raise MisconfigurationException(
                f"AttributionMonitor: {strategy} shards the model's parameters across processes, so no process can "
                f"run the model alone; use a strategy that keeps full replicas (e.g. 'ddp')"
            )
        if self.layer is not None:
            _arguments.misconfigured(resolve_layer, pl_module, self.layer)
        self._start_history()

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._probe is None:
            self._probe = select_probe(validation_dataloader(trainer), self.num_probe_samples, self.input_key)
        self._prepare(pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.explain_if_due(trainer, pl_module)

    def explain_if_due(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Explain and log the probe now if the schedule asks for it, at most once per point of training.

        The monitor's own hook calls this; so does an :class:`AttributionRegressionCheck` listed before
        the monitor, so that it reads this epoch's values whatever the order of the callbacks.
        """
        point = (id(trainer), trainer.current_epoch, trainer.global_step)
        if self._explained_at == point or self._should_skip(trainer):
            return
        self._explained_at = point
        self._guarded(f"epoch {trainer.current_epoch}", self._monitor_epoch, trainer, pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._writer is None or not self._epochs:
            return
        # Filmstrips are written every few logged epochs; make sure the last one is complete.
        visuals = self._visuals
        if visuals.images and visuals.filmstrips_at != self._epochs[-1]:
            self._guarded("the final filmstrips", visuals.filmstrips, self._writer, self._thumbnails, self._epochs)
        if visuals.images and self._writer.enabled:
            self._guarded(
                "the timelines", visuals.timelines, self._writer, self._thumbnails, self._manifest, self._epochs
            )
        if self.save_reference is not None and trainer.is_global_zero:
            save_golden(self.save_reference, self._probe.state_dict(), self._maps_by_epoch, self.target)

    def _guarded(self, what: str, action, *args) -> None:
        """Run ``action``; by default a failure only warns, so training never dies because of the monitor."""
        try:
            action(*args)
        except (MisconfigurationException, AttributionMonitorError):
            raise
        except Exception as error:
            if self.on_error == "raise":
                shape = None if self._probe is None else tuple(self._probe.inputs.shape)
                raise AttributionMonitorError(
                    f"AttributionMonitor failed in {what} on a probe of shape {shape}: {type(error).__name__}: {error}"
                ) from error
            rank_zero_warn(
                f"AttributionMonitor skipped {what}: {type(error).__name__}: {error} "
                f"(pass on_error='raise' to stop training instead)"
            )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "probe": None if self._probe is None else self._probe.state_dict(),
            "epochs": list(self._epochs),
            "targets": list(self._targets),
            "thumbnails": {name: list(maps) for name, maps in self._thumbnails.items()},
            "manifest": list(self._manifest),
            "epoch_metrics": dict(self._epoch_metrics),
            "drift": self._drift.state_dict(),
            "maps_by_epoch": dict(self._maps_by_epoch),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probe") is not None:
            self._probe = Probe.from_state_dict(state_dict["probe"])
        self._epochs = list(state_dict.get("epochs", []))
        self._targets = list(state_dict.get("targets", []))
        self._thumbnails = {name: list(maps) for name, maps in state_dict.get("thumbnails", {}).items()}
        self._manifest = list(state_dict.get("manifest", []))
        self._epoch_metrics = dict(state_dict.get("epoch_metrics", {}))
        self._drift.load_state_dict(state_dict.get("drift", {}))
        self._maps_by_epoch = dict(state_dict.get("maps_by_epoch", {}))

    @property
    def probe(self) -> Probe | None:
        """The probe batch being explained (chosen at the start of fit unless given)."""
        return self._probe

    def logged(self, epoch: int) -> bool:
        """Whether the probe was explained at ``epoch``."""
        return epoch in self._epochs

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per logged epoch and method: epoch, method, targets, metric values, maps file."""
        return list(self._manifest)

    # ------------------------------------------------------------------ helpers: compute, record, log

    def _should_skip(self, trainer: pl.Trainer) -> bool:
        return (
            trainer.sanity_checking
            or bool(trainer.fast_dev_run)
            or (trainer.current_epoch + 1) % self.every_n_epochs != 0
            or trainer.current_epoch in self._epochs
        )

    def _prepare(self, pl_module: pl.LightningModule) -> None:
        """Run the probe through the model once and decide how to feed, read and explain it."""
        probe = self._probe
        self._check_probe(probe)
        records = [registry.record(name) for name in self.methods]
        with untouched_training_state(pl_module, self.seed):
            view = inspect_model(pl_module, probe, _model_inputs(pl_module, probe.inputs), self.output_transform)
        choice = choose_layer(
            view,
            probe.inputs,
            self.layer,
            self.gradcam,
            needs_layer=any(r.needs_layer for r in records),
            gradcam_named=any(name in self.methods for name in GRADCAM_METHODS),
        )
        if self.gradcam and not choice.gradcam and choice.note and "layer_gradcam" not in self.methods:
            rank_zero_warn(f"AttributionMonitor: GradCAM is left out: {choice.note}; pass gradcam=False to silence")
        layer = None if choice.name is None else resolve_layer(pl_module, choice.name)
        self._layer_choice = choice
        self._subject = Subject(view.forward, view.forward_args, layer, choice.reshape_transform)
        if not torch.isfinite(view.scores).all():
            self._warn_once("nonfinite", "at the start of fit the model's outputs on the probe are not finite")

    def _check_probe(self, probe: Probe) -> None:
        floating = probe.inputs.is_floating_point()
        needs_float = [name for name in self.methods if registry.record(name).needs_float_inputs]
        if not floating and needs_float:
            raise MisconfigurationException(
                f"methods: {needs_float} differentiate the model with respect to its inputs, but the probe's inputs "
                f"are {probe.inputs.dtype} (e.g. token ids); explain an embedding layer instead, e.g. "
                f"methods=['layer_integrated_gradients'] with layer=<the embedding's dotted name>"
            )
        channels = probe.inputs.shape[1] if probe.inputs.dim() == 4 else None
        for name, values in (("display_mean", self.display_mean), ("display_std", self.display_std)):
            if values is not None and (channels is None or len(values) not in (1, channels)):
                shape = tuple(probe.inputs.shape)
                raise MisconfigurationException(
                    f"{name}: expected one value per channel of the probe's images, or one for all; got "
                    f"{len(values)} for inputs of shape {shape}" + ("" if channels else " (no images)")
                )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(f"AttributionMonitor: {message}")

    def _active_methods(self) -> dict[str, dict[str, Any]]:
        methods = dict(self.methods)
        if self._layer_choice.gradcam:
            methods.setdefault("layer_gradcam", {})
        return methods

    def _monitor_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        probe = self._probe
        device = pl_module.device
        inputs = _model_inputs(pl_module, probe.inputs)
        subject = self._subject_on(device)
        with untouched_training_state(pl_module, self.seed + epoch):
            scores = subject.scores(inputs)
            if not torch.isfinite(scores).all():
                self._warn_once(
                    "nonfinite",
                    f"at epoch {epoch} the model's outputs on the probe are not finite (NaN or inf); no maps are "
                    f"logged while they are not",
                )
                return
            predictions = scores.argmax(dim=1)
            targets = predictions if self.target == "pred" else resolve_targets(self.target, inputs, probe.labels)
            results, failures = explain(
                subject,
                self._active_methods(),
                inputs,
                targets,
                None if probe.masks is None else probe.masks.to(device),
                self.metrics,
            )
        for name, error in failures.items():
            self._method_failed(name, error, epoch)
        drift, flips = self._drift.update(epoch, {r.method: r.attributions for r in results}, predictions)
        for result in results:
            result.metrics.update(drift[result.method])
        if flips is not None:
            self._epoch_metrics[epoch] = {"prediction_flips": float(flips)}
        writer = self._writer_for(trainer)
        self._record(epoch, targets, results, writer)
        self._log(pl_module, writer, epoch, results)

    def _subject_on(self, device: torch.device) -> Subject:
        subject = self._subject
        args = tuple(t.to(device) for t in subject.forward_args)
        return Subject(subject.forward, args, subject.layer, subject.reshape_transform)

    def _method_failed(self, name: str, error: Exception, epoch: int) -> None:
        self._failures.setdefault(epoch, set()).add(name)
        where = f"{name} failed at epoch {epoch} on a probe of shape {tuple(self._probe.inputs.shape)}"
        if self.on_error == "raise":
            raise AttributionMonitorError(f"AttributionMonitor: {where}: {type(error).__name__}: {error}") from error
        self._warn_once(
            f"failed:{name}",
            f"{where} and is skipped (the other methods are logged): {type(error).__name__}: {error} "
            f"(later failures of {name} are not reported; pass on_error='raise' to stop training instead)",
        )

    @property
    def _visuals(self) -> Visuals:
        if self._visuals_cache is None or self._visuals_cache.probe is not self._probe:
            self._visuals_cache = Visuals(self._probe, self.display_mean, self.display_std, self.token_names)
        return self._visuals_cache

    def _writer_for(self, trainer: pl.Trainer) -> ExplanationWriter:
        if self._writer is None:
            root = self.artifact_dir or Path(trainer.log_dir or trainer.default_root_dir) / "xai"
            self._writer = ExplanationWriter(trainer, Path(root))
        return self._writer

    def _record(self, epoch: int, targets: Tensor, results: list[Explanation], writer: ExplanationWriter) -> None:
        self._epochs.append(epoch)
        self._targets.append(targets.cpu())
        for result in results:
            if result.heat is not None:
                self._thumbnails.setdefault(result.method, []).append(_render.thumbnail(result.heat))
            self._manifest.append(
                {
                    "epoch": epoch,
                    "method": result.method,
                    "target": targets.tolist(),
                    "metrics": result.metrics,
                    "maps": writer.maps_file(epoch),
                }
            )
        maps = {r.method: r.attributions for r in results}
        if self.save_reference is not None:
            self._maps_by_epoch[epoch] = {m: t.detach().to(MAP_DTYPE).cpu() for m, t in maps.items()}
        writer.artifacts(epoch, maps, self._probe.state_dict(), self._manifest)

    def _log(
        self, pl_module: pl.LightningModule, writer: ExplanationWriter, epoch: int, results: list[Explanation]
    ) -> None:
        for result in results:
            for metric, value in result.metrics.items():
                pl_module.log(_tags.metric_tag(metric, result.method), value, on_step=False, on_epoch=True)
        for metric, value in self.epoch_metrics(epoch).items():
            pl_module.log(_tags.metric_tag(metric), value, on_step=False, on_epoch=True)
        writer.layout(_tags.custom_scalars_layout(self._logged_metrics()))
        self._visuals.epoch(writer, epoch, results, self._targets[-1], self._thumbnails, self._epochs)

    def _logged_metrics(self) -> set[str]:
        """The metrics this run logs (from the second logged epoch on, for the drift measures)."""
        metrics = set(_tags.EPOCH_METRICS)
        for name in self._active_methods():
            metrics |= self._method_metrics(name)
        return metrics

    def _method_metrics(self, name: str) -> set[str]:
        method, probe = registry.record(name), self._probe
        metrics = {"similarity_previous", "similarity_reference"}
        if method.explains_output_at_inputs and probe.inputs.is_floating_point():
            metrics.update(self.metrics)
        if method.returns_delta:
            metrics.add("convergence_delta")
        if probe.masks is not None and (probe.inputs.dim() == 4 or not probe.inputs.is_floating_point()):
            metrics.update(("mass_in_mask", "pointing_game"))
        return metrics

    def missing_reason(self, method: str | None, metric: str, epoch: int) -> str | None:
        """Why ``xai/<method>/<metric>`` (``xai/<metric>`` for None) has no value at a logged ``epoch``;
        None when its absence is expected there (drift measures at the first logged epoch)."""
        first = bool(self._epochs) and epoch == self._epochs[0]
        if metric in ("similarity_previous", "prediction_flips") and first:
            return None
        if method is None:
            return "the monitor logged no such value"
        if method not in self._active_methods():
            return f"the monitor does not run {method!r}" + (
                f" ({self._layer_choice.note})" if method == "layer_gradcam" and self._layer_choice.note else ""
            )
        if method in self._failures.get(epoch, ()):
            return f"{method} failed at epoch {epoch}"
        if metric in self._method_metrics(method):
            return "it was not computed"
        record = registry.record(method)
        if metric in ("mass_in_mask", "pointing_game"):
            return "the probe has no ground-truth masks"
        if metric == "convergence_delta":
            return f"{method} has no convergence delta"
        if metric not in self.metrics:
            return f"it was not requested (metrics={list(self.metrics)})"
        if not record.explains_output_at_inputs:
            return f"{metric} measures attributions of a class score to the inputs, which {method} does not give"
        return f"{metric} needs floating-point inputs, and the probe holds {self._probe.inputs.dtype}"


def _model_inputs(pl_module: pl.LightningModule, inputs: Tensor) -> Tensor:
    """The probe's inputs on the model's device, in its floating dtype (e.g. trained with "bf16-true")."""
    dtype = next((p.dtype for p in pl_module.parameters() if p.is_floating_point()), None)
    inputs = inputs.to(pl_module.device)
    return inputs.to(dtype) if inputs.is_floating_point() and dtype is not None else inputs
