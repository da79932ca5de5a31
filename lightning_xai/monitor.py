"""AttributionMonitor: explanations of a fixed probe batch, logged as training goes."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from attribution import registry
from attribution.utils import resolve_layer
from lightning_xai._compute import drift
from lightning_xai._compute.budget import PassTimes, any_scalable, budgeted_options, time_passes
from lightning_xai._compute.drift import DriftTracker, save_golden
from lightning_xai._compute.expected import MetricPlan
from lightning_xai._compute.explain import Subject, explain, model_inputs, resolve_targets, untouched_training_state
from lightning_xai._compute.explanation import Explanation
from lightning_xai._compute.gradcam_layer import LayerChoice, choose_layer
from lightning_xai._compute.heat import stored_maps
from lightning_xai._compute.history import History, Point
from lightning_xai._compute.model import inspect_model
from lightning_xai._compute.progress import TrainerProgress
from lightning_xai._compute.self_check import Diagnosis, Flag
from lightning_xai._compute.shards import agreed_chunk_size, shards_for
from lightning_xai._config import arguments, tags
from lightning_xai._config.choices import ImageFormat, OnError, PredictionTarget, QualityMetric, Similarity
from lightning_xai._config.errors import AttributionMonitorError, ErrorPolicy
from lightning_xai._config.probe import Probe, probe_from_value, select_probe, validation_dataloader
from lightning_xai._draw.visuals import Visuals
from lightning_xai._write.records import fast_checksums
from lightning_xai._write.writers import ExplanationWriter, default_artifact_dir, tensorboard_writer

__all__ = ["AttributionMonitor", "AttributionMonitorError", "MonitorReader", "MonitorValues"]


@runtime_checkable
class MonitorValues(Protocol):
    """What a callback that reads a monitor (:class:`MonitorReader`) may read from it: the values logged at
    each point, and why one is missing. :class:`AttributionMonitor` is one."""

    @property
    def method_names(self) -> list[str]:
        """The methods the monitor runs (GradCAM included when enabled)."""

    def value(self, method: str | None, metric: str, step: int) -> float | None:
        """The value of ``xai/<method>/<metric>`` (``xai/<metric>`` for None) logged at global ``step``."""

    def value_expected(self, step: int) -> bool:
        """Whether the probe was explained at ``step``."""

    def missing_reason(self, method: str | None, metric: str, step: int) -> str | None:
        """Why a value expected at ``step`` is missing (None: its absence is expected there)."""

    def record_verdict(self, step: int, method: str | None, verdict: dict[str, Any]) -> None:
        """Note a check's ``verdict`` (name, value, threshold, violated) on the point at ``step``, for the
        records of ``method`` (all methods for None), in the manifest beside the logs (the explorer shows
        it on its timeline)."""


@runtime_checkable
class MonitorReader(Protocol):
    """A callback that acts on what a monitor logged, right after each point (e.g.
    :class:`~lightning_xai.AttributionRegressionCheck`).

    The monitor calls :meth:`on_monitor_point` of every callback of the trainer that is a
    ``MonitorReader`` and whose ``monitor_read`` is that monitor: on every rank and at every point it
    tried, whatever happened there, so collective calls inside (a vote on stopping) match across ranks.
    The order of the callbacks list does not matter, and the list is never changed.
    """

    @property
    def monitor_read(self) -> MonitorValues | None:
        """The monitor this callback reads (None: none, e.g. before ``setup``)."""

    def on_monitor_point(self, trainer: pl.Trainer, point: Point) -> None:
        """Act on the values the monitor logged at ``point``."""


class AttributionMonitor(Callback):
    """Explain a fixed probe batch as the model trains and log the maps, overlays and metrics.

    The probe is explained before the first optimizer step (the untrained
    model), at epoch ends and, if asked, every n steps or at log-spaced steps.
    Every entry is written at the trainer's ``global_step``, so TensorBoard
    lines images up with the loss curves; the epoch is recorded beside it.
    Each point writes, per method, a grid of the probe images with the
    attribution overlaid and labelled (``xai_per_step/<method>``), a filmstrip
    per probe sample over the logged points (``xai_per_sample/<method>/<i>``),
    scalars ``xai/<method>/<metric>`` (infidelity, sensitivity, faithfulness and
    complexity, convergence delta, drift, attribution mass inside ground-truth masks when the data
    has them) and, beside the logs, the maps as ``.pt`` files with a
    ``manifest.json``; at the end of fit an overview per method (samples x
    points, with the metric curves: ``xai_overview/<method>``).  Training is
    not affected: modes, gradients, hooks and the global RNG are left as they
    were.

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
        every_n_epochs: explain at the end of every n-th epoch (epochs ``n - 1``,
            ``2n - 1``, ...); None: not at epoch ends.
        every_n_steps: explain after every n-th optimizer step; None: never.
        log_spaced_steps: explain after optimizer steps 1, 2, 4, 8, ... (each
            doubling): densely early in training, when explanations move most.
        log_at_start: explain once before the first optimizer step (the
            untrained model), so every curve starts from chance.
        metrics: any of ``"infidelity"`` (8 extra forwards per probe example,
            shared by all methods) and ``"sensitivity"`` (each method explains
            every probe example 8 more times: the dearest option, up to 9 times
            a point's cost without it; see ``python -m benchmarks
            --only monitor_sensitivity``); the faithfulness metrics ``"deletion"``
            and ``"insertion"`` (the area under the curve of the explained class
            score as the most attributed input elements are set to a zero
            baseline, or revealed on it, in 10 steps: 11 forwards per probe
            example and method each; logged as ``deletion_auc``/``insertion_auc``,
            lower and higher is better) and ``"faithfulness_correlation"`` (Bhatt
            et al.: correlation of attribution sums with score drops over 16
            random subsets of a tenth of the input elements, drawn from ``seed``:
            17 forwards per example and method); ``"road"`` (ROAD, Rong et al.,
            images ``(N, C, H, W)`` only: the share of 10, 30, 50, 70 and 90% at
            which the explained class is still predicted after that share of
            the most relevant pixels is filled in by noisy linear imputation, in
            [0, 1], lower is better; 5 forwards per example and method, and an
            imputation that is slow on large images; other probes get one
            warning and no value); ``"randomisation"`` (Adebayo et al.: the
            ``similarity`` of each map to the same method's map on a copy of the
            model whose last layer with parameters is re-initialised from
            ``seed``, logged as ``randomisation_similarity``, lower is better: 1
            means the map ignores what that layer learnt; one more explanation
            per example, two for methods that draw noise, and a copy of the
            model in memory); and ``"sparseness"`` (Gini
            index, in [0, 1]) and ``"complexity"`` (entropy, in
            [0, log(input elements)]) of the absolute map, which need no forward.
            Every one is computed only for methods that attribute a class score
            to the inputs (not layer methods or GradCAM) and averaged over the
            probe examples whose map passed the self-check.
        display_mean: per-channel mean to undo for the overlays.
        display_std: per-channel std to undo for the overlays.
        artifact_dir: where maps and manifest go; default ``<log_dir>/xai``.
        on_error: ``"warn"`` (default: a failing method is skipped with one
            warning; training never dies because of the monitor) or ``"raise"``
            (:class:`AttributionMonitorError`).
        seed: seed of the monitor's private RNG stream (noisy methods, metrics).
        class_names: a name per class, for the labels on the images.
        display_samples: how many probe examples the images show (a fixed subset covering the
            classes); the metrics always cover the whole probe.
        filmstrip_every: write the filmstrips (which show every point so far) at every n-th logged point
            (the 1st, the (n+1)-th, ...) and at the last point of the fit, instead of at every point: they
            were most of the event file's bytes.  Grids and metrics are written at every point.
        full_resolution_maps: keep the maps files as the methods return them.  By default image maps are
            stored summed over channels, ``(N, 1, H, W)``, at the size the overlays are drawn at (inputs
            larger than 160 px on their short side are shrunk to it, each stored pixel summing the
            attribution of the input pixels it covers), as bfloat16.
        thin_maps: delete the maps files of old points as the run goes, keeping the 1st, 2nd, 4th, 8th,
            ... logged point, the last 3 and the point ``reference`` names; the manifest keeps every
            point's metrics and says ``"maps": null`` with a ``"maps_thinned"`` note for the others.
            False keeps every point's file.
        image_format: how the images are encoded for TensorBoard (and the image files written when no
            logger shows images): ``"png"``, ``"jpeg"`` (quality 90, full colour resolution), or ``"auto"``
            (default): JPEG for probes of images at least 128 px on the short side, whose PNGs are mostly
            the photographs' noise (a sixth of the bytes at 224 px, looking the same), PNG for smaller
            ones, shown as enlarged pixel blocks that PNG keeps crisp in few bytes. W&B and MLflow receive
            the pixels and encode them themselves.
        time_budget: seconds a logged point should take, at most (default 10; None: no limit).  At the start
            of fit the monitor times a forward and a backward pass of the probe and, if the methods' probe
            options (16 integrated-gradients steps, 16 gradient-SHAP samples, occlusion windows an eighth of
            the image's side) would make a point take longer, lowers them together, as little as needed and
            to 4 steps, samples or windows per side at the fewest; options given in ``methods`` are kept.
            The choice is said once, kept for the whole run (a resumed run keeps it too: maps stay
            comparable), and a point's time is logged as ``xai/seconds`` and ``xai/share_of_time``.  At
            224 px on two CPU cores this takes a ResNet-18 point with the examples' methods from about 23 s to
            8 s (``python -m benchmarks.monitor_cost``).
        probe_chunk_size: examples explained at once. By default an equal share of the probe per
            process (under DDP each process explains its share, and all of them receive every result),
            cut so that one chunk's forward and backward fits the device's memory budget. Noisy
            methods and the metrics draw their noise per chunk: the same ``probe_chunk_size`` gives the
            same maps and metrics on any number of processes.
        similarity: how drift is measured between two points' maps, one of
            ``attribution.metrics.SIMILARITY_MEASURES`` (default Spearman rank
            correlation of the magnitudes); logged as
            ``xai/<method>/similarity_previous`` and ``similarity_reference``.
        reference: what ``similarity_reference`` compares with: None (the
            first logged point), a logged global step of this run, or the path
            of a golden reference saved by an earlier run with ``save_reference``
            (its probe is then used, and points are compared step by step).
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
        >>> import lightning as L
        >>> from lightning_xai import AttributionMonitor
        >>> trainer = L.Trainer(callbacks=[AttributionMonitor(["integrated_gradients", "occlusion"])])
        >>> monitor = AttributionMonitor(
        ...     {"integrated_gradients": {"n_steps": 32}, "occlusion": {}},  # options of attribute()
        ...     every_n_epochs=2, metrics=("infidelity", "sensitivity"), target="label",
        ... )
        >>> monitor.methods
        {'integrated_gradients': {'n_steps': 32}, 'occlusion': {}}
        >>> AttributionMonitor(["integrated_gradient"])  # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
            ...
        lightning.fabric.utilities.exceptions.MisconfigurationException: method: unknown value 'integrated_gradient'
        (did you mean 'integrated_gradients' or ...?); choose one of [...]
    """

    def __init__(
        self,
        methods: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("integrated_gradients",),
        layer: str | None = None,
        gradcam: bool = True,
        probe: Any = None,
        num_probe_samples: int = 8,
        target: PredictionTarget | int = "pred",
        every_n_epochs: int | None = 1,
        metrics: Sequence[QualityMetric] | QualityMetric = ("infidelity",),
        display_mean: Sequence[float] | None = None,
        display_std: Sequence[float] | None = None,
        artifact_dir: str | None = None,
        on_error: OnError = "warn",
        seed: int = 0,
        similarity: Similarity = "spearman",
        reference: int | str | None = None,
        save_reference: str | None = None,
        token_names: Sequence[str] | None = None,
        input_key: str | None = None,
        output_transform: Callable[[Any], Tensor] | None = None,
        every_n_steps: int | None = None,
        log_spaced_steps: bool = False,
        log_at_start: bool = True,
        class_names: Sequence[str] | None = None,
        probe_chunk_size: int | None = None,
        display_samples: int = 8,
        filmstrip_every: int = 10,
        full_resolution_maps: bool = False,
        thin_maps: bool = True,
        image_format: ImageFormat = "auto",
        time_budget: float | None = 10.0,
    ) -> None:
        super().__init__()
        self.methods = arguments.method_options(methods)
        arguments.check_scalars(
            layer=layer,
            gradcam=gradcam,
            num_probe_samples=num_probe_samples,
            target=target,
            on_error=on_error,
            seed=seed,
            similarity=similarity,
            artifact_dir=artifact_dir,
            input_key=input_key,
            output_transform=output_transform,
        )
        self.schedule = arguments.schedule(every_n_epochs, every_n_steps, log_spaced_steps, log_at_start)
        self.layer = layer
        self.gradcam = gradcam
        self.num_probe_samples = num_probe_samples
        self.target = target
        self.metrics = arguments.metric_names(metrics)
        self.display_mean = arguments.display_statistics("display_mean", display_mean)
        self.display_std = arguments.display_statistics("display_std", display_std)
        self.artifact_dir = artifact_dir
        self.on_error = on_error
        self._errors = ErrorPolicy(on_error)
        self.seed = seed
        self.similarity = similarity
        self.save_reference = save_reference
        self.token_names = arguments.names("token_names", token_names)
        self.class_names = arguments.names("class_names", class_names)
        self.probe_chunk_size = arguments.optional_count("probe_chunk_size", probe_chunk_size)
        self.display_samples = arguments.optional_count("display_samples", display_samples)
        self.filmstrip_every = arguments.log_budget(filmstrip_every, full_resolution_maps, thin_maps)
        self.full_resolution_maps = full_resolution_maps
        self.thin_maps = thin_maps
        arguments.check_literal(image_format, "image_format", ImageFormat)
        self.image_format = image_format
        self.time_budget = arguments.optional_positive("time_budget", time_budget)
        self._pinned_step = reference if isinstance(reference, int) else None  # its maps file stays (a bool: refused)
        self.input_key = input_key
        self.output_transform = output_transform
        self._given_probe: Probe | None = None if probe is None else probe_from_value(probe, input_key)
        self._pinned_reference, self._given_probe = drift.reference(reference, self._given_probe)
        self._given_probe_name = (
            "the probe passed as probe="
            if probe is not None
            else f"the probe of the golden reference {str(reference)!r}"
        )
        self._fit_scope = ExitStack()  # what the monitor holds while a fit runs
        self._start_history()

    def _start_history(self) -> None:
        """Forget what earlier fits logged (a resumed fit loads its history from the checkpoint after this)."""
        self._probe = self._given_probe
        self._drift = DriftTracker(self.similarity, self._pinned_reference)
        self._history = History()
        self._subject: Subject | None = None
        self._layer_choice = LayerChoice()
        self._plan = MetricPlan()
        self._chunk_size = 1
        self._writer: ExplanationWriter | None = None
        self._visuals_cache: Visuals | None = None
        self._filmstrips_at: int | None = None  # the step of this fit's latest filmstrips
        self._attempted: set[int] = set()  # steps explained (or tried) in this fit
        self._budgeted: dict[str, dict[str, Any]] | None = None  # options scaled to time_budget, once per run
        self._last_point_end: float | None = None  # when the previous point of this fit ended (perf_counter)
        self._errors.reset()

    @property
    def method_names(self) -> list[str]:
        """The methods this monitor runs (GradCAM included when enabled)."""
        return list(self.methods) + (["layer_gradcam"] if self.gradcam and "layer_gradcam" not in self.methods else [])

    @property
    def probe(self) -> Probe | None:
        """The probe batch being explained (chosen at the start of fit unless given)."""
        return self._probe

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per logged point and method: step, epoch, method, targets, metric values, maps file."""
        return list(self._history.manifest)

    @property
    def points(self) -> list[Point]:
        """The logged points of this fit: global step and epoch."""
        return list(self._history.points)

    def value(self, method: str | None, metric: str, step: int) -> float | None:
        """The value of ``xai/<method>/<metric>`` (``xai/<metric>`` for None) logged at global ``step``."""
        return self._history.value(method, metric, step)

    def value_expected(self, step: int) -> bool:
        """Whether the probe was explained at ``step`` (its values may still be missing, see :meth:`missing_reason`)."""
        return self._history.logged(step)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(methods=sorted(self.methods), layer=self.layer, target=self.target)

    # ------------------------------------------------------------------ Lightning hooks: whether to act

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        arguments.check_strategy(trainer.strategy)
        # Lightning sets Trainer.fast_dev_run and .callbacks in its connectors without declaring them.
        arguments.check_alone(
            trainer.callbacks,  # type: ignore[attr-defined]
            self,
            "tags (xai/seconds, xai/prediction_flips, the probe image, xai/layer_gradcam/... when both draw GradCAM) "
            "and artifact folder",
            "Give one monitor all the methods, e.g. "
            "AttributionMonitor(methods={'saliency': {}, 'integrated_gradients': {'n_steps': 32}})",
        )
        if self.layer is not None:
            arguments.misconfigured(resolve_layer, pl_module, self.layer)
        if trainer.fast_dev_run:  # type: ignore[attr-defined]
            rank_zero_info(
                "AttributionMonitor: the probe is not explained in this fit: fast_dev_run is a smoke test of the "
                "training loop (logging is suppressed too); run without it to see explanations"
            )
        self._start_history()
        if trainer.is_global_zero:
            self._fit_scope.enter_context(fast_checksums(tensorboard_writer(trainer)))

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._fit_scope.close()

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._probe is None:
            self._probe = select_probe(validation_dataloader(trainer), self.num_probe_samples, self.input_key)
        self._prepare(trainer, pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.at_start and trainer.global_step == 0:
            self._explain_point(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.schedule.after_step(trainer.global_step):
            self._explain_point(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.at_epoch_end(trainer.current_epoch):
            self._explain_point(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._writer is None or not self._history.points:
            return
        self._writer.layout(self._plan.logged(), final=True)
        visuals = self._visuals
        last = self._history.points[-1].step
        if visuals.images and self._writer.enabled and self._filmstrips_at != last:  # the latest, always
            self._errors.guarded(
                "the filmstrips", self._probe_shape, visuals.filmstrips, self._writer, self._history, last
            )
        if visuals.images and self._writer.enabled:
            self._errors.guarded("the timelines", self._probe_shape, visuals.timelines, self._writer, self._history)
        if self.save_reference is not None and trainer.is_global_zero:
            save_golden(self.save_reference, self._fit_probe.state_dict(), self._history.golden_maps, self.target)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "probe": None if self._probe is None else self._probe.state_dict(),
            "history": self._history.state_dict(),
            "drift": self._drift.state_dict(),
            "budgeted_options": self._budgeted,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probe") is not None:
            saved = Probe.from_state_dict(state_dict["probe"])
            self._warn_if_replaced(saved)
            self._probe = saved
        self._history = History.from_state_dict(state_dict.get("history", {}))
        self._drift.load_state_dict(state_dict.get("drift", {}))
        self._budgeted = state_dict.get("budgeted_options")

    def _warn_if_replaced(self, saved: Probe) -> None:
        """A resumed run goes on with the checkpoint's probe (``saved``): say so when it is not the one given."""
        given = self._given_probe
        if given is None or given.same_as(saved):
            return
        given_text, saved_text = given.describe(), saved.describe()
        if given_text == saved_text:
            given_text += ", other values"
        rank_zero_warn(
            f"AttributionMonitor: the checkpoint's probe ({saved_text}) replaces {self._given_probe_name} "
            f"({given_text}): a resumed run goes on explaining the probe it started with, so that its history, "
            f"drift and checks stay comparable; pass that probe, or none, to silence this"
        )

    # ------------------------------------------------------------------ helpers: compute, record, log

    def _explain_point(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Explain the probe at this step (once), then let the regression checks reading this monitor act."""
        step = trainer.global_step
        smoke_test = trainer.fast_dev_run  # type: ignore[attr-defined]  # (undeclared by Lightning, see setup)
        if trainer.sanity_checking or smoke_test or step in self._attempted or self._history.logged(step):
            return
        self._attempted.add(step)
        point = Point(step, trainer.current_epoch)
        self._errors.guarded(point.label, self._probe_shape, self._monitor_point, trainer, pl_module, point)
        # Every rank, whatever happened above: their votes must match.  (.callbacks: undeclared, see setup)
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, MonitorReader) and callback.monitor_read is self:
                callback.on_monitor_point(trainer, point)

    @property
    def _fit_probe(self) -> Probe:
        """The probe of this fit: given, restored from the checkpoint, or chosen by :meth:`on_fit_start`."""
        if self._probe is None:
            raise AttributionMonitorError("AttributionMonitor: no probe yet; it is chosen at the start of fit")
        return self._probe

    @property
    def _fit_subject(self) -> Subject:
        """What this fit explains, decided by :meth:`_prepare` at the start of fit."""
        if self._subject is None:
            raise AttributionMonitorError(
                "AttributionMonitor: the model is not inspected yet; that is done at the start of fit"
            )
        return self._subject

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run the probe through the model once and decide how to feed, read and explain it, in what chunks."""
        probe = self._fit_probe
        arguments.check_materialised(pl_module)
        arguments.check_probe(probe, self.methods, self.display_mean, self.display_std)
        records = [registry.record(name) for name in self.methods]
        inputs = model_inputs(pl_module, probe.inputs)
        with untouched_training_state(pl_module, self.seed):
            view = inspect_model(pl_module, probe, inputs, self.output_transform)
            self._chunk_size = agreed_chunk_size(
                trainer, self.probe_chunk_size, view.forward, inputs, view.forward_args
            )
            choice = choose_layer(
                view,
                inputs,
                self.layer,
                self.gradcam,
                needs_layer=any(r.needs_layer for r in records),
                gradcam_named=any(r.needs_spatial_layer for r in records),
            )
        spatial = any(r.needs_spatial_layer for r in records)
        if choice.note and (self.gradcam or spatial):
            left_out = not choice.gradcam and not spatial
            rank_zero_warn(
                f"AttributionMonitor: GradCAM is left out: {choice.note}; pass gradcam=False to silence"
                if left_out
                else f"AttributionMonitor: GradCAM on {choice.name!r}: {choice.note}"
            )
        if choice.remark:
            rank_zero_info(f"AttributionMonitor: {choice.remark}")
        layer = None if choice.name is None else resolve_layer(pl_module, choice.name)
        self._layer_choice = choice
        self._plan = MetricPlan.for_probe(tuple(self._active_methods()), self.metrics, probe, choice.note)
        self._subject = Subject(view.forward, view.forward_args, layer, choice.reshape_transform)
        if not torch.isfinite(view.scores).all():
            self._errors.warn_once("nonfinite", "at the start of fit the model's outputs on the probe are not finite")
        if self._budgeted is None and self.time_budget is not None:
            self._budgeted = self._options_within_budget(trainer, pl_module, inputs)

    def _options_within_budget(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, inputs: Tensor
    ) -> dict[str, dict[str, Any]]:
        """The methods' cost-setting options for a point within ``time_budget``, decided by global rank zero
        from its own timing (every process must explain with the same options)."""
        assert self.time_budget is not None and self._subject is not None
        if not any_scalable(self._active_methods(), inputs):  # e.g. every cost option given: nothing to time
            return {}
        shards = shards_for(len(inputs), self._chunk_size, trainer.global_rank, trainer.world_size)
        local = sum(chunk.stop - chunk.start for chunk in shards.local)
        chunk = inputs[: self._chunk_size].to(pl_module.device)
        forward_args = tuple(a[: self._chunk_size].to(pl_module.device) for a in self._subject.forward_args)
        try:
            with untouched_training_state(pl_module, self.seed):
                timed = time_passes(self._subject.forward, chunk, forward_args)
        except Exception:  # the points will report the model's error; nothing to scale by
            return {}
        scale = max(local, 1) / len(chunk)  # this process explains its share in chunks of the timed size
        times = PassTimes(timed.forward * scale, timed.forward_backward * scale)
        chosen = budgeted_options(self._active_methods(), inputs, times, self.time_budget, self.metrics)
        options: dict[str, dict[str, Any]] = trainer.strategy.broadcast(chosen.options)
        if chosen.lowered:
            rank_zero_info(
                f"AttributionMonitor: a forward and backward pass of the probe takes {times.forward_backward:.2f} s "
                f"here, so that a point stays within time_budget={self.time_budget:g} s (about "
                f"{chosen.seconds:.1f} s): {chosen.describe()}; give these options in methods= to fix them, or "
                f"time_budget=None for the most exact ones"
            )
        if chosen.over:
            rank_zero_warn(
                f"AttributionMonitor: a point is estimated to take {chosen.seconds:.1f} s, over "
                f"time_budget={self.time_budget:g} s even with the fewest steps and windows; explain fewer probe "
                f"examples (num_probe_samples), fewer methods or metrics, or raise time_budget"
            )
        return options

    def _methods_to_run(self) -> dict[str, dict[str, Any]]:
        """The active methods with their options: the user's over the ones scaled to ``time_budget``."""
        budgeted = self._budgeted or {}
        return {name: {**budgeted.get(name, {}), **options} for name, options in self._active_methods().items()}

    def _active_methods(self) -> dict[str, dict[str, Any]]:
        methods = dict(self.methods)
        if self._layer_choice.gradcam:
            methods.setdefault("layer_gradcam", {})
        return methods

    def _monitor_point(self, trainer: pl.Trainer, pl_module: pl.LightningModule, point: Point) -> None:
        start = time.perf_counter()
        self._explain_and_log(trainer, pl_module, point)
        end = time.perf_counter()
        cost = {"seconds": end - start}
        if self._last_point_end is not None:  # the wall time since the previous point, this one included
            cost["share_of_time"] = cost["seconds"] / max(end - self._last_point_end, 1e-9)
        self._last_point_end = end
        if self._history.logged(point.step):
            self._history.point_metrics.setdefault(point.step, {}).update(cost)
            scalars = {tags.metric_tag(name): value for name, value in cost.items()}
            self._writer_for(trainer).scalars(scalars, point.step)

    def _explain_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, point: Point) -> None:
        probe = self._fit_probe
        device = pl_module.device
        inputs = model_inputs(pl_module, probe.inputs)
        subject = self._fit_subject.on(device)
        shards = shards_for(len(probe), self._chunk_size, trainer.global_rank, trainer.world_size)
        with untouched_training_state(pl_module, self.seed + point.step):
            scores = subject.scores(inputs, self._chunk_size)
            if not torch.isfinite(scores).all():
                self._errors.warn_once(
                    "nonfinite",
                    f"at {point.label} the model's outputs on the probe are not finite (NaN or inf); no maps are "
                    f"logged while they are not",
                )
                return
            predictions = scores.argmax(dim=1)
            targets = predictions if self.target == "pred" else resolve_targets(self.target, inputs, probe.labels)
            results, failures = explain(
                subject,
                self._methods_to_run(),
                inputs,
                targets,
                None if probe.masks is None else probe.masks.to(device),
                self.metrics,
                shards,
                self.seed + point.step,
                TrainerProgress(trainer, f"Explaining the probe at {point.label}"),
                similarity=self.similarity,
            )
            diagnosis = Diagnosis(subject.forward, subject.forward_args, inputs, targets, self._layer_choice.candidate)
            flags = diagnosis.flags(results, self._active_methods())
        for flag in (flag for found in flags.values() for flag in found if flag.warns):
            self._errors.warn_once(flag.key, flag.message(point.label, len(probe)))
        for name, error in failures.items():
            self._history.failures.setdefault(point.step, []).append(name)
            self._errors.method_failed(name, error, point.label, self._probe_shape)
        drift, flips = self._drift.update(point.step, {r.method: r.attributions for r in results}, predictions)
        for result in results:
            result.metrics.update(drift[result.method])
        if flips is not None:
            self._history.point_metrics[point.step] = {"prediction_flips": float(flips)}
        writer = self._writer_for(trainer)
        self._record(point, targets, predictions, results, writer, flags)
        self._log(trainer, writer, point, results)

    @property
    def _probe_shape(self) -> tuple[int, ...] | None:
        return None if self._probe is None else tuple(self._probe.inputs.shape)

    @property
    def _visuals(self) -> Visuals:
        if self._visuals_cache is None or self._visuals_cache.source is not self._probe:
            self._visuals_cache = Visuals(
                self._fit_probe,
                self.display_mean,
                self.display_std,
                self.token_names,
                self.class_names,
                self.display_samples,
                self.image_format,
            )
        return self._visuals_cache

    def _writer_for(self, trainer: pl.Trainer) -> ExplanationWriter:
        if self._writer is None:
            self._writer = ExplanationWriter(trainer, Path(self.artifact_dir or default_artifact_dir(trainer)))
        return self._writer

    def _record(
        self,
        point: Point,
        targets: Tensor,
        predictions: Tensor,
        results: list[Explanation],
        writer: ExplanationWriter,
        flags: dict[str, list[Flag]],
    ) -> None:
        keep = self.save_reference is not None
        maps_file = writer.maps_file(point.step)
        shown = self._visuals.shown
        maps = self._history.record(point, targets, predictions, results, maps_file, keep, shown, flags)
        history = self._history
        pinned = set() if self._pinned_step is None else {self._pinned_step}
        dropped = history.thin_maps(pinned) if self.thin_maps else []
        if not self.full_resolution_maps and self._visuals.images:
            size, shown_size = self._fit_probe.inputs.shape[-2:], self._visuals.display().shape[-2:]
            maps = {method: stored_maps(m, size, shown_size) for method, m in maps.items()}
        probe = {**self._fit_probe.state_dict(), **self._display_record()}
        writer.artifacts(point.step, maps, probe, history.manifest, history.directory, dropped)
        history.directory = str(writer.directory)

    def _display_record(self) -> dict[str, Any]:
        """What ``probe.pt`` keeps for a reader such as the explorer beside the probe: how to undo the
        normalisation for display, and the class names."""
        return {"display_mean": self.display_mean, "display_std": self.display_std, "class_names": self.class_names}

    def _log(self, trainer: pl.Trainer, writer: ExplanationWriter, point: Point, results: list[Explanation]) -> None:
        scalars = {tags.metric_tag(m, r.method): v for r in results for m, v in r.metrics.items()}
        scalars |= {tags.metric_tag(m): v for m, v in self._history.point_metrics.get(point.step, {}).items()}
        writer.scalars(scalars, point.step)
        writer.layout(self._plan.logged())
        strips = (len(self._history.points) - 1) % self.filmstrip_every == 0
        self._visuals.point(writer, point, results, self._history, filmstrips=strips)
        if strips:
            self._filmstrips_at = point.step

    def record_verdict(self, step: int, method: str | None, verdict: dict[str, Any]) -> None:
        """Note a check's ``verdict`` on the point at ``step`` in the manifest beside the logs."""
        records = [r for r in self._history.manifest if r["step"] == step and method in (None, r["method"])]
        for record in records:
            record.setdefault("verdicts", []).append(dict(verdict))
        if records and self._writer is not None:
            self._writer.manifest(self._history.manifest)

    def missing_reason(self, method: str | None, metric: str, step: int) -> str | None:
        """Why ``xai/<method>/<metric>`` (``xai/<metric>`` for None) has no value at a logged ``step``;
        None when its absence is expected there (drift measures at the first logged point)."""
        return self._plan.missing_reason(method, metric, step, self._history)
