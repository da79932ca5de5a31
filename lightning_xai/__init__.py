"""lightning_xai: Lightning callbacks that explain a model while it trains.

Example::

    from lightning_xai import AttributionMonitor
    trainer = L.Trainer(callbacks=[AttributionMonitor(methods=["integrated_gradients", "occlusion"])])
"""

from lightning_xai.monitor import AttributionMonitor

__all__ = ["AttributionMonitor"]
__version__ = "0.1.0"
