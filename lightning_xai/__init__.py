"""lightning_xai: Lightning callbacks that explain a model while it trains.

Example::

    from lightning_xai import AttributionMonitor
    trainer = L.Trainer(callbacks=[AttributionMonitor(methods=["integrated_gradients", "occlusion"])])
"""

from lightning_xai.concept_monitor import ConceptMonitor, ConceptRegressionCheck
from lightning_xai.influence_monitor import IndexedDataset, InfluenceMonitor, MissingIndexError
from lightning_xai.influence_regression import InfluenceRegressionCheck
from lightning_xai.language_monitor import LanguageModelMonitor, PromptAttributionCheck
from lightning_xai.monitor import AttributionMonitor, AttributionMonitorError
from lightning_xai.regression import AttributionRegressionCheck, AttributionRegressionError
from lightning_xai.robustness_monitor import RobustnessMonitor

__all__ = [
    "AttributionMonitor",
    "AttributionMonitorError",
    "AttributionRegressionCheck",
    "AttributionRegressionError",
    "ConceptMonitor",
    "ConceptRegressionCheck",
    "IndexedDataset",
    "InfluenceMonitor",
    "InfluenceRegressionCheck",
    "LanguageModelMonitor",
    "PromptAttributionCheck",
    "RobustnessMonitor",
    "MissingIndexError",
]
__version__ = "0.1.0"
