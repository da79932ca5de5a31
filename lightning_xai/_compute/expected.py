"""Which metrics a monitored run logs, per method, and why one that a check asks for is missing."""

from __future__ import annotations

from dataclasses import dataclass

from attribution import registry
from lightning_xai._compute.history import History
from lightning_xai._config import tags
from lightning_xai._config.probe import Probe


@dataclass(frozen=True)
class MetricPlan:
    """What the run logs, decided at the start of fit.

    Args:
        methods: the methods the monitor runs (GradCAM included when it does).
        requested: the quality metrics asked for (``metrics=``).
        floating: the probe's inputs are floating point (not token ids).
        localised: the probe has ground-truth masks the maps can be compared with.
        left_out: why a method the user may expect is not run (e.g. GradCAM), by name.
    """

    methods: tuple[str, ...] = ()
    requested: tuple[str, ...] = ()
    floating: bool = True
    localised: bool = False
    left_out: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_probe(
        cls, methods: tuple[str, ...], requested: tuple[str, ...], probe: Probe, gradcam_note: str | None
    ) -> MetricPlan:
        """The plan for ``probe``; ``gradcam_note`` says why GradCAM is left out (None or empty: it is not)."""
        inputs = probe.inputs
        images_or_tokens = inputs.dim() == 4 or not inputs.is_floating_point()
        return cls(
            methods,
            requested,
            floating=inputs.is_floating_point(),
            localised=probe.masks is not None and images_or_tokens,
            left_out=(("layer_gradcam", gradcam_note),) if gradcam_note else (),
        )

    def for_method(self, name: str) -> set[str]:
        """The metrics logged for ``name`` (the drift measures from the second logged point on)."""
        method = registry.record(name)
        metrics = {"similarity_previous", "similarity_reference"}
        if method.explains_output_at_inputs and self.floating:
            metrics.update(tags.logged_name(metric) for metric in self.requested)
        if method.returns_delta:
            metrics.add("convergence_delta")
        if self.localised:
            metrics.update(("mass_in_mask", "pointing_game", "mask_examples"))
        return metrics

    def logged(self) -> set[str]:
        """Every metric name the run logs (what the custom-scalars layout charts)."""
        metrics = set(tags.EPOCH_METRICS)
        for name in self.methods:
            metrics |= self.for_method(name)
        return metrics

    def missing_reason(self, method: str | None, metric: str, step: int, history: History) -> str | None:
        """Why ``xai/<method>/<metric>`` (``xai/<metric>`` for None) has no value at a logged ``step``;
        None when its absence is expected there (drift measures at the first logged point)."""
        steps = history.steps
        if metric in ("similarity_previous", "prediction_flips", "share_of_time") and steps and step == steps[0]:
            return None
        if method is None:
            return "the monitor logged no such value"
        if method not in self.methods:
            note = dict(self.left_out).get(method)
            return f"the monitor does not run {method!r}" + (f" ({note})" if note else "")
        if method in history.failures.get(step, ()):
            return f"{method} failed at step {step}"
        if metric in self.for_method(method):
            flagged = [
                flag["cause"]
                for record in history.manifest
                if record["step"] == step and record["method"] == method
                for flag in record.get("flags", ())
                if flag["subject"] == metric and flag["problem"] == "undefined"
            ]
            return f"the self-check left it out: {flagged[0]}" if flagged else "it was not computed"
        if metric in ("mass_in_mask", "pointing_game", "mask_examples"):
            return "the probe has no ground-truth masks"
        if metric == "convergence_delta":
            return f"{method} has no convergence delta"
        if metric not in {tags.logged_name(requested) for requested in self.requested}:
            return f"it was not requested (metrics={list(self.requested)})"
        if not registry.record(method).explains_output_at_inputs:
            return f"{metric} measures attributions of a class score to the inputs, which {method} does not give"
        return f"{metric} needs floating-point inputs, and the probe holds token ids (or other integers)"
