"""Helpers for code built on the engine (the Lightning callbacks use these, and only public names).

- :func:`resolve_layer`: a layer given as a module or a dotted name (``"layer3.1.conv2"``), with close
  matches listed when the name is unknown.
- :func:`check_int`, :func:`check_choice`: argument checks whose messages name the argument, what was
  expected and what was given.
- :func:`grid_feature_mask`: rectangular superpixels as a ``feature_mask`` for image batches.
- :func:`token_grid_reshape`, :func:`channels_last_reshape`: ``reshape_transform`` for
  :class:`attribution.LayerGradCam` on vision-transformer tokens and channels-last layers.
- :func:`memory_budget`, :func:`saved_bytes_meter`: how many bytes a chunk of work may save for
  backward on a device, and how many it does save.
"""

from attribution._internal.autograd import resolve_layer
from attribution._internal.checks import check_choice, check_int
from attribution._internal.chunking import memory_budget, saved_bytes_meter
from attribution._internal.features import grid_feature_mask
from attribution.functional.layer.maps import channels_last_reshape, token_grid_reshape

__all__ = [
    "channels_last_reshape",
    "check_choice",
    "check_int",
    "grid_feature_mask",
    "memory_budget",
    "resolve_layer",
    "saved_bytes_meter",
    "token_grid_reshape",
]
