"""The names the monitor logs under, owned here: the monitor logs them, the regression check accepts
them and the TensorBoard custom-scalars layout charts them, all from these lists.

Scalars are ``xai/<method>/<metric>`` for the per-method metrics and ``xai/<metric>`` for the
per-epoch ones.  Images are grouped so that TensorBoard, which lists the groups (the part of a tag
before its first ``/``) in the order of their sorted tags and opens the first three, shows the overview
first: ``xai_overview/<method>`` (the end-of-fit timeline), ``xai_per_sample/<method>/sample_<i>`` (a
filmstrip per probe sample), then ``xai_per_step/<method>`` and ``xai_per_step/probe`` (the probe grid at
each point), and ``xai_text/<method>`` (token inputs).  TensorBoard's sort treats ``_`` and ``/`` alike,
so the groups differ in a letter, not in a separator.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, get_args

from lightning_xai._config.choices import QualityMetric

PREFIX = "xai"
QUALITY_METRICS: tuple[str, ...] = get_args(QualityMetric)
"""The metrics a user can ask the monitor for (``metrics=``); all but sparseness and complexity cost extra
forwards or passes of the method."""
_LOGGED_AS = {"deletion": "deletion_auc", "insertion": "insertion_auc", "randomisation": "randomisation_similarity"}
"""The requested metrics logged under another name (the curves as their area, the randomisation check as the
similarity it measures)."""
CHARTS: dict[str, dict[str, str]] = {
    "quality": {
        "infidelity": "infidelity (lower is better)",
        "sensitivity": "max sensitivity (lower is better)",
        "convergence_delta": "convergence delta |sum(attr) - (f(x) - f(b))|",
    },
    "faithfulness": {
        "deletion_auc": "area under the deletion curve (lower is better)",
        "insertion_auc": "area under the insertion curve (higher is better)",
        "faithfulness_correlation": "faithfulness correlation (higher is better)",
        "road": "ROAD: explained class kept as the most relevant 10-90% of pixels are imputed (lower is better)",
        "sparseness": "sparseness, Gini index of |attribution| (higher: more concentrated)",
        "complexity": "complexity, entropy of |attribution| shares (lower: more concentrated)",
    },
    "sanity": {
        "randomisation_similarity": "similarity to the maps with the top layer re-initialised (lower is better)",
    },
    "localisation": {
        "mass_in_mask": "attribution mass inside the mask",
        "pointing_game": "pointing game: peak inside the mask",
        "mask_examples": "probe examples with a mask (what the two above average over)",
    },
    "drift": {
        "similarity_previous": "similarity to the previous logged epoch",
        "similarity_reference": "similarity to the reference",
        "prediction_flips": "probe predictions that flipped",
    },
    "cost": {
        "seconds": "seconds the monitor took for the point",
        "share_of_time": "the point's share of the wall time since the previous point",
    },
}
"""Chart groups of the custom-scalars layout: metric name -> chart title."""
EPOCH_METRICS = ("prediction_flips", "seconds", "share_of_time")
"""Logged once per logged epoch as ``xai/<metric>``."""
METHOD_METRICS = tuple(metric for charts in CHARTS.values() for metric in charts if metric not in EPOCH_METRICS)
"""Logged per method as ``xai/<method>/<metric>`` (those that apply to the run)."""


IMAGE_GROUPS = (f"{PREFIX}_overview", f"{PREFIX}_per_sample", f"{PREFIX}_per_step", f"{PREFIX}_text")
"""The image groups in the order TensorBoard lists them (alphabetical), each distinct from the scalars'
``xai`` group so that the Time Series view does not mix curves and pictures."""
OVERVIEW, PER_SAMPLE, PER_STEP, TEXT = IMAGE_GROUPS
PROBE_IMAGE = f"{PER_STEP}/probe"
"""The probe's inputs with their labels, logged once."""


def logged_name(metric: str) -> str:
    """The name a requested metric (``metrics=``) is logged under: ``"deletion"`` as ``"deletion_auc"``."""
    return _LOGGED_AS.get(metric, metric)


def timeline_tag(method: str) -> str:
    """The end-of-fit timeline of ``method``: every probe sample across the logged points, with curves."""
    return f"{OVERVIEW}/{method}"


def filmstrip_tag(method: str, sample: int) -> str:
    """One probe sample's overlays across the logged points, updated at every point."""
    return f"{PER_SAMPLE}/{method}/sample_{sample}"


def grid_tag(method: str) -> str:
    """The overlays of every probe sample at one point."""
    return f"{PER_STEP}/{method}"


def text_tag(method: str) -> str:
    """Token inputs shaded by their attribution at one point."""
    return f"{TEXT}/{method}"


def metric_tag(metric: str, method: str | None = None) -> str:
    """The scalar tag of ``metric``: per method, or once per epoch when ``method`` is None."""
    return f"{PREFIX}/{metric}" if method is None else f"{PREFIX}/{method}/{metric}"


def _tag_pattern(metric: str) -> str:
    return f"^{PREFIX}/{re.escape(metric)}$" if metric in EPOCH_METRICS else f"^{PREFIX}/[^/]+/{re.escape(metric)}$"


def custom_scalars_layout(
    metrics: Collection[str], validation: Collection[str] = ()
) -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout for the ``metrics`` that the run logs: one chart per metric (all
    methods in it), grouped, with no chart for a metric that is never logged; then one chart per
    validation metric of the trainer (``validation``: their tags, e.g. ``val_acc``)."""
    layout = {}
    for group, charts in CHARTS.items():
        shown = {title: ["Multiline", [_tag_pattern(metric)]] for metric, title in charts.items() if metric in metrics}
        if shown:
            layout[f"explanations: {group}"] = shown
    if validation:
        layout["training: validation"] = {tag: ["Multiline", [f"^{re.escape(tag)}$"]] for tag in validation}
    return layout
