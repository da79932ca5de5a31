"""The explanation explorer: a TensorBoard tab, found through the ``tensorboard_plugins`` entry point, that
shows the maps an :class:`~lightning_xai.AttributionMonitor` wrote beside the logs (``xai/manifest.json``,
the maps files and ``probe.pt``), rendered in the browser from the raw maps.

A layer of its own above the callbacks' ``_write``: it reads what they wrote and imports nothing of
``lightning_xai`` beyond ``_config`` and ``_compute``.

``reading.py`` finds runs and reads their files; ``plugin.py`` serves them as HTTP routes; ``static/``
holds the ES module that TensorBoard loads in the tab's iframe.
"""

from lightning_xai.explorer.plugin import ExplorerPlugin

__all__ = ["ExplorerPlugin"]
