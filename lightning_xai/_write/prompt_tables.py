"""Where the language-model monitor's tables go: its HTML tables to TensorBoard's text tab, and the same numbers
as rows (one per prompt token) to the loggers that show tables (W&B, MLflow; see
:mod:`lightning_xai._write.table_sinks`)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai._write.table_sinks import TensorBoardTable, table_sinks


def write_prompt_tables(
    trainer: Trainer, tag: str, html: str, columns: list[str], rows: list[list[Any]], step: int, title: str
) -> None:
    """``html`` to every TensorBoard logger's text tab under ``tag`` at ``step``; ``rows`` under ``columns`` to
    the other loggers that show tables.  Only global rank zero writes."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(tag, html, step)
    for sink in table_sinks(trainer):
        if not isinstance(sink, TensorBoardTable):
            sink.write(tag, columns, rows, step, title)
