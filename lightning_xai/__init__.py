"""lightning_xai: Lightning callbacks that explain a model while it trains."""

__version__ = "0.1.0"
