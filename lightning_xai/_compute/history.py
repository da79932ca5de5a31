"""What the monitor has logged in a fit, by point of training; saved in checkpoints so a resumed run
continues it.

A *point* is a moment the probe was explained: a global step (TensorBoard's x axis for every entry the
monitor writes) and the epoch it fell in.  Step 0 is the untrained model, before the first optimizer
step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_xai._compute.explanation import Explanation
from lightning_xai._compute.heat import thumbnail
from lightning_xai._compute.self_check import Flag

MAP_DTYPE = torch.bfloat16
"""Saved maps (the maps files beside the logs, golden references, maps kept for one) keep float32's range at
half its size: float16 turns attributions below 6e-8 (common on untrained or deep models) into zeros;
bfloat16 keeps three significant digits of any magnitude."""
RECENT_MAPS = 3
"""Maps files kept for the latest points, whatever the thinning (see :func:`kept_points`)."""


@dataclass(frozen=True)
class Point:
    """A logged moment of training: the global step (optimizer steps taken) and the epoch."""

    step: int
    epoch: int

    @property
    def label(self) -> str:
        return f"step {self.step} (epoch {self.epoch})"


@dataclass
class History:
    """Everything logged so far: points, targets and predictions, thumbnails per method and point, the
    manifest of metric values and self-check flags, per-point values (``prediction_flips``), maps kept
    for a golden reference, which methods failed where, and which examples' maps failed the self-check
    (``problems``: method -> step -> example -> problem)."""

    points: list[Point] = field(default_factory=list)
    targets: dict[int, Tensor] = field(default_factory=dict)
    predictions: dict[int, Tensor] = field(default_factory=dict)
    thumbnails: dict[str, dict[int, Tensor]] = field(default_factory=dict)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    point_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    golden_maps: dict[int, dict[str, Tensor]] = field(default_factory=dict)
    failures: dict[int, list[str]] = field(default_factory=dict)
    problems: dict[str, dict[int, dict[int, str]]] = field(default_factory=dict)
    directory: str | None = None  # where the maps files were last written

    def record(
        self,
        point: Point,
        targets: Tensor,
        predictions: Tensor,
        results: list[Explanation],
        maps_file: str,
        keep: bool = False,
        shown: list[int] | None = None,
        flags: dict[str, list[Flag]] | None = None,
    ) -> dict[str, Tensor]:
        """Add a logged point: its targets and predictions, a thumbnail and a manifest entry per method (the
        maps are saved in ``maps_file``), and the maps themselves if ``keep`` (for a golden reference).
        Thumbnails are kept for the ``shown`` examples only (all by default): a large probe's would not fit.
        ``flags``: what the self-check found, by method, recorded in the manifest.

        Returns:
            The point's attributions by method.
        """
        self.points.append(point)
        self.targets[point.step] = targets.cpu()
        self.predictions[point.step] = predictions.cpu()
        for result in results:
            if result.heat is not None:
                heat_maps = result.heat.maps if shown is None else result.heat.maps[shown]
                self.thumbnails.setdefault(result.method, {})[point.step] = thumbnail(heat_maps)
            failed = {i: problem for i, problem in enumerate(result.problems) if problem is not None}
            if failed:
                self.problems.setdefault(result.method, {})[point.step] = failed
            self.manifest.append(
                {
                    "step": point.step,
                    "epoch": point.epoch,
                    "method": result.method,
                    "target": targets.tolist(),
                    "prediction": predictions.tolist(),
                    "metrics": result.metrics,
                    "examples": result.checked.examples,
                    "flags": [flag.record() for flag in (flags or {}).get(result.method, [])],
                    "maps": maps_file,
                }
            )
        maps = {r.method: r.attributions for r in results}
        if keep:
            self.golden_maps[point.step] = {m: t.detach().to(MAP_DTYPE).cpu() for m, t in maps.items()}
        return maps

    def thin_maps(self, pinned: set[int] | None = None) -> list[str]:
        """Forget the maps files of the points :func:`kept_points` no longer keeps (nor ``pinned``, global
        steps whose maps stay, e.g. a drift reference): their manifest entries get ``"maps": None`` and a
        ``"maps_thinned"`` note; their metrics stay.

        Returns:
            The names of the files to delete.
        """
        steps = self.steps
        kept = {steps[i] for i in kept_points(len(steps))} | (pinned or set())
        dropped = []
        for record in self.manifest:
            name = record.get("maps")
            if name is not None and record["step"] not in kept:
                record["maps"] = None
                record["maps_thinned"] = f"{name} was deleted: {THINNING}"
                dropped.append(name)
        return sorted(set(dropped))

    @property
    def steps(self) -> list[int]:
        return [p.step for p in self.points]

    def logged(self, step: int) -> bool:
        return any(p.step == step for p in self.points)

    def value(self, method: str | None, metric: str, step: int) -> float | None:
        """The value of ``xai/<method>/<metric>`` (``xai/<metric>`` for None) logged at ``step``."""
        if method is None:
            return self.point_metrics.get(step, {}).get(metric)
        for record in self.manifest:
            if record["step"] == step and record["method"] == method:
                value: float | None = record["metrics"].get(metric)
                return value
        return None

    def curves(self, method: str) -> tuple[list[int], dict[str, list[float | None]]]:
        """The steps at which ``method`` was logged and its metric values there, by metric."""
        records = [r for r in self.manifest if r["method"] == method]
        names = dict.fromkeys(name for r in records for name in r["metrics"])
        return [r["step"] for r in records], {name: [r["metrics"].get(name) for r in records] for name in names}

    def state_dict(self) -> dict[str, Any]:
        return {
            "points": [(p.step, p.epoch) for p in self.points],
            "targets": dict(self.targets),
            "predictions": dict(self.predictions),
            "thumbnails": {m: dict(by_step) for m, by_step in self.thumbnails.items()},
            "manifest": list(self.manifest),
            "point_metrics": dict(self.point_metrics),
            "golden_maps": dict(self.golden_maps),
            "failures": {step: list(names) for step, names in self.failures.items()},
            "problems": {m: {step: dict(p) for step, p in by_step.items()} for m, by_step in self.problems.items()},
            "directory": self.directory,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        return cls(
            [Point(step, epoch) for step, epoch in state.get("points", [])],
            dict(state.get("targets", {})),
            dict(state.get("predictions", {})),
            {m: dict(by_step) for m, by_step in state.get("thumbnails", {}).items()},
            list(state.get("manifest", [])),
            dict(state.get("point_metrics", {})),
            dict(state.get("golden_maps", {})),
            {step: list(names) for step, names in state.get("failures", {}).items()},
            {m: {step: dict(p) for step, p in by.items()} for m, by in state.get("problems", {}).items()},
            state.get("directory"),
        )


THINNING = (
    f"maps files are kept for the 1st, 2nd, 4th, 8th, ... logged point and the last {RECENT_MAPS} "
    f"(thin_maps=False keeps all)"
)


def kept_points(count: int, recent: int = RECENT_MAPS) -> list[int]:
    """Of ``count`` logged points (0-based, in order), those whose maps files are kept: the 1st, 2nd, 4th,
    8th, ... (log-spaced: a run of n points keeps about log2(n) of them) and the last ``recent``.  A point
    dropped once is never kept again, so files can be deleted as the run goes."""
    return [i for i in range(count) if (i + 1) & i == 0 or i >= count - recent]
