"""Reading what an :class:`~lightning_xai.AttributionMonitor` wrote beside the logs: the runs under a log
directory, a run's manifest, a point's maps and the probe.

The monitor writes, in each run's artifact directory (``xai`` by default, ``xai_1`` ... when several fits
share a directory): ``manifest.json``, a list with one record per (point, method); one maps file per point
(``torch.save`` of method -> ``(N, C, H, W)`` or ``(N, H, W)``, in any floating dtype); and ``probe.pt``
(inputs, labels, ...). A record's ``"maps"`` may be null when its file was thinned or lost.

Every error a reader can act on is a :class:`NotFound` with the reason, never a stack trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

MANIFEST = "manifest.json"
PROBE = "probe.pt"
MAX_SIDE = 64
"""Maps are served at most this many pixels a side (area-averaged): enough for a tile, light to send."""


class NotFound(LookupError):
    """What a request asked for is not there; the message says what and why (served as a 404)."""


@dataclass(frozen=True)
class Run:
    """A run with maps: its name (the path of its log directory under the root, ``.`` for the root itself,
    with the artifact directory's name added when it is not ``xai``) and its artifact directory."""

    name: str
    directory: Path


def find_runs(logdir: Path) -> list[Run]:
    """The runs under ``logdir`` that hold a monitor's manifest, sorted by name."""
    runs = []
    for manifest in sorted(Path(logdir).rglob(MANIFEST)):
        directory = manifest.parent
        if not directory.name.startswith("xai"):
            continue
        base = directory.parent if directory.name == "xai" else directory
        name = base.relative_to(logdir).as_posix() if base != Path(logdir) else "."
        runs.append(Run(name, directory))
    return sorted(runs, key=lambda run: run.name)


def find_run(logdir: Path, name: str) -> Run:
    """The run called ``name``; only names of runs found under ``logdir`` are served (no other path).

    Raises:
        NotFound: no run of that name, with the names there are.
    """
    runs = {run.name: run for run in find_runs(logdir)}
    if name not in runs:
        raise NotFound(f"no run {name!r} with an xai/{MANIFEST} under the log directory; runs: {sorted(runs)}")
    return runs[name]


def read_manifest(run: Run) -> list[dict[str, Any]]:
    """The run's manifest records.

    Raises:
        NotFound: the manifest is unreadable (being written, or not a list of records).
    """
    try:
        records = json.loads((run.directory / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise NotFound(f"the manifest of run {run.name!r} cannot be read: {error}") from error
    if not isinstance(records, list) or not all(isinstance(r, dict) and "step" in r for r in records):
        raise NotFound(f"the manifest of run {run.name!r} is not a list of records with a step")
    return records


def summary(run: Run) -> dict[str, Any]:
    """What the explorer shows of a run: its points (step, epoch, metrics, flags, whether maps are there,
    the regression checks' verdicts when recorded) per method, the probe's size and true labels, and the
    targets and predictions per step."""
    records = read_manifest(run)
    steps = sorted({int(r["step"]) for r in records})
    epochs = {int(r["step"]): r.get("epoch") for r in records}
    methods = list(dict.fromkeys(str(r.get("method")) for r in records))
    points: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
    predictions: dict[int, list[int]] = {}
    targets: dict[int, list[int]] = {}
    for record in records:
        step = int(record["step"])
        points[str(record.get("method"))].append(
            {
                "step": step,
                "epoch": record.get("epoch"),
                "metrics": record.get("metrics") or {},
                "flags": record.get("flags") or [],
                "maps": record.get("maps") is not None,
                "maps_missing": _missing_note(record),
                "verdicts": record.get("verdicts") or record.get("regression") or [],
            }
        )
        if isinstance(record.get("prediction"), list):
            predictions[step] = record["prediction"]
        if isinstance(record.get("target"), list):
            targets[step] = record["target"]
    probe = _probe(run)
    labels = probe.get("labels")
    return {
        "run": run.name,
        "steps": steps,
        "epochs": {str(step): epoch for step, epoch in epochs.items()},
        "methods": methods,
        "points": points,
        "examples": _examples(probe, records),
        "labels": labels.tolist() if isinstance(labels, Tensor) and labels.dim() == 1 else None,
        "class_names": _names(probe.get("class_names")),
        "predictions": {str(step): values for step, values in predictions.items()},
        "targets": {str(step): values for step, values in targets.items()},
    }


def _names(value: Any) -> list[str] | None:
    """The class names the monitor recorded (``class_names=``), if a list of strings."""
    return list(value) if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value) else None


def _statistics(value: Any, channels: int) -> Tensor | None:
    """Per-channel display statistics (one number, or one per channel) as a ``(C, 1, 1)`` tensor."""
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, (int, float)) for v in value):
        return None
    if len(value) not in (1, channels):
        return None
    return torch.tensor([float(v) for v in value]).view(-1, 1, 1)


def _examples(probe: dict[str, Any], records: list[dict[str, Any]]) -> int:
    inputs = probe.get("inputs")
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    return max((len(r["prediction"]) for r in records if isinstance(r.get("prediction"), list)), default=0)


def _probe(run: Run) -> dict[str, Any]:
    path = run.directory / PROBE
    if not path.is_file():
        return {}
    try:
        probe = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a probe that cannot be read leaves the maps readable
        return {}
    return probe if isinstance(probe, dict) else {}


