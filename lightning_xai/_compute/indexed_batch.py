"""The training data contract of :class:`lightning_xai.InfluenceMonitor`: every batch says which dataset
examples it holds, as ``(x, y, index)`` or a dict with an ``"index"`` key; indices are never guessed from
the batch order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

INDEX_KEY = "index"
"""The key of the dataset index in dict batches."""


class MissingIndexError(ValueError):
    """A training batch that does not say which dataset examples it holds."""


@dataclass(frozen=True)
class IndexedBatch:
    """A training batch split into the model's input, the labels and the dataset indices of its examples."""

    inputs: Tensor
    labels: Tensor
    indices: Tensor


def _expected(input_key: str, label_key: str) -> str:
    return (
        f"a training batch (x, y, index) or a dict with keys {input_key!r}, {label_key!r} and {INDEX_KEY!r}; wrap "
        "the training dataset in lightning_xai.IndexedDataset (its items are (x, y, index)) so that every "
        "example says which dataset example it is"
    )


def split_indexed_batch(batch: Any, input_key: str, label_key: str) -> IndexedBatch:
    """``(inputs, labels, indices)`` from a batch ``(x, y, index)`` or a dict with ``input_key``, ``label_key``
    and ``"index"``.

    Raises:
        MissingIndexError: the batch has no index: the indices are never guessed from the batch order.
    """
    expected = _expected(input_key, label_key)
    inputs, labels, indices = _parts(batch, input_key, label_key)
    if not isinstance(indices, Tensor) or indices.dim() != 1 or indices.is_floating_point():
        shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise MissingIndexError(
            f"InfluenceMonitor expects {expected}: the index must be a 1-D integer tensor, got {shape}"
        )
    if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor):
        raise MissingIndexError(f"InfluenceMonitor expects {expected}: x and y must be tensors")
    if not (len(inputs) == len(labels) == len(indices)):
        raise MissingIndexError(
            f"InfluenceMonitor expects {expected}: x, y and index have {len(inputs)}, {len(labels)} and "
            f"{len(indices)} examples"
        )
    return IndexedBatch(inputs, labels, indices.long())


def split_indexed_item(item: Any, input_key: str, label_key: str) -> tuple[Any, Any, Any]:
    """``(x, y, index)`` of one dataset item, in the same forms as the batches (no checks on the types)."""
    return _parts(item, input_key, label_key)


def _parts(batch: Any, input_key: str, label_key: str) -> tuple[Any, Any, Any]:
    expected = _expected(input_key, label_key)
    if isinstance(batch, Mapping):
        missing = [key for key in (input_key, label_key, INDEX_KEY) if key not in batch]
        if missing:
            raise MissingIndexError(f"InfluenceMonitor expects {expected}; got a dict with keys {sorted(batch)}")
        return batch[input_key], batch[label_key], batch[INDEX_KEY]
    if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) == 3:
        return batch[0], batch[1], batch[2]
    got = f"a {type(batch).__name__} of {len(batch)} items" if isinstance(batch, Sequence) else type(batch).__name__
    raise MissingIndexError(f"InfluenceMonitor expects {expected}; got {got}")
