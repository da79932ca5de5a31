"""The probe: a fixed batch whose explanations are followed across epochs.

It is chosen once, deterministically: by dataset index from the first
validation dataloader (neither its sampler nor the global RNG is touched),
round-robin over the classes so every class the scan finds is represented.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

INPUT_KEYS = ("image", "images", "input", "inputs", "tokens", "input_ids", "x")
LABEL_KEYS = ("label", "labels", "target", "targets", "y")
MASK_KEYS = ("mask", "masks")
SCAN_PER_SAMPLE = 50
"""Items scanned per requested probe sample when looking for every class."""


@dataclass
class Probe:
    """Inputs to explain, with labels and ground-truth masks where the data has them."""

    inputs: Tensor
    labels: Tensor | None = None
    masks: Tensor | None = None

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def state_dict(self) -> dict[str, Tensor | None]:
        return {"inputs": self.inputs, "labels": self.labels, "masks": self.masks}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor | None]) -> Probe:
        return cls(state["inputs"], state.get("labels"), state.get("masks"))


def _is_labels(value: Any, n: int) -> bool:
    return isinstance(value, Tensor) and value.shape == (n,) and not value.is_floating_point()


def _is_masks(value: Any, inputs: Tensor) -> bool:
    """Ground-truth masks: per pixel of an image batch, or per token of a token batch."""
    if not isinstance(value, Tensor):
        return False
    if inputs.dim() == 2:
        return value.shape == inputs.shape
    spatial = inputs.shape[-2:]
    return inputs.dim() >= 3 and value.shape in ((inputs.shape[0], *spatial), (inputs.shape[0], 1, *spatial))


def _first(mapping: Mapping, keys: Iterable[str]) -> Any:
    return next((mapping[k] for k in keys if k in mapping), None)


def unpack_batch(batch: Any) -> Probe:
    """Inputs, labels and masks of a collated batch: ``(x, y[, mask])``, a dict, or a tensor."""
    if isinstance(batch, Tensor):
        return Probe(batch)
    if isinstance(batch, Mapping):
        inputs, labels, masks = _first(batch, INPUT_KEYS), _first(batch, LABEL_KEYS), _first(batch, MASK_KEYS)
    elif isinstance(batch, (tuple, list)) and batch:
        inputs, labels, masks = batch[0], (batch[1] if len(batch) > 1 else None), (batch[2] if len(batch) > 2 else None)
    else:
        inputs = labels = masks = None
    if not isinstance(inputs, Tensor):
        raise MisconfigurationException(
            f"probe: cannot find the input tensor in a batch of type {type(batch).__name__}; batches should be a "
            f"tensor, a tuple (inputs, labels[, masks]) or a dict with one of the keys {list(INPUT_KEYS)}"
        )
    n = inputs.shape[0]
    return Probe(
        inputs,
        labels if _is_labels(labels, n) else None,
        (
            masks.reshape(n, *inputs.shape[1:] if inputs.dim() == 2 else inputs.shape[-2:]).bool()
            if _is_masks(masks, inputs)
            else None
        ),
    )


def probe_from_value(value: Any) -> Probe:
    """An explicit probe: a tensor, ``(inputs, labels)``, ``(inputs, labels, masks)`` or a dict batch."""
    probe = unpack_batch(value)
    if len(probe) == 0:
        raise MisconfigurationException("probe: the probe batch is empty")
    return probe


def _round_robin(labels: list[int | None], count: int) -> list[int]:
    """Positions picking ``count`` items, cycling over the classes in order of first appearance."""
    if any(label is None for label in labels):
        return list(range(min(count, len(labels))))
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(label, []).append(position)
    queues = list(by_class.values())
    picked: list[int] = []
    while len(picked) < min(count, len(labels)):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return sorted(picked)


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """Leave every global RNG stream as it was (random transforms in ``__getitem__`` draw from them)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def select_probe(dataloader: DataLoader, count: int) -> Probe:
    """``count`` examples from ``dataloader``'s dataset, at least one per class where possible."""
    dataset = dataloader.dataset
    with _preserved_rng():
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            return _select_from_iterable(dataloader, count)
        items = [dataset[i] for i in range(min(len(dataset), count * SCAN_PER_SAMPLE))]
        labels = [_label_of(dataloader, item) for item in items]
        picked = _round_robin(labels, count)
        return _detached(unpack_batch(dataloader.collate_fn([items[p] for p in picked])))


def _label_of(dataloader: DataLoader, item: Any) -> int | None:
    labels = unpack_batch(dataloader.collate_fn([item])).labels
    return None if labels is None else int(labels[0])


def _select_from_iterable(dataloader: DataLoader, count: int) -> Probe:
    # Iterating a DataLoader draws its base seed from the global generator; the caller preserves it.
    batches: list[Probe] = []
    seen = 0
    for batch in dataloader:
        batches.append(unpack_batch(batch))
        seen += len(batches[-1])
        if seen >= count * SCAN_PER_SAMPLE:
            break
    if not batches:
        raise MisconfigurationException("probe: the validation dataloader yielded no batches")
    merged = Probe(
        torch.cat([b.inputs for b in batches]),
        None if any(b.labels is None for b in batches) else torch.cat([b.labels for b in batches]),
        None if any(b.masks is None for b in batches) else torch.cat([b.masks for b in batches]),
    )
    labels = [None] * len(merged) if merged.labels is None else merged.labels.tolist()
    keep = torch.tensor(_round_robin(labels, count))
    return _detached(
        Probe(
            merged.inputs[keep],
            None if merged.labels is None else merged.labels[keep],
            None if merged.masks is None else merged.masks[keep],
        )
    )


def _detached(probe: Probe) -> Probe:
    """CPU copies, outside any inference mode, so the probe can join autograd graphs later."""
    copy = lambda t: None if t is None else t.detach().to("cpu").clone()  # noqa: E731
    return Probe(copy(probe.inputs), copy(probe.labels), copy(probe.masks))


def validation_dataloader(trainer: pl.Trainer) -> DataLoader:
    """The first validation dataloader, for picking the probe; a clear error when there is none."""
    source = trainer.fit_loop.epoch_loop.val_loop._data_source
    loaders = source.dataloader() if source.is_defined() and trainer.limit_val_batches != 0 else None
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, Sequence):
        loaders = loaders[0] if loaders else None
    if not isinstance(loaders, DataLoader):
        raise MisconfigurationException(
            "probe: AttributionMonitor needs a probe batch; pass probe=(inputs, labels) or give the trainer "
            "validation data to pick one from"
        )
    return loaders
