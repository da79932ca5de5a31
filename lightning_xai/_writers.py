"""Where the monitor's output goes: TensorBoard when present, files beside the logs always.

Only the global-zero process writes; the others compute the same results
(identical weights, probe and seeds) and stay silent.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor

MAP_DTYPE = torch.bfloat16
"""Saved maps keep float32's range at half its size: float16 turns attributions below 6e-8 (common on
untrained or deep models) into zeros; bfloat16 keeps three significant digits of any magnitude."""


def _tensorboard(trainer: Trainer) -> Any:
    """The SummaryWriter of the trainer's first TensorBoard logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _encode_png(image: Tensor) -> bytes:
    """PNG bytes of a ``(3, H, W)`` image in [0, 1]; light compression: encoding is most of the logging time."""
    pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _file_name(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)


class ExplanationWriter:
    """Images to TensorBoard (or PNG files), maps and a manifest to ``directory``."""

    def __init__(self, trainer: Trainer, directory: Path) -> None:
        self.enabled = trainer.is_global_zero
        self.tensorboard = _tensorboard(trainer) if self.enabled else None
        self.directory = directory
        self._layout_written = False

    def image(self, tag: str, image: Tensor, epoch: int, file_name: str | None = None) -> None:
        """A ``(3, H, W)`` image in [0, 1] for ``epoch``, encoded once; also written to ``file_name`` if given."""
        if not self.enabled:
            return
        png = _encode_png(image)
        if self.tensorboard is not None:
            value = Summary.Value(
                tag=tag,
                image=Summary.Image(
                    height=image.shape[1], width=image.shape[2], colorspace=3, encoded_image_string=png
                ),
            )
            self.tensorboard._get_file_writer().add_summary(Summary(value=[value]), global_step=epoch)
        else:
            self._write(Path("images") / _file_name(tag) / f"epoch_{epoch:03d}.png", png)
        if file_name is not None:
            self._write(Path(file_name), png)

    def _write(self, relative: Path, data: bytes) -> None:
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def layout(self, layout: dict[str, dict[str, list]]) -> None:
        """Group the monitor's curves in TensorBoard's custom-scalars tab (once per run)."""
        if self.enabled and self.tensorboard is not None and not self._layout_written:
            self.tensorboard.add_custom_scalars(layout)
            self._layout_written = True

    def artifacts(self, epoch: int, maps: dict[str, Tensor], probe: dict[str, Any], manifest: list[dict]) -> None:
        """The epoch's maps (as ``MAP_DTYPE``), the probe (once) and the whole manifest so far."""
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save({name: m.detach().to(MAP_DTYPE).cpu() for name, m in maps.items()}, self._maps_path(epoch))
        probe_path = self.directory / "probe.pt"
        if not probe_path.exists():
            torch.save(probe, probe_path)
        (self.directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def _maps_path(self, epoch: int) -> Path:
        return self.directory / f"maps_epoch_{epoch:03d}.pt"

    def maps_file(self, epoch: int) -> str:
        return self._maps_path(epoch).name
