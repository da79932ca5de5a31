"""Where the influence monitor's tables go: TensorBoard's text tab (a Markdown table), a W&B table, an MLflow
table artifact; chosen from the trainer's loggers like :mod:`lightning_xai._write.image_sinks`. ``wandb``
and ``mlflow`` are optional: their loggers are recognised by Lightning's classes."""

from __future__ import annotations

from typing import Any, Protocol

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

from lightning_xai._write.image_sinks import file_name


class TableSink(Protocol):
    """Something that shows a table at a step."""

    def write(self, tag: str, columns: list[str], rows: list[list[Any]], step: int, title: str) -> None:
        """Show ``rows`` under ``columns`` as ``tag`` at global ``step``, headed by ``title`` where it can."""


class TensorBoardTable:
    """A Markdown table in TensorBoard's TEXT tab, under ``title``."""

    def __init__(self, summary_writer: Any) -> None:
        self.summary_writer = summary_writer

    def write(self, tag: str, columns: list[str], rows: list[list[Any]], step: int, title: str) -> None:
        lines = [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
        lines += [f"| {' | '.join(str(cell).replace('|', '/') for cell in row)} |" for row in rows]
        self.summary_writer.add_text(tag, f"{title}\n\n" + "\n".join(lines), step)


class WandbTable:
    """``WandbLogger.log_table``: a table panel, on the trainer's step axis (see ``WandbSink``)."""

    def __init__(self, logger: WandbLogger) -> None:
        self.logger = logger

    def write(self, tag: str, columns: list[str], rows: list[list[Any]], step: int, title: str) -> None:
        self.logger.log_table(key=tag, columns=columns, data=rows, step=step)


class MlflowTable:
    """``MlflowClient.log_table``: ``<tag>/step_NNNNNNN.json`` in the run's artifacts (MLflow tables have
    no step of their own)."""

    def __init__(self, logger: MLFlowLogger) -> None:
        self.logger = logger

    def write(self, tag: str, columns: list[str], rows: list[list[Any]], step: int, title: str) -> None:
        data = {column: [row[i] for row in rows] for i, column in enumerate(columns)}
        self.logger.experiment.log_table(self.logger.run_id, data, f"{file_name(tag)}/step_{step:07d}.json")


def table_sinks(trainer: Trainer) -> list[TableSink]:
    """One sink per logger of ``trainer`` that shows tables (none for CSV loggers: the CSV files beside the
    logs hold the same rows)."""
    sinks: list[TableSink] = []
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            sinks.append(TensorBoardTable(logger.experiment))
        elif isinstance(logger, WandbLogger):
            sinks.append(WandbTable(logger))
        elif isinstance(logger, MLFlowLogger):
            sinks.append(MlflowTable(logger))
    return sinks
