"""What every training-data influence method shares (Captum's ``captum.influence`` API): the base class, the
result of ``k_most_influential``, and how a training set is read.

A training batch is Captum's convention: a tuple (or list) whose last element holds the labels and whose
other elements are the model's inputs; a tensor alone is one input with no labels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError


class DataInfluence(ABC):
    """Base of the training-data influence methods (Captum's name).

    Args:
        model: the model whose training data is scored.
        train_dataset: the examples to score, a ``Dataset`` or a ``DataLoader`` of batches in Captum's
            convention (inputs, then labels last).
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset[Any] | DataLoader[Any], **kwargs: Any) -> None:
        self.model = model
        self.train_dataset = train_dataset

    @abstractmethod
    def influence(self, inputs: Any = None, **kwargs: Any) -> Any:
        """The influence of the training examples on ``inputs`` (each method documents its modes)."""

    @classmethod
    def get_name(cls) -> str:
        """The method's name, as Captum gives it (the class name)."""
        return cls.__name__


class KMostInfluentialResults(NamedTuple):
    """``k_most_influential``'s result: per test example, the ``k`` training indices and their scores."""

    indices: Tensor
    influence_scores: Tensor


def as_dataloader(
    data: Dataset[Any] | DataLoader[Any], batch_size: int, name: str = "train_dataset"
) -> DataLoader[Any]:
    """``data`` as a ``DataLoader`` that keeps the examples' order (a ``Dataset`` is batched by ``batch_size``).

    Raises:
        TypeError: neither a Dataset nor a DataLoader.
        ValueError: a batch size below 1.
    """
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset):
        raise ArgumentTypeError(f"{name}: expected a torch Dataset or DataLoader, got {describe(data)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def split_batch(batch: Any, name: str = "batch") -> tuple[tuple[Any, ...], Any]:
    """``(model inputs, labels)`` of one batch in Captum's convention: the last element holds the labels.

    Raises:
        ValueError: a tuple or list with fewer than two elements (no inputs, or no labels).
    """
    if isinstance(batch, Tensor):
        return (batch,), None
    if not isinstance(batch, Sequence) or len(batch) < 2:
        raise ArgumentError(f"{name}: expected a tuple (inputs..., labels) with the labels last, got {describe(batch)}")
    return tuple(batch[:-1]), batch[-1]
