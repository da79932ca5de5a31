"""The probe: a fixed batch whose explanations are followed across epochs.

It is chosen once, deterministically: by dataset index from the first
validation dataloader (neither its sampler nor the global RNG is touched),
round-robin over the classes so every class the scan finds is represented.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeGuard, overload

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

INPUT_KEYS = ("image", "images", "pixel_values", "input_ids", "input", "inputs", "tokens", "x")
"""Keys of a dict batch that hold the attributed input, in order of preference (``input_key`` overrides)."""
LABEL_KEYS = ("label", "labels", "target", "targets", "y")
MASK_KEYS = ("mask", "masks")
SCAN_PER_SAMPLE = 50
"""Items scanned per requested probe sample when looking for every class."""


@dataclass
class Probe:
    """Inputs to explain, with labels and ground-truth masks where the data has them.

    ``forward_tensors`` are the batch's other tensors the model may take (``attention_mask``,
    ``token_type_ids``, ...), by key; ``input_key`` is the key of ``inputs`` in a dict batch.
    """

    inputs: Tensor
    labels: Tensor | None = None
    masks: Tensor | None = None
    forward_tensors: dict[str, Tensor] = field(default_factory=dict)
    input_key: str | None = None

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def rows(self, index: Tensor | slice) -> Probe:
        """The probe restricted to some examples."""
        labels = None if self.labels is None else self.labels[index]
        masks = None if self.masks is None else self.masks[index]
        tensors = {k: t[index] for k, t in self.forward_tensors.items()}
        return Probe(self.inputs[index], labels, masks, tensors, self.input_key)

    def same_as(self, other: Probe) -> bool:
        """Whether ``other`` holds the same examples: equal inputs, labels, masks and forward tensors (on any
        device)."""
        return (
            all(_equal(getattr(self, key), getattr(other, key)) for key in ("inputs", "labels", "masks"))
            and self.forward_tensors.keys() == other.forward_tensors.keys()
            and all(_equal(t, other.forward_tensors[key]) for key, t in self.forward_tensors.items())
        )

    def describe(self) -> str:
        """The probe in a few words, for messages: ``8 examples of shape (3, 16, 16), float32``."""
        dtype = str(self.inputs.dtype).removeprefix("torch.")
        return f"{len(self)} examples of shape {tuple(self.inputs.shape[1:])}, {dtype}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "labels": self.labels,
            "masks": self.masks,
            "forward_tensors": dict(self.forward_tensors),
            "input_key": self.input_key,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Probe:
        return cls(
            state["inputs"],
            state.get("labels"),
            state.get("masks"),
            dict(state.get("forward_tensors") or {}),
            state.get("input_key"),
        )


def _equal(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())


def _is_labels(value: object, n: int) -> TypeGuard[Tensor]:
    return isinstance(value, Tensor) and value.shape == (n,) and not value.is_floating_point()


def _is_masks(value: object, inputs: Tensor) -> TypeGuard[Tensor]:
    """Ground-truth masks: per pixel of an image batch, or per token of a token batch."""
    if not isinstance(value, Tensor):
        return False
    if inputs.dim() == 2:
        return value.shape == inputs.shape
    spatial = inputs.shape[-2:]
    return inputs.dim() >= 3 and value.shape in ((inputs.shape[0], *spatial), (inputs.shape[0], 1, *spatial))


def _first(mapping: Mapping[str, Any], keys: Iterable[str]) -> Any:
    return next((mapping[k] for k in keys if k in mapping), None)


def unpack_batch(batch: Any, input_key: str | None = None, strict: bool = False) -> Probe:
    """Inputs, labels, masks and other forward tensors of a collated batch: ``(x, y[, mask])``, a dict,
    or a tensor.

    Args:
        batch: the batch.
        input_key: the key of the attributed input in a dict batch (default: the first of ``INPUT_KEYS``).
        strict: labels that do not fit the inputs are an error instead of being ignored (explicit probes).
    """
    tensors: dict[str, Tensor] = {}
    inputs: object
    labels: object
    masks: object
    if isinstance(batch, Tensor):
        inputs, labels, masks = batch, None, None
    elif isinstance(batch, Mapping):
        if input_key is not None and input_key not in batch:
            raise MisconfigurationException(
                f"input_key: {input_key!r} is not a key of the batch; its keys: {list(batch)}"
            )
        input_key = input_key or next((k for k in INPUT_KEYS if k in batch), None)
        inputs, labels, masks = batch.get(input_key), _first(batch, LABEL_KEYS), _first(batch, MASK_KEYS)
        skip = {input_key, *LABEL_KEYS, *MASK_KEYS}
        tensors = {k: v for k, v in batch.items() if k not in skip and isinstance(v, Tensor) and v.dim() > 0}
    elif isinstance(batch, (tuple, list)) and batch:
        inputs, labels, masks = batch[0], (batch[1] if len(batch) > 1 else None), (batch[2] if len(batch) > 2 else None)
    else:
        inputs = labels = masks = None
    if not isinstance(inputs, Tensor):
        raise MisconfigurationException(
            f"probe: cannot find the input tensor in a batch of type {type(batch).__name__}; batches should be a "
            f"tensor, a tuple (inputs, labels[, masks]) or a dict with one of the keys {list(INPUT_KEYS)} "
            f"(or pass input_key=)"
        )
    if inputs.dim() == 0:
        raise MisconfigurationException(
            "probe: expected a batch of examples (a tensor with the examples in dim 0, e.g. (N, C, H, W)), got a "
            f"0-dim tensor ({inputs.item()!r}); a single example needs its batch dim: x.unsqueeze(0)"
        )
    n = inputs.shape[0]
    if strict and labels is not None and not _is_labels(labels, n):
        raise MisconfigurationException(
            f"probe: expected labels as {n} integer class indices (one per example), got "
            + (
                f"a tensor of shape {tuple(labels.shape)} and dtype {labels.dtype}"
                if isinstance(labels, Tensor)
                else type(labels).__name__
            )
        )
    return Probe(
        inputs,
        labels if _is_labels(labels, n) else None,
        (
            masks.reshape(n, *inputs.shape[1:] if inputs.dim() == 2 else inputs.shape[-2:]).bool()
            if _is_masks(masks, inputs)
            else None
        ),
        {k: v for k, v in tensors.items() if v.shape[0] == n},
        input_key if isinstance(batch, Mapping) else None,
    )


def probe_from_value(value: Any, input_key: str | None = None) -> Probe:
    """An explicit probe: a tensor, ``(inputs, labels)``, ``(inputs, labels, masks)`` or a dict batch."""
    probe = unpack_batch(value, input_key, strict=True)
    if len(probe) == 0:
        raise MisconfigurationException("probe: the probe batch is empty")
    return probe


def round_robin(labels: Sequence[int | None], count: int) -> list[int]:
    """Positions picking ``count`` items, cycling over the classes in order of first appearance."""
    known = [label for label in labels if label is not None]
    if len(known) < len(labels):
        return list(range(min(count, len(labels))))
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(known):
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


def select_probe(dataloader: DataLoader[Any], count: int, input_key: str | None = None) -> Probe:
    """``count`` examples from ``dataloader``'s dataset, at least one per class where possible.

    Fewer when the dataset holds fewer (a warning says so).
    """
    dataset = dataloader.dataset
    with _preserved_rng():
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            probe = _select_from_iterable(dataloader, count, input_key)
        else:
            items = [dataset[i] for i in range(min(len(dataset), count * SCAN_PER_SAMPLE))]
            labels = [_label_of(dataloader, item, input_key) for item in items]
            picked = round_robin(labels, count)
            probe = _detached(unpack_batch(dataloader.collate_fn([items[p] for p in picked]), input_key))
    if len(probe) < count:
        rank_zero_warn(
            f"AttributionMonitor: num_probe_samples={count}, but the validation data holds only {len(probe)} "
            f"examples; the probe has {len(probe)}"
        )
    return probe


def _label_of(dataloader: DataLoader[Any], item: Any, input_key: str | None) -> int | None:
    labels = unpack_batch(dataloader.collate_fn([item]), input_key).labels
    return None if labels is None else int(labels[0])


def _select_from_iterable(dataloader: DataLoader[Any], count: int, input_key: str | None) -> Probe:
    # Iterating a DataLoader draws its base seed from the global generator; the caller preserves it.
    batches: list[Probe] = []
    seen = 0
    for batch in dataloader:
        batches.append(unpack_batch(batch, input_key))
        seen += len(batches[-1])
        if seen >= count * SCAN_PER_SAMPLE:
            break
    if not batches:
        raise MisconfigurationException("probe: the validation dataloader yielded no batches")
    merged = _concatenated(batches)
    labels = [None] * len(merged) if merged.labels is None else merged.labels.tolist()
    return _detached(merged.rows(torch.tensor(round_robin(labels, count))))


def _joined(parts: list[Tensor | None]) -> Tensor | None:
    """The parts concatenated, or None when any is missing."""
    present = [p for p in parts if p is not None]
    return torch.cat(present) if len(present) == len(parts) else None


def _concatenated(batches: list[Probe]) -> Probe:
    keys = set.intersection(*(set(b.forward_tensors) for b in batches))
    return Probe(
        torch.cat([b.inputs for b in batches]),
        _joined([b.labels for b in batches]),
        _joined([b.masks for b in batches]),
        {k: torch.cat([b.forward_tensors[k] for b in batches]) for k in keys},
        batches[0].input_key,
    )


@overload
def _cpu_copy(t: Tensor) -> Tensor: ...
@overload
def _cpu_copy(t: None) -> None: ...
def _cpu_copy(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to("cpu").clone()


def _detached(probe: Probe) -> Probe:
    """CPU copies, outside any inference mode, so the probe can join autograd graphs later."""
    tensors = {k: _cpu_copy(t) for k, t in probe.forward_tensors.items()}
    return Probe(_cpu_copy(probe.inputs), _cpu_copy(probe.labels), _cpu_copy(probe.masks), tensors, probe.input_key)


def validation_dataloader(trainer: pl.Trainer) -> DataLoader[Any]:
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
