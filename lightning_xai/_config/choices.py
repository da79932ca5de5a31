"""The callbacks' closed string options, each a ``Literal`` type defined once: the signatures use it (so
the LightningCLI, through jsonargparse, lists the choices and refuses others) and the checks at
construction read its values (``typing.get_args``), so the two cannot disagree.
"""

from __future__ import annotations

from typing import Literal

OnError = Literal["warn", "raise"]
"""``AttributionMonitor(on_error=...)``: warn once and go on, or stop training with an error."""
PredictionTarget = Literal["pred", "label"]
"""``AttributionMonitor(target=...)``, besides a class index: explain the prediction, or the label."""
Similarity = Literal["spearman", "top_k", "cosine", "ssim"]
"""``AttributionMonitor(similarity=...)``: ``attribution.metrics.SIMILARITY_MEASURES``, spelled out for the
signature (a test keeps the two equal)."""
QualityMetric = Literal[
    "infidelity",
    "sensitivity",
    "deletion",
    "insertion",
    "faithfulness_correlation",
    "road",
    "randomisation",
    "sparseness",
    "complexity",
]
"""``AttributionMonitor(metrics=...)``: the quality metrics a user can ask for; all but the last two cost extra
passes of the model or the method (``tags.logged_name`` gives the name each is logged under).  The monitor's
names are British, like its chart groups (``"randomisation"``); the engine's function keeps the engine's
spelling, ``attribution.metrics.randomization_similarity``, beside its ``model_randomization_check``."""
ImageFormat = Literal["auto", "png", "jpeg"]
"""``AttributionMonitor(image_format=...)``: how images are encoded for TensorBoard; ``"auto"`` picks JPEG for
photographs of at least 128 px and PNG for smaller images."""
Direction = Literal["above", "below"]
"""``AttributionRegressionCheck(direction=...)``: the side of the threshold the metric must stay on."""
OnFail = Literal["warn", "stop", "raise"]
"""``AttributionRegressionCheck(on_fail=...)``: what a violation does."""
InfluenceMetric = Literal["marked_self_influence", "suspect_class_shift"]
"""``InfluenceRegressionCheck(metric=...)``: what the check watches in the influence monitor's scores."""
