"""Where the monitor's output goes: TensorBoard when present, files beside the logs always.

Only the global-zero process writes; the others compute the same results
(identical weights, probe and seeds) and stay silent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchvision.utils import save_image

CUSTOM_SCALARS = {
    "Explanations": {
        "infidelity (lower is better)": ["Multiline", [r"xai/.*/infidelity"]],
        "max sensitivity (lower is better)": ["Multiline", [r"xai/.*/sensitivity"]],
        "IG convergence delta": ["Multiline", [r"xai/.*/convergence_delta"]],
        "attribution mass inside the mask": ["Multiline", [r"xai/.*/mass_in_mask"]],
    }
}


def _tensorboard(trainer: Trainer) -> Any:
    """The SummaryWriter of the trainer's first TensorBoard logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _file_name(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)


class ExplanationWriter:
    """Images to TensorBoard (or PNG files), maps and a manifest to ``directory``."""

    def __init__(self, trainer: Trainer, directory: Path) -> None:
        self.enabled = trainer.is_global_zero
        self.tensorboard = _tensorboard(trainer) if self.enabled else None
        self.directory = directory
        self._layout_written = False

    def image(self, tag: str, image: Tensor, epoch: int) -> None:
        """A ``(3, H, W)`` image in [0, 1] for ``epoch``."""
        if not self.enabled:
            return
        if self.tensorboard is not None:
            self.tensorboard.add_image(tag, image, global_step=epoch)
        else:
            path = self.directory / "images" / _file_name(tag) / f"epoch_{epoch:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(image, path)

    def layout(self) -> None:
        """Group the monitor's curves in TensorBoard's custom-scalars tab (once per run)."""
        if self.enabled and self.tensorboard is not None and not self._layout_written:
            self.tensorboard.add_custom_scalars(CUSTOM_SCALARS)
            self._layout_written = True

    def artifacts(self, epoch: int, maps: dict[str, Tensor], probe: dict[str, Any], manifest: list[dict]) -> None:
        """The epoch's maps as float16, the probe (once) and the whole manifest so far."""
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save({name: m.detach().to(torch.float16).cpu() for name, m in maps.items()}, self._maps_path(epoch))
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
