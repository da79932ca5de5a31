"""Where the monitor's images go: one small sink per kind of logger, chosen from the trainer's loggers.

TensorBoard gets the writer's own PNG (or JPEG) bytes through the SummaryWriter's file writer (the fast path);
Weights & Biases and MLflow get the pixels through their loggers, with a caption; PNG files beside the
logs only when no logger can show images (CSV, no logger).  ``wandb`` and ``mlflow`` are optional: this
module recognises their loggers by Lightning's classes and never imports either library itself.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Protocol

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from tensorboard.compat.proto.summary_pb2 import Summary

from lightning_xai._write.picture import Picture

MLFLOW_CAPTIONS = "xai_captions"
"""The MLflow artifact folder that holds, per step, ``step_NNNNNNN.json``: image key -> caption."""


class ImageSink(Protocol):
    """Something that shows an image at a step."""

    def write(self, tag: str, picture: Picture, step: int, caption: str | None) -> None:
        """Show ``picture`` under ``tag`` at global ``step``; ``caption`` where the sink can show one."""


class TensorBoardSink:
    """A TensorBoard image summary of the encoded bytes, written straight to the event file (no re-encoding)."""

    def __init__(self, summary_writer: Any) -> None:
        self.summary_writer = summary_writer

    def write(self, tag: str, picture: Picture, step: int, caption: str | None) -> None:
        # TensorBoard has no per-image caption: the image itself carries its labels.
        height, width = picture.size
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=picture.encoded)
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        self.summary_writer._get_file_writer().add_summary(summary, global_step=step)


class WandbSink:
    """``WandbLogger.log_image``: the image under ``tag`` in the W&B media panel, with its caption.

    Lightning logs every W&B entry with ``trainer/global_step`` as a value (the x-axis it defines for all
    keys) and lets W&B count its own ``_step``; passing ``step`` that way, never as W&B's ``step=``, keeps
    the images on the trainer's axis and out of W&B's rule that drops entries logged at an older step.
    """

    def __init__(self, logger: WandbLogger) -> None:
        self.logger = logger

    def write(self, tag: str, picture: Picture, step: int, caption: str | None) -> None:
        captions = {} if caption is None else {"caption": [caption]}
        self.logger.log_image(key=tag, images=[picture.pixels], step=step, **captions)


class MlflowSink:
    """MLflow's stepped images (``MlflowClient.log_image(key=, step=)``, shown in the run's image grid);
    captions, which MLflow images lack, in ``xai_captions/step_NNNNNNN.json`` beside them.

    MLflow before 2.12 has no stepped images: there each image is the artifact ``<key>/step_NNNNNNN.png``.
    """

    def __init__(self, logger: MLFlowLogger) -> None:
        self.logger = logger
        self._captions: dict[int, dict[str, str]] = {}
        self._stepped: bool | None = None

    def write(self, tag: str, picture: Picture, step: int, caption: str | None) -> None:
        client, run_id, key = self.logger.experiment, self.logger.run_id, mlflow_key(tag)
        if self._stepped is None:
            self._stepped = "key" in inspect.signature(client.log_image).parameters
        if self._stepped:
            client.log_image(run_id, picture.pixels, key=key, step=step)
        else:
            client.log_image(run_id, picture.pixels, artifact_file=f"{key}/step_{step:07d}.png")
        if caption is not None:
            # Rewritten whole at each image of its step: a point's captions are one small file.
            captions = self._captions.setdefault(step, {})
            captions[key] = caption
            client.log_dict(run_id, captions, f"{MLFLOW_CAPTIONS}/step_{step:07d}.json")


class FileSink:
    """``images/<tag>/step_NNNNNNN.png`` (``.jpg`` for a lossy picture) under ``directory``: for runs whose
    loggers show no images."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, tag: str, picture: Picture, step: int, caption: str | None) -> None:
        path = self.directory / "images" / file_name(tag) / f"step_{step:07d}{picture.suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(picture.encoded)


def image_sinks(trainer: Trainer, directory: Path) -> list[ImageSink]:
    """One sink per logger of ``trainer`` that shows images, TensorBoard first; PNG files when there is none.

    A W&B run that mirrors TensorBoard (``sync_tensorboard=True``) already receives the TensorBoard
    logger's images, so it gets no second copy.
    """
    loggers = trainer.loggers
    has_tensorboard = any(isinstance(logger, TensorBoardLogger) for logger in loggers)
    sinks: list[ImageSink] = [TensorBoardSink(lg.experiment) for lg in loggers if isinstance(lg, TensorBoardLogger)]
    for logger in loggers:
        if isinstance(logger, WandbLogger) and not (has_tensorboard and _mirrors_tensorboard(logger)):
            sinks.append(WandbSink(logger))
        elif isinstance(logger, MLFlowLogger):
            sinks.append(MlflowSink(logger))
    return sinks or [FileSink(directory)]


def _mirrors_tensorboard(logger: WandbLogger) -> bool:
    # The arguments WandbLogger passes to wandb.init; Lightning reads the same field to decide its steps.
    return bool(getattr(logger, "_wandb_init", {}).get("sync_tensorboard"))


def file_name(tag: str) -> str:
    """``tag`` as one safe file or folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)


def mlflow_key(tag: str) -> str:
    """``tag`` with only the characters MLflow accepts in an image key."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]+", "_", tag)
