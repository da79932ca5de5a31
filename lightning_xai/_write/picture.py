"""One image in the forms the sinks take: encoded bytes (TensorBoard, files: PNG, or JPEG for photographs)
and ``(H, W, 3)`` pixels (W&B, MLflow), each made once and only when a sink asks for it.

Its own module so that the writer (:mod:`lightning_xai._write.writers`), which makes pictures, and the sinks
(:mod:`lightning_xai._write.image_sinks`), which read them, both import it and not each other.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cached_property

import numpy as np
import torch
from PIL import Image  # a requirement of matplotlib and torchvision, both ours
from torch import Tensor

JPEG_QUALITY = 90
"""At 90 with full-resolution colour (4:4:4) a 224 px probe's overlays and captions look as the PNG's do side by
side, in a sixth of its bytes (a ResNet-18 grid of 8 photographs: 82 KB against 460 KB)."""


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


def _jpeg_of_pixels(pixels: np.ndarray) -> bytes:
    # No chroma subsampling: halving the colour resolution smears thin red and blue heat into the grey.
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return out.getvalue()


class Picture:
    """One image in the forms the sinks take, each made once and only when a sink asks for it.

    ``lossy``: the encoded form is JPEG, for images of photographs, where PNG's lossless bytes are mostly
    sensor noise; PNG otherwise (flat colours and enlarged pixel blocks, which JPEG would blur).
    """

    def __init__(self, image: Tensor, lossy: bool = False) -> None:
        self.image = image
        self.lossy = lossy

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

    @cached_property
    def encoded(self) -> bytes:
        """The bytes TensorBoard and image files take: JPEG if ``lossy``, else PNG."""
        return _jpeg_of_pixels(self.pixels) if self.lossy else self.png

    @property
    def suffix(self) -> str:
        """The file suffix of :attr:`encoded`."""
        return ".jpg" if self.lossy else ".png"
