"""AttributionMonitor: explanations of a fixed probe batch, logged at epoch ends."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
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
from attribution.metrics import SIMILARITY_MEASURES
from attribution.utils import check_choice, check_int, resolve_layer
from lightning_xai import _render, _tags
from lightning_xai._drift import DriftTracker, Golden, load_golden, save_golden
from lightning_xai._explain import (
    Explanation,
    explain,
    last_conv_name,
    predict,
    resolve_targets,
    untouched_training_state,
)
from lightning_xai._probe import Probe, probe_from_value, select_probe, validation_dataloader
from lightning_xai._visuals import Visuals
from lightning_xai._writers import ExplanationWriter

SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy", "XLAFSDPStrategy")


def _misconfigured(check, *args, **kwargs) -> None:
    """Run an argument check; report failures as Lightning's MisconfigurationException."""
    try:
        check(*args, **kwargs)
    except (ValueError, TypeError) as error:
        raise MisconfigurationException(str(error)) from error


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
            default the model's last convolution.
        gradcam: also log layer GradCAM on ``layer`` (if the model has one).
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
    ) -> None:
        super().__init__()
        self.methods = _method_options(methods)
        _misconfigured(check_int, every_n_epochs, "every_n_epochs")
        _misconfigured(check_int, num_probe_samples, "num_probe_samples")
        _misconfigured(check_choice, on_error, "on_error", ("warn", "raise"))
        for metric in metrics:
            _misconfigured(check_choice, metric, "metrics", _tags.QUALITY_METRICS)
        if not (
            target in ("pred", "label") or (isinstance(target, int) and not isinstance(target, bool) and target >= 0)
        ):
            raise MisconfigurationException(f"target: expected 'pred', 'label' or a class index >= 0, got {target!r}")
        if layer is not None and not isinstance(layer, str):
            raise MisconfigurationException(f"layer: expected a dotted module name, got {type(layer).__name__}")
        self.layer = layer
        self.gradcam = gradcam
        self.num_probe_samples = num_probe_samples
        self.target = target
        self.every_n_epochs = every_n_epochs
        self.metrics = tuple(metrics)
        self.display_mean = display_mean
        self.display_std = display_std
        self.artifact_dir = artifact_dir
        self.on_error = on_error
        self.seed = seed
        _misconfigured(check_choice, similarity, "similarity", SIMILARITY_MEASURES)
        self.similarity = similarity
        self.save_reference = save_reference
        self.token_names = None if token_names is None else list(token_names)
        self._probe: Probe | None = None if probe is None else probe_from_value(probe)
        self._drift = DriftTracker(similarity, self._reference(reference))
        self._layer_name: str | None = None
        self._writer: ExplanationWriter | None = None
        self._epochs: list[int] = []
        self._targets: list[Tensor] = []
        self._thumbnails: dict[str, list[Tensor]] = {}
        self._manifest: list[dict[str, Any]] = []
        self._visuals_cache: Visuals | None = None
        self._epoch_metrics: dict[int, dict[str, float]] = {}
        self._maps_by_epoch: dict[int, dict[str, Tensor]] = {}  # kept only to save a golden reference
        self._explained_at: tuple[int, int, int] | None = None  # (trainer, epoch, step) of the last attempt

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
        if self._probe is None:
            self._probe = saved
        elif self._probe.inputs.shape != saved.inputs.shape:
            raise MisconfigurationException(
                f"reference: the golden reference explains a probe of shape {tuple(saved.inputs.shape)}, "
                f"but probe has shape {tuple(self._probe.inputs.shape)}"
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
        self._layer_name = self._resolve_layer(pl_module)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._probe is None:
            self._probe = select_probe(validation_dataloader(trainer), self.num_probe_samples)

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
        except Exception as error:
            if self.on_error == "raise" or isinstance(error, MisconfigurationException):
                raise
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

    def _resolve_layer(self, pl_module: pl.LightningModule) -> str | None:
        methods_need_layer = any(registry.record(name).needs_layer for name in self.methods)
        if self.layer is not None:
            _misconfigured(resolve_layer, pl_module, self.layer)
            return self.layer
        found = last_conv_name(pl_module) if self.gradcam or methods_need_layer else None
        if found is None and methods_need_layer:
            raise MisconfigurationException(
                "layer: the model has no convolution to default to; pass layer=<dotted module name>"
            )
        return found

    def _active_methods(self) -> dict[str, dict[str, Any]]:
        methods = dict(self.methods)
        if self.gradcam and self._layer_name is not None:
            methods.setdefault("layer_gradcam", {})
        return methods

    def _monitor_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        probe = self._probe
        inputs = probe.inputs.to(pl_module.device)
        dtype = next((p.dtype for p in pl_module.parameters() if p.is_floating_point()), None)
        if inputs.is_floating_point() and dtype is not None:  # e.g. a model trained with precision="bf16-true"
            inputs = inputs.to(dtype)
        with untouched_training_state(pl_module, self.seed + epoch):
            predictions = predict(pl_module, inputs)
            targets = predictions if self.target == "pred" else resolve_targets(self.target, inputs, probe.labels)
            results = explain(
                pl_module,
                self._active_methods(),
                self._layer_name,
                inputs,
                targets,
                None if probe.masks is None else probe.masks.to(pl_module.device),
                self.metrics,
            )
        drift, flips = self._drift.update(epoch, {r.method: r.attributions for r in results}, predictions)
        for result in results:
            result.metrics.update(drift[result.method])
        if flips is not None:
            self._epoch_metrics[epoch] = {"prediction_flips": float(flips)}
        writer = self._writer_for(trainer)
        self._record(epoch, targets, results, writer)
        self._log(pl_module, writer, epoch, results)

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
            self._maps_by_epoch[epoch] = {m: t.detach().to(torch.float16).cpu() for m, t in maps.items()}
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
        records = [registry.record(name) for name in self._active_methods()]
        metrics = {"similarity_previous", "similarity_reference", "prediction_flips"}
        if any(r.explains_output_at_inputs for r in records):
            metrics.update(self.metrics)
        if any(r.returns_delta for r in records):
            metrics.add("convergence_delta")
        probe = self._probe
        if probe.masks is not None and (probe.inputs.dim() == 4 or not probe.inputs.is_floating_point()):
            metrics.update(("mass_in_mask", "pointing_game"))
        return metrics


def _method_options(methods: Sequence[str] | Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Validate ``methods`` and give every method an options dict."""
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        items = list(methods.items())
    elif isinstance(methods, Sequence):
        items = [(name, {}) for name in methods]
    else:
        raise MisconfigurationException(f"methods: expected a list of names or a mapping, got {type(methods).__name__}")
    if not items:
        raise MisconfigurationException(f"methods: give at least one of {registry.available()}")
    options = {}
    for name, opts in items:
        _misconfigured(registry.record, name)
        if opts is None:
            opts = {}
        if not isinstance(opts, Mapping):
            raise MisconfigurationException(f"methods[{name!r}]: expected a dict of options, got {type(opts).__name__}")
        options[name] = _checked_options(registry.record(name), dict(opts))
    return options


def _checked_options(method: registry.MethodRecord, options: dict[str, Any]) -> dict[str, Any]:
    """Refuse, at construction, options that would make the method fail at every logged epoch."""
    if "target" in options:
        raise MisconfigurationException(
            f"methods[{method.name!r}]: 'target' is chosen by the monitor's own target argument "
            f"('pred', 'label' or a class index); remove it from the method's options"
        )
    accepted = [p for p in inspect.signature(method.cls.attribute).parameters if p not in ("self", "inputs", "target")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MisconfigurationException(
            f"methods[{method.name!r}]: unknown option(s) {unknown}; {method.cls.__name__}.attribute takes {accepted}"
        )
    if method.takes_neuron_selector:
        if "neuron_selector" not in options:
            raise MisconfigurationException(
                f"methods[{method.name!r}]: a neuron method explains one unit of the layer, so it needs a "
                f"'neuron_selector' option, e.g. {{{method.name!r}: {{'neuron_selector': (0, 2, 2)}}}} for "
                f"channel 0 at row 2, column 2 of the layer's output (layer=<dotted name>)"
            )
        if isinstance(options["neuron_selector"], list):  # from a YAML config
            options["neuron_selector"] = tuple(options["neuron_selector"])
    return options
