"""The names the monitor logs under, owned here: the monitor logs them, the regression check accepts
them and the TensorBoard custom-scalars layout charts them, all from these lists.

Scalars are ``xai/<method>/<metric>`` for the per-method metrics and ``xai/<metric>`` for the
per-epoch ones.
"""

from __future__ import annotations

import re
from collections.abc import Collection

PREFIX = "xai"
QUALITY_METRICS = ("infidelity", "sensitivity")
"""The metrics a user can ask the monitor for (``metrics=``); each costs extra passes of the method."""
CHARTS: dict[str, dict[str, str]] = {
    "quality": {
        "infidelity": "infidelity (lower is better)",
        "sensitivity": "max sensitivity (lower is better)",
        "convergence_delta": "convergence delta |sum(attr) - (f(x) - f(b))|",
    },
    "localisation": {
        "mass_in_mask": "attribution mass inside the mask",
        "pointing_game": "pointing game: peak inside the mask",
    },
    "drift": {
        "similarity_previous": "similarity to the previous logged epoch",
        "similarity_reference": "similarity to the reference",
        "prediction_flips": "probe predictions that flipped",
    },
}
"""Chart groups of the custom-scalars layout: metric name -> chart title."""
EPOCH_METRICS = ("prediction_flips",)
"""Logged once per logged epoch as ``xai/<metric>``."""
METHOD_METRICS = tuple(metric for charts in CHARTS.values() for metric in charts if metric not in EPOCH_METRICS)
"""Logged per method as ``xai/<method>/<metric>`` (those that apply to the run)."""


def metric_tag(metric: str, method: str | None = None) -> str:
    """The scalar tag of ``metric``: per method, or once per epoch when ``method`` is None."""
    return f"{PREFIX}/{metric}" if method is None else f"{PREFIX}/{method}/{metric}"


def _tag_pattern(metric: str) -> str:
    return f"^{PREFIX}/{re.escape(metric)}$" if metric in EPOCH_METRICS else f"^{PREFIX}/[^/]+/{re.escape(metric)}$"


def custom_scalars_layout(metrics: Collection[str]) -> dict[str, dict[str, list]]:
    """The custom-scalars layout for the ``metrics`` that the run logs: one chart per metric (all
    methods in it), grouped, with no chart for a metric that is never logged."""
    layout = {}
    for group, charts in CHARTS.items():
        shown = {title: ["Multiline", [_tag_pattern(metric)]] for metric, title in charts.items() if metric in metrics}
        if shown:
            layout[f"explanations: {group}"] = shown
    return layout
