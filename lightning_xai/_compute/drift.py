"""How far explanations moved: against the previous logged point and a pinned reference.

The reference is a logged point of this run (the first one by default) or a
*golden* file saved by an earlier run (``AttributionMonitor(save_reference=...)``),
which fixes the probe too, so a later run (a model repository's CI, say)
explains the very same inputs and compares point by point (by global step).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor

from attribution.metrics import similarity
from lightning_xai._compute.history import MAP_DTYPE
from lightning_xai._config.arguments import is_int
from lightning_xai._config.probe import Probe

GOLDEN_VERSION = 2  # 2: maps by global step (1: by epoch)


@dataclass
class Golden:
    """A saved reference run: its probe and every logged point's maps per method, by global step."""

    probe: dict[str, Tensor | None]
    maps: dict[int, dict[str, Tensor]]
    target: Any = None

    def maps_for(self, step: int) -> dict[str, Tensor]:
        """The reference maps at ``step``, else at the reference's last step before it (its first, before that)."""
        earlier = [s for s in self.maps if s <= step]
        return self.maps[max(earlier) if earlier else min(self.maps)]


def save_golden(
    path: str | Path, probe: dict[str, Tensor | None], maps: dict[int, dict[str, Tensor]], target: Any
) -> None:
    """Write a golden reference file (maps as ``MAP_DTYPE``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compact = {e: {m: t.detach().to(MAP_DTYPE).cpu() for m, t in by.items()} for e, by in maps.items()}
    torch.save({"version": GOLDEN_VERSION, "probe": probe, "maps": compact, "target": target}, path)


def load_golden(path: str | os.PathLike[str]) -> Golden:
    """Read a golden reference file.

    Raises:
        MisconfigurationException: the file is missing or is not a golden reference (which holds only tensors
            and plain containers: it is loaded with ``weights_only=True``).
    """
    path = Path(path)
    if not path.is_file():
        raise MisconfigurationException(f"reference: no golden reference file at {str(path)!r}")
    try:  # plain tensors and dicts only: a golden file may come from elsewhere (e.g. a CI artifact)
        content = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        raise MisconfigurationException(
            f"reference: {str(path)!r} holds objects other than tensors and plain containers, so it is not a golden "
            f"reference and is not loaded ({error})"
        ) from error
    if not isinstance(content, dict) or content.get("version") != GOLDEN_VERSION or not content.get("maps"):
        raise MisconfigurationException(
            f"reference: {str(path)!r} is not a golden reference saved by AttributionMonitor(save_reference=...)"
        )
    return Golden(content["probe"], content["maps"], content.get("target"))


def reference(value: Any, given_probe: Probe | None) -> tuple[int | Golden | None, Probe | None]:
    """The monitor's ``reference`` argument checked: None, a global step or a golden file, whose probe is
    used unless one is given (then the shapes must agree).

    Returns:
        The reference (a golden file loaded), and the probe.
    """
    if value is None or (is_int(value) and value >= 0):
        return value, given_probe
    if not isinstance(value, (str, os.PathLike)):
        raise MisconfigurationException(
            f"reference: expected None, a global step >= 0 or the path of a golden reference, got {value!r}"
        )
    golden = load_golden(value)
    saved = Probe.from_state_dict(golden.probe)
    if given_probe is not None and given_probe.inputs.shape != saved.inputs.shape:
        raise MisconfigurationException(
            f"reference: the golden reference explains a probe of shape {tuple(saved.inputs.shape)}, "
            f"but probe has shape {tuple(given_probe.inputs.shape)}"
        )
    return golden, given_probe if given_probe is not None else saved


@dataclass
class DriftTracker:
    """Similarity of each method's maps to the previous logged point and to the reference.

    Args:
        measure: one of ``attribution.metrics.SIMILARITY_MEASURES``.
        reference: a global step of this run to pin (None: the first logged point),
            or a loaded :class:`Golden`.
    """

    measure: str = "spearman"
    reference: int | Golden | None = None
    previous: dict[str, Tensor] = field(default_factory=dict)
    previous_predictions: Tensor | None = None
    pinned: dict[str, Tensor] = field(default_factory=dict)

    def update(
        self, step: int, maps: dict[str, Tensor], predictions: Tensor
    ) -> tuple[dict[str, dict[str, float]], int | None]:
        """Compare the maps of the point at ``step``; returns per-method similarities and the prediction flips."""
        if (self.reference is None and not self.pinned) or self.reference == step:
            self.pinned = {m: t.detach().cpu() for m, t in maps.items()}
        reference = self.reference.maps_for(step) if isinstance(self.reference, Golden) else self.pinned
        values: dict[str, dict[str, float]] = {}
        for method, current in maps.items():
            values[method] = {}
            if method in self.previous:
                values[method]["similarity_previous"] = self._mean_similarity(current, self.previous[method])
            if method in reference:
                values[method]["similarity_reference"] = self._mean_similarity(current, reference[method], method)
        flips = None
        if self.previous_predictions is not None:
            flips = int((predictions.cpu() != self.previous_predictions).sum())
        self.previous = {m: t.detach().cpu() for m, t in maps.items()}
        self.previous_predictions = predictions.detach().cpu()
        return values, flips

    def _mean_similarity(self, current: Tensor, reference: Tensor, method: str | None = None) -> float:
        reference = reference.to(current)
        if reference.shape != current.shape:
            raise MisconfigurationException(
                f"reference: the maps of {method!r} have shape {tuple(reference.shape)} in the reference but "
                f"{tuple(current.shape)} in this run; the reference was made with another probe or model"
            )
        return float(similarity(current.float(), reference.float(), self.measure).mean())

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous, "previous_predictions": self.previous_predictions, "pinned": self.pinned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = dict(state.get("previous", {}))
        self.previous_predictions = state.get("previous_predictions")
        self.pinned = dict(state.get("pinned", {}))