def point_maps(run: Run, step: int, method: str, examples: list[int] | None = None) -> Tensor:
    """The maps of ``method`` at ``step`` for ``examples`` (all by default) as float32 ``(n, h, w)``: summed
    over channels, area-averaged down to at most :data:`MAX_SIDE` a side.

    Raises:
        NotFound: no such point or method, maps thinned or missing, maps that are not images, or an
            example out of range.
    """
    return display_maps(_stored_maps(run, _record(run, step, method)), examples)


def _stored_maps(run: Run, record: dict[str, Any]) -> Tensor:
    """The maps a manifest record names, as stored."""
    method, step, name = record.get("method"), record["step"], record.get("maps")
    if name is None:
        note = _missing_note(record) or "they were not kept for this point"
        raise NotFound(f"run {run.name!r} has no maps of {method!r} at step {step}: {note}")
    path = run.directory / Path(str(name)).name  # a name in the artifact directory, never a path elsewhere
    try:
        maps = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise NotFound(f"the maps file {path.name} of run {run.name!r} cannot be read: {error}") from error
    if not isinstance(maps, dict) or not isinstance(maps.get(method), Tensor):
        raise NotFound(f"the maps file {path.name} of run {run.name!r} holds no maps of {method!r}")
    stored: Tensor = maps[method]
    return stored


def display_maps(maps: Tensor, examples: list[int] | None = None) -> Tensor:
    """``(N, C, H, W)`` or ``(N, H, W)`` maps of any dtype as float32 ``(n, h, w)`` for display.

    Raises:
        NotFound: maps of another shape, or an example out of range.
    """
    if maps.dim() not in (3, 4):
        raise NotFound(f"maps of shape {tuple(maps.shape)} are not images ((N, C, H, W) or (N, H, W))")
    if examples is not None:
        bad = [i for i in examples if not 0 <= i < maps.shape[0]]
        if bad:
            raise NotFound(f"examples {bad} are out of range: the probe has {maps.shape[0]} examples")
        maps = maps[examples]
    maps = maps.float()
    if maps.dim() == 4:
        maps = maps.sum(dim=1)
    height, width = maps.shape[-2:]
    scale = max(height, width) / MAX_SIDE
    if scale > 1:
        size = (max(1, round(height / scale)), max(1, round(width / scale)))
        maps = F.adaptive_avg_pool2d(maps.unsqueeze(1), size).squeeze(1)
    return torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)


def ranges(run: Run, method: str) -> dict[str, dict[str, list[float]]]:
    """Per step with maps: the largest positive value and the largest magnitude of a negative one, per
    example, of ``method``'s display maps (the browser's shared colour scale over the run)."""
    found: dict[str, dict[str, list[float]]] = {}
    for record in read_manifest(run):
        if record.get("method") != method or record.get("maps") is None:
            continue
        try:
            maps = display_maps(_stored_maps(run, record)).flatten(1)
        except NotFound:
            continue
        positive = maps.clamp(min=0).amax(dim=1) if maps.shape[1] else torch.zeros(len(maps))
        negative = (-maps).clamp(min=0).amax(dim=1) if maps.shape[1] else torch.zeros(len(maps))
        found[str(record["step"])] = {"positive": positive.tolist(), "negative": negative.tolist()}
    return found


def _missing_note(record: dict[str, Any]) -> str | None:
    """Why a record names no maps file, when the monitor said (a file lost on resume, or thinned)."""
    note = record.get("maps_missing") or record.get("maps_thinned")
    return None if note is None else str(note)


def _record(run: Run, step: int, method: str) -> dict[str, Any]:
    records = read_manifest(run)
    for record in records:
        if int(record["step"]) == step and record.get("method") == method:
            return record
    steps = sorted({int(r["step"]) for r in records if r.get("method") == method})
    if not steps:
        methods = sorted({str(r.get("method")) for r in records})
        raise NotFound(f"run {run.name!r} has no method {method!r}; methods: {methods}")
    raise NotFound(f"run {run.name!r} has no point of {method!r} at step {step}; steps: {steps}")


def probe_image(run: Run, example: int) -> Tensor:
    """Probe example ``example`` as a ``(3, H, W)`` uint8 image for display: the normalisation undone where the
    monitor recorded it (``display_mean``/``display_std``), else each image stretched to its own range.

    Raises:
        NotFound: no probe, a probe that is not images, or an example out of range.
    """
    probe = _probe(run)
    inputs = probe.get("inputs")
    if not isinstance(inputs, Tensor):
        raise NotFound(f"run {run.name!r} has no readable {PROBE} with input tensors")
    if inputs.dim() == 3:
        inputs = inputs.unsqueeze(1)
    if inputs.dim() != 4 or inputs.shape[1] not in (1, 3):
        raise NotFound(f"the probe of run {run.name!r} ({tuple(inputs.shape)}) is not images of 1 or 3 channels")
    if not 0 <= example < inputs.shape[0]:
        raise NotFound(f"example {example} is out of range: the probe has {inputs.shape[0]} examples")
    image = inputs[example].float()
    std, mean = (_statistics(probe.get(key), image.shape[0]) for key in ("display_std", "display_mean"))
    if std is not None or mean is not None:
        image = (image * (1.0 if std is None else std) + (0.0 if mean is None else mean)).clamp(0, 1)
    else:
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    return (image * 255).round().to(torch.uint8).expand(3, -1, -1).contiguous()
