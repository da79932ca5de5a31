"""One image in the forms the sinks take: PNG bytes (TensorBoard, files) and ``(H, W, 3)`` pixels (W&B,
MLflow), each made once and only when a sink asks for it.

Its own module so that the writer (:mod:`lightning_xai._write.writers`), which makes pictures, and the sinks
(:mod:`lightning_xai._write.image_sinks`), which read them, both import it and not each other.
"""

from __future__ import annotations

import struct
import zlib
from functools import cached_property

import numpy as np
import torch
from torch import Tensor


def _encode_png(image: Tensor) -> bytes:
    """PNG bytes of a ``(3, H, W)`` image, uint8 (as the renderer makes them) or floats in [0, 1].

    Written directly: rows unfiltered, deflated at level 1.  Encoding is most of the monitor's logging
    time; on the monitor's images (flat colour, pixel blocks repeated by nearest-neighbour enlargement)
    this takes a third to half of Pillow's time at level 1 for files a tenth larger.  PNG's row filters
    (sub/up) and deflate's run-length mode were measured too: at most 5% smaller or faster, or (run-length)
    half as large again.
    """
    return _png_of_pixels(_pixels(image))


def _pixels(image: Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels of a ``(3, H, W)`` image, uint8 or floats in [0, 1]."""
    if image.dtype != torch.uint8:
        image = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    return image.cpu().permute(1, 2, 0).numpy()


def _png_of_pixels(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # each row: filter type 0 (none), then RGB
    rows[:, 1:] = pixels.reshape(height, -1)
    data = zlib.compress(rows.tobytes(), 1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", data),
            _chunk(b"IEND", b""),
        )
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class Picture:
    """One image in the forms the sinks take, each made once and only when a sink asks for it."""

    def __init__(self, image: Tensor) -> None:
        self.image = image

    @property
    def size(self) -> tuple[int, int]:
        """Height and width."""
        return self.image.shape[1], self.image.shape[2]

    @cached_property
    def pixels(self) -> np.ndarray:
        """``(H, W, 3)`` uint8, as W&B and MLflow take images."""
        return _pixels(self.image)

    @cached_property
    def png(self) -> bytes:
        """PNG bytes (see :func:`_encode_png`)."""
        return _png_of_pixels(self.pixels)
