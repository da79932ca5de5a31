"""Where the monitor's output goes: images to every logger that shows them (see
:mod:`lightning_xai._write.image_sinks`), scalars to every logger, maps and a manifest beside the logs.

Only the global-zero process writes; the others compute the same results
(identical weights, probe and seeds) and stay silent.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_xai._compute.history import MAP_DTYPE
from lightning_xai._config import tags
from lightning_xai._write.image_sinks import image_sinks
from lightning_xai._write.picture import Picture


def default_artifact_dir(trainer: Trainer) -> Path:
    """Where maps and manifest go unless ``artifact_dir`` says: ``<log_dir>/xai``. With MLflow as the first
    logger, ``log_dir`` is its whole store, so they go among the run's artifacts when those are local files
    (``<run>/artifacts/xai``, listed in MLflow's UI), else under the trainer's root directory."""
    logger = trainer.logger
    if isinstance(logger, MLFlowLogger):
        if trainer.is_global_zero:  # other processes have no run; they write nothing anyway
            location = urlparse(logger.experiment.get_run(logger.run_id).info.artifact_uri)
            if location.scheme in ("", "file"):
                return Path(url2pathname(location.path)) / "xai"
        return unused_directory(Path(trainer.default_root_dir) / "xai")
    if not trainer.loggers:  # no logger, so no version directory of its own
        return unused_directory(Path(trainer.default_root_dir) / "xai")
    return Path(trainer.log_dir or trainer.default_root_dir) / "xai"


def unused_directory(directory: Path) -> Path:
    """``directory``, or ``<directory>_1``, ``_2``, ... when an earlier fit's manifest is there: a second fit
    without a logger must not overwrite the first one's maps."""
    candidate, number = directory, 0
    while (candidate / "manifest.json").exists():
        number += 1
        candidate = directory.with_name(f"{directory.name}_{number}")
    if candidate != directory:
        rank_zero_info(f"AttributionMonitor: {directory} holds an earlier fit's maps; this fit writes to {candidate}")
    return candidate


def tensorboard_writer(trainer: Trainer) -> Any:
    """The SummaryWriter of the trainer's first TensorBoard logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class ExplanationWriter:
    """Images to every logger that shows them (PNG files when none does), scalars to every logger, maps and
    a manifest to ``directory``.

    Everything is written at a global step.
    """

    def __init__(self, trainer: Trainer, directory: Path) -> None:
        self.enabled = trainer.is_global_zero
        self.trainer = trainer
        self.tensorboard = tensorboard_writer(trainer) if self.enabled else None
        self.sinks = image_sinks(trainer, directory) if self.enabled else []
        self.directory = directory
        self._layout_written = False

    def image(
        self,
        tag: str,
        image: Tensor,
        step: int,
        file_name: str | None = None,
        caption: str | None = None,
        lossy: bool = False,
    ) -> None:
        """A ``(3, H, W)`` image (uint8, or floats in [0, 1]) at ``step`` to every image sink, encoded once
        per form; also written to ``file_name`` if given (PNG).  ``caption`` goes where captions are shown
        (W&B, MLflow); ``lossy``: JPEG for TensorBoard and files, a photograph's image (see
        :class:`~lightning_xai._write.picture.Picture`).

        Raises:
            Exception: the first sink's error, after every sink has had the image (one failing service
                does not keep the image from the others).
        """
        if not self.enabled:
            return
        picture = Picture(image, lossy)
        failure: Exception | None = None
        for sink in self.sinks:
            try:
                sink.write(tag, picture, step, caption)
            except Exception as error:
                failure = failure or error
        if file_name is not None:
            self._write(Path(file_name), picture.png)
        if failure is not None:
            raise failure

    def scalars(self, values: dict[str, float], step: int) -> None:
        """To every logger of the trainer at ``step``, and into ``trainer.callback_metrics`` on every rank (so
        ``ModelCheckpoint`` and ``EarlyStopping`` can watch them)."""
        if not values:
            return
        for logger in self.trainer.loggers:
            logger.log_metrics(values, step=step)  # loggers write on global rank zero only
        self.trainer.callback_metrics.update({tag: torch.tensor(value) for tag, value in values.items()})

    def _write(self, relative: Path, data: bytes) -> None:
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def layout(self, logged: set[str], final: bool = False) -> None:
        """Group the curves in TensorBoard's custom-scalars tab, once (TensorBoard reads one layout per run):
        the ``logged`` metric tags with the trainer's validation metrics beside them, so it waits for the
        first validation (or the end of fit, ``final``)."""
        validation = sorted(k for k in self.trainer.callback_metrics if k.startswith("val") and "/" not in k)
        no_validation = self.trainer.num_val_batches == [] or self.trainer.limit_val_batches == 0
        if self._layout_written or not (validation or no_validation or final):
            return
        if self.enabled and self.tensorboard is not None:
            self.tensorboard.add_custom_scalars(tags.custom_scalars_layout(logged, validation))
        self._layout_written = True

    def artifacts(
        self,
        step: int,
        maps: dict[str, Tensor],
        probe: dict[str, Any],
        manifest: list[dict[str, Any]],
        earlier_directory: str | None = None,
        dropped: Sequence[str] = (),
    ) -> None:
        """The point's maps (as ``MAP_DTYPE``), the probe (once) and the whole manifest so far; the maps files
        named in ``dropped`` (thinned, see :meth:`History.thin_maps`) are deleted.

        A resumed fit that logs into a new directory (a new logger version) first copies the earlier points'
        maps over from ``earlier_directory``, where they were written, so that every file the manifest names
        is beside it; a file that is gone is recorded as ``"maps": None`` with a ``"maps_missing"`` note.
        """
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save({name: m.detach().to(MAP_DTYPE).cpu() for name, m in maps.items()}, self._maps_path(step))
        if earlier_directory is not None and Path(earlier_directory) != self.directory:
            self._adopt(manifest, Path(earlier_directory))
        for name in dropped:
            (self.directory / name).unlink(missing_ok=True)
        probe_path = self.directory / "probe.pt"
        if not probe_path.exists():
            torch.save(probe, probe_path)
        self.manifest(manifest)
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def manifest(self, manifest: list[dict[str, Any]]) -> None:
        """``manifest.json``: the whole manifest so far (also rewritten when a check records a verdict)."""
        if self.enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / "manifest.json").write_text(json.dumps(manifest, indent=1))

    def _adopt(self, manifest: list[dict[str, Any]], earlier: Path) -> None:
        for record in manifest:
            name = record.get("maps")
            if name is None or (self.directory / name).exists():
                continue
            if (earlier / name).is_file():
                shutil.copy2(earlier / name, self.directory / name)
            else:
                record["maps"] = None
                record["maps_missing"] = f"{name} is not in {earlier}, where an earlier fit wrote it"

    def _maps_path(self, step: int) -> Path:
        return self.directory / maps_file(step)

    def maps_file(self, step: int) -> str:
        return maps_file(step)


def maps_file(step: int) -> str:
    """The name of the maps file of the point at global ``step``."""
    return f"maps_step_{step:07d}.pt"
