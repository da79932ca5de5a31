"""InfluenceMonitor: TracIn computed online while the model trains, without saving checkpoints."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_xai._compute.explain import untouched_training_state
from lightning_xai._compute.online_tracin import (
    INDEX_KEY,
    LossFn,
    MissingIndexError,
    OnlineTracIn,
    last_layer_factors,
    split_indexed_batch,
)
from lightning_xai._write.writers import tensorboard_writer

__all__ = ["IndexedDataset", "InfluenceMonitor", "MissingIndexError"]


class IndexedDataset(Dataset[Any]):
    """A dataset whose items also say which example they are: ``(x, y)`` becomes ``(x, y, index)`` and a dict
    item gets an ``"index"`` key. What :class:`InfluenceMonitor` needs from the training data.

    Args:
        dataset: a map-style dataset of ``(x, y)`` pairs or dicts.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 0])))
        >>> data[2][2]
        2
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # map-style datasets have a length

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if isinstance(item, Mapping):
            if INDEX_KEY in item:
                raise TypeError(f"IndexedDataset: the item already has a {INDEX_KEY!r} key")
            return {**item, INDEX_KEY: index}
        if isinstance(item, (tuple, list)) and len(item) == 2:
            return (item[0], item[1], index)
        raise TypeError(f"IndexedDataset: expected items (x, y) or dicts, got {type(item).__name__}")


def _cross_entropy(scores: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(scores, labels, reduction="none")


class InfluenceMonitor(Callback):
    """TracIn (Pruthi et al., 2020) on the last linear layer, accumulated at every training step: which training
    examples pushed the loss of each probe example down (proponents) or up (opponents), and which training
    examples have the largest self-influence (often mislabeled or atypical ones).

    ``influence(z, z') = sum_t lr_t * grad L(w_t, z) . grad L(w_t, z')`` over the steps ``t`` whose batch held
    ``z``: each term is computed in ``on_train_batch_start``, at the weights ``w_t`` the step's forward uses
    (before its optimizer step; all micro-batches of an accumulated step see the same weights), with the
    learning rate of the optimizer's parameter group holding the layer's weight (read at every step, so
    schedules are followed). Gradients are those of ``layer``'s weight, in closed form (the outer product of
    ``dL/d(output)`` and the layer's input, as :class:`attribution.influence.TracInCPFast`; the bias is left
    out), with the model in eval mode (no dropout, BatchNorm running statistics), so the scores equal
    TracInCPFast's over per-step checkpoints weighted by their learning rates. The per-example losses are
    not divided by the batch size (Pruthi et al.'s TracInCP convention).

    Training is not changed: the gradients are taken on detached parameters with ``torch.autograd.grad``,
    modes are restored, the global RNG is forked and no hook outlives a step. The cost is one more forward
    of each training batch (in eval mode) and of the probe per step.

    Memory is bounded: per probe example, exact running sums for a pool of ``num_candidates`` examples with
    the largest and ``num_candidates`` with the most negative scores (an example that enters the pool late,
    or is evicted and comes back, misses its earlier contributions); self-influence, visit count and label
    for every training example (one float and two integers each).

    Data contract: each training batch says which dataset examples it holds, as ``(x, y, index)`` or a dict
    with ``input_key``, ``label_key`` and ``"index"``; wrap the dataset in :class:`IndexedDataset`. Indices
    are never guessed from the batch order: a batch without them raises :class:`MissingIndexError`.

    At the end of every ``every_n_epochs``-th epoch it writes, at the trainer's ``global_step``:

    - to TensorBoard (the trainer's first TensorBoardLogger): a table of the top ``num_suspects``
      self-influence examples (``influence/suspects``) and per probe example its top ``k`` proponents and
      opponents (``influence/probe_<i>``), as text;
    - to every logger: ``influence/self_influence_max`` and ``influence/self_influence_mean``;
    - beside the logs (``artifact_dir``, default ``trainer.log_dir`` or the root directory):
      ``influence_suspects_epoch_XXXX.csv`` (rank, index, label, self_influence, visits: every training
      example seen so far, most self-influential first) and ``influence_probe_epoch_XXXX.csv`` (probe, kind,
      rank, index, label, score).

    Args:
        probe: ``(inputs, labels)``: the test examples whose influences are tracked.
        layer: dotted name of a ``nn.Linear`` module whose output leads to the scores; default: the model's
            last ``nn.Linear``.
        loss_fn: ``loss_fn(scores, labels)`` giving one loss per example; default cross-entropy.
        k: proponents and opponents listed per probe example.
        num_candidates: pool size per probe example and sign; default ``4 * k``.
        num_suspects: self-influence examples in the TensorBoard table.
        every_n_epochs: write at the end of every n-th epoch.
        input_key: in dict batches, the key of the model's input.
        label_key: in dict batches, the key of the labels.
        artifact_dir: where the CSV files go.
        seed: seed of the private RNG stream the gradients run under.

    Invalid arguments raise Lightning's ``MisconfigurationException`` here, an unknown or non-linear ``layer``
    at setup (with the names of the model's linear layers).

    Example:
        >>> import lightning as L
        >>> from lightning_xai import InfluenceMonitor
        >>> probe = (torch.randn(4, 8), torch.tensor([0, 1, 0, 1]))
        >>> monitor = InfluenceMonitor(probe, k=3)
        >>> trainer = L.Trainer(callbacks=[monitor])  # train on IndexedDataset(your_dataset)
    """

    def __init__(
        self,
        probe: tuple[Tensor, Tensor],
        layer: str | None = None,
        loss_fn: LossFn | None = None,
        k: int = 5,
        num_candidates: int | None = None,
        num_suspects: int = 20,
        every_n_epochs: int = 1,
        input_key: str = "input",
        label_key: str = "label",
        artifact_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        if not (isinstance(probe, (tuple, list)) and len(probe) == 2 and all(isinstance(t, Tensor) for t in probe)):
            raise MisconfigurationException(
                f"InfluenceMonitor: probe must be a pair (inputs, labels) of tensors, got {type(probe).__name__}"
            )
        if len(probe[0]) != len(probe[1]) or len(probe[0]) == 0:
            raise MisconfigurationException(
                f"InfluenceMonitor: probe inputs and labels must have the same, non-zero number of examples; got "
                f"{len(probe[0])} and {len(probe[1])}"
            )
        for name, value in (("k", k), ("num_suspects", num_suspects), ("every_n_epochs", every_n_epochs)):
            if not isinstance(value, int) or value < 1:
                raise MisconfigurationException(f"InfluenceMonitor: {name} must be a positive int, got {value!r}")
        if num_candidates is not None and (not isinstance(num_candidates, int) or num_candidates < k):
            raise MisconfigurationException(
                f"InfluenceMonitor: num_candidates must be an int >= k ({k}), got {num_candidates!r}"
            )
        self.probe = (probe[0].detach().clone(), probe[1].detach().clone())
        self.layer = layer
        self.loss_fn: LossFn = loss_fn if loss_fn is not None else _cross_entropy
        self.k = k
        self.num_candidates = num_candidates if num_candidates is not None else 4 * k
        self.num_suspects = num_suspects
        self.every_n_epochs = every_n_epochs
        self.input_key = input_key
        self.label_key = label_key
        self.artifact_dir = None if artifact_dir is None else Path(artifact_dir)
        self.seed = seed
        self.tracin = OnlineTracIn(len(probe[0]), self.num_candidates)
        self._module: nn.Linear | None = None
        self._active = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer, k=self.k, num_candidates=self.num_candidates)

    # ------------------------------------------------------------------ Lightning hooks: whether to act

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._active = stage == "fit" and not trainer.fast_dev_run  # type: ignore[attr-defined]  # undeclared
        if not self._active:
            return
        self._module = self._resolve_layer(pl_module)
        if trainer.world_size > 1:
            rank_zero_warn(
                "InfluenceMonitor: scores are not gathered across processes; each process sums over its own "
                "share of the batches and only global rank zero writes (its share)."
            )

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._active or self._module is None:
            return
        self._accumulate(trainer, pl_module, self._module, batch)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._write(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"tracin": self.tracin.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracin = OnlineTracIn.from_state_dict(state_dict["tracin"])

    # ------------------------------------------------------------------ helpers: compute, write

    def _resolve_layer(self, model: nn.Module) -> nn.Linear:
        linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        if self.layer is None:
            if not linear:
                raise MisconfigurationException(
                    "InfluenceMonitor: the model has no nn.Linear layer; name one with layer="
                )
            name = linear[-1]
        else:
            name = self.layer
        module = dict(model.named_modules()).get(name)
        if not isinstance(module, nn.Linear):
            what = "is not an nn.Linear" if module is not None else "does not exist"
            raise MisconfigurationException(
                f"InfluenceMonitor: layer {name!r} {what}; the model's linear layers are {linear}"
            )
        return module

    def _learning_rate(self, trainer: pl.Trainer, layer: nn.Linear) -> float:
        if not trainer.optimizers:
            raise MisconfigurationException(
                "InfluenceMonitor: the trainer has no optimizer to read the learning rate from"
            )
        groups = trainer.optimizers[0].param_groups
        for group in groups:
            if any(p is layer.weight for p in group["params"]):
                return float(group["lr"])
        return float(groups[0]["lr"])

    def _accumulate(self, trainer: pl.Trainer, model: pl.LightningModule, layer: nn.Linear, batch: Any) -> None:
        parts = split_indexed_batch(batch, self.input_key, self.label_key)
        lr = self._learning_rate(trainer, layer)
        device = layer.weight.device
        inputs, labels = (t.to(device) for t in self.probe)
        with torch.inference_mode(False), untouched_training_state(model, self.seed):
            probe = last_layer_factors(model, layer, inputs, labels, self.loss_fn)
            train = last_layer_factors(model, layer, parts.inputs, parts.labels, self.loss_fn)
        self.tracin.update(probe, train, parts.indices, parts.labels, lr)

    def _write(self, trainer: pl.Trainer) -> None:
        tracin, step, epoch = self.tracin, trainer.global_step, trainer.current_epoch
        suspects = tracin.suspects()
        values = tracin.self_influence[suspects]
        if len(suspects):
            metrics = {
                "influence/self_influence_max": float(values[0]),
                "influence/self_influence_mean": float(values.mean()),
            }
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        if not trainer.is_global_zero:
            return
        directory = self.artifact_dir or Path(trainer.log_dir or trainer.default_root_dir)
        directory.mkdir(parents=True, exist_ok=True)
        labels, visits = tracin.labels[suspects].tolist(), tracin.visits[suspects].tolist()
        rows = [
            [rank, index, label, f"{value:.9g}", visit]
            for rank, (index, label, value, visit) in enumerate(zip(suspects.tolist(), labels, values.tolist(), visits))
        ]
        _write_csv(
            directory / f"influence_suspects_epoch_{epoch:04d}.csv",
            ["rank", "index", "label", "self_influence", "visits"],
            rows,
        )
        probe_rows: list[list[Any]] = []
        for kind, ranked in (("proponent", tracin.proponents(self.k)), ("opponent", tracin.opponents(self.k))):
            for i, (indices, scores) in enumerate(zip(ranked.indices.tolist(), ranked.scores.tolist())):
                for rank, (index, score) in enumerate((x, s) for x, s in zip(indices, scores) if x >= 0):
                    probe_rows.append([i, kind, rank, index, int(tracin.labels[index]), f"{score:.9g}"])
        _write_csv(
            directory / f"influence_probe_epoch_{epoch:04d}.csv",
            ["probe", "kind", "rank", "index", "label", "score"],
            probe_rows,
        )
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        header = "| rank | index | label | self-influence | visits |\n|---|---|---|---|---|\n"
        body = "".join(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |\n" for r in rows[: self.num_suspects])
        writer.add_text("influence/suspects", header + body, step)
        for i in range(len(self.probe[0])):
            lines = [r for r in probe_rows if r[0] == i]
            table = "| kind | rank | index | label | score |\n|---|---|---|---|---|\n"
            table += "".join(f"| {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |\n" for r in lines)
            label = self.probe[1][i]
            title = f"probe {i}, label {int(label)}" if label.dim() == 0 else f"probe {i}"
            writer.add_text(f"influence/probe_{i}", f"{title}\n\n" + table, step)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(header)
    out.writerows(rows)
    path.write_text(buffer.getvalue())
