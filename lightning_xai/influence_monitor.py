"""InfluenceMonitor: TracIn computed online while the model trains, without saving checkpoints."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_xai._compute.explain import untouched_training_state
from lightning_xai._compute.indexed_batch import INDEX_KEY, MissingIndexError, split_indexed_batch, split_indexed_item
from lightning_xai._compute.online_tracin import OnlineTracIn, combined
from lightning_xai._compute.training_gradients import LossFn, TrainingGradients
from lightning_xai._config.arguments import check_alone, check_strategy, labelled_probe
from lightning_xai._draw import render
from lightning_xai._draw.influence_sheet import as_images, influence_sheet
from lightning_xai._write.image_sinks import image_sinks
from lightning_xai._write.picture import Picture
from lightning_xai._write.table_sinks import table_sinks

__all__ = ["IndexedDataset", "InfluenceMonitor", "InfluencePoint", "InfluenceReader", "MissingIndexError"]


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


@dataclass(frozen=True)
class InfluencePoint:
    """What an :class:`InfluenceMonitor` logged at one point: the running scores of all processes added up.

    Attributes:
        step: the trainer's ``global_step``.
        epoch: the epoch that just ended.
        tracin: the running scores (self-influence, visits and labels per training example; the pools).
        num_suspects: how many top self-influence examples the monitor shows.
    """

    step: int
    epoch: int
    tracin: OnlineTracIn
    num_suspects: int


class InfluenceReader(Protocol):
    """A callback that acts on what an :class:`InfluenceMonitor` logged (e.g.
    :class:`~lightning_xai.InfluenceRegressionCheck`): the monitor calls ``on_influence_point`` of every
    callback of the trainer whose ``influence_read`` is that monitor, on every rank, at every point."""

    @property
    def influence_read(self) -> InfluenceMonitor | None:
        """The monitor this callback reads (None: none, e.g. before ``setup``)."""

    def on_influence_point(self, trainer: pl.Trainer, point: InfluencePoint) -> None:
        """Act on the scores the monitor logged at ``point``."""


class InfluenceMonitor(Callback):
    """TracIn (Pruthi et al., 2020) accumulated at every training step: which training examples pushed the
    loss of each probe example down (proponents) or up (opponents), and which training examples have the
    largest self-influence (often mislabeled or atypical ones).

    ``influence(z, z') = sum_t lr_t * grad L(w_t, z) . grad L(w_t, z')`` over the steps ``t`` whose batch held
    ``z``: each term is computed in ``on_train_batch_start``, at the weights ``w_t`` the step's forward uses
    (before its optimizer step; all micro-batches of an accumulated step see the same weights), with the
    learning rate of the optimizer's parameter group holding each parameter (read at every step, so
    schedules are followed). The model is in eval mode for these gradients (no dropout, BatchNorm running
    statistics), and the per-example losses are not divided by the batch size (Pruthi et al.'s TracInCP
    convention). With momentum or Adam the terms still use ``lr * grad . grad``, as the paper does.

    Which gradients (``layers``):

    - ``None`` (default): the weight of the model's last ``nn.Linear``, in closed form (the outer product of
      ``dL/d(output)`` and the layer's input, as :class:`attribution.influence.TracInCPFast`; the bias is
      left out), so the scores equal TracInCPFast's over per-step checkpoints weighted by their learning
      rates. Cost: one more forward of each training batch and of the probe per step; no weight gradient is
      materialised.
    - a module name or a list of them: every trainable parameter of those modules (as
      :class:`attribution.influence.TracInCP` with ``layers``); ``"all"``: every trainable parameter of the
      model. Exact per-example gradients from ``torch.func``, the training batch in chunks cut to the memory
      budget: the extra memory is ``(probe size + chunk) * parameters * 4`` bytes, and the time several
      backward passes per step.

    No random projection is used: the monitor keeps scores, not gradients, so its memory does not grow with
    the data set without one (a projection would only add noise).

    Training is not changed: the gradients are taken on detached parameters, modes are restored, the global
    RNG is forked and no hook outlives a step.

    Memory is bounded: per probe example, exact running sums for a pool of ``num_candidates`` examples with
    the largest and ``num_candidates`` with the most negative scores (an example that enters the pool late,
    or is evicted and comes back, misses its earlier contributions); self-influence, visit count and label
    for every training example (one float and two integers each).

    Data contract: each training batch says which dataset examples it holds, as ``(x, y, index)`` or a dict
    with ``input_key``, ``label_key`` and ``"index"``; wrap the dataset in :class:`IndexedDataset`. Indices
    are never guessed from the batch order: a batch without them raises :class:`MissingIndexError`.

    Under DDP each process scores its own batches; at each point the processes' scores are added up (the
    pools merged, summing the examples several processes hold), so every process, the checks and the logs
    see the same numbers, and a checkpoint holds them all (a resumed run gives them to rank zero).

    At the end of every ``every_n_epochs``-th epoch it writes, at the trainer's ``global_step``:

    - to every logger: ``influence/self_influence_max``, ``influence/self_influence_mean``, and the cost:
      ``influence/seconds`` (time spent since the previous point), ``influence/share_of_time`` (of the wall
      time since then) and ``influence/state_mib`` (its scores' memory);
    - tables, to TensorBoard's text tab, W&B and MLflow: the top ``num_suspects`` self-influence examples
      (``influence/suspects``) and per probe example its top ``k`` proponents and opponents
      (``influence/probe_<i>``); with ``example_text`` a column shows each example as text (e.g. tokens);
    - images, to TensorBoard, W&B and MLflow (PNG files when no logger shows images): per probe example the
      example with its proponents and opponents from the training set (``influence/probe_<i>``), when the
      inputs are images (``(C, H, W)`` with 1 or 3 channels, ``(H, W)``, or flat with ``image_shape``) and
      the training dataset can be indexed;
    - beside the logs (``artifact_dir``, default ``trainer.log_dir`` or the root directory):
      ``influence_suspects_epoch_XXXX.csv`` (rank, index, label, self_influence, visits: every training
      example seen so far, most self-influential first) and ``influence_probe_epoch_XXXX.csv`` (probe, kind,
      rank, index, label, score).

    Args:
        probe: ``(inputs, labels)``: the test examples whose influences are tracked.
        layers: which gradients: ``None`` (the last linear layer's weight), a module name, a list of them, or
            ``"all"`` (see above).
        loss_fn: ``loss_fn(scores, labels)`` giving one loss per example; default cross-entropy.
        k: proponents and opponents listed per probe example.
        num_candidates: pool size per probe example and sign; default ``4 * k``.
        num_suspects: self-influence examples in the tables.
        every_n_epochs: write at the end of every n-th epoch.
        input_key: in dict batches, the key of the model's input.
        label_key: in dict batches, the key of the labels.
        image_shape: the shape to show flat inputs as images in, e.g. ``(8, 8)``.
        example_text: ``example_text(x) -> str`` for one input (e.g. decoding token ids), shown in the tables.
        artifact_dir: where the CSV files go.
        seed: seed of the private RNG stream the gradients run under.

    Invalid arguments raise Lightning's ``MisconfigurationException`` here, unknown layers at setup (with the
    names of the model's layers).

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
        layers: str | Sequence[str] | None = None,
        loss_fn: LossFn | None = None,
        k: int = 5,
        num_candidates: int | None = None,
        num_suspects: int = 20,
        every_n_epochs: int = 1,
        input_key: str = "input",
        label_key: str = "label",
        image_shape: Sequence[int] | None = None,
        example_text: Callable[[Tensor], str] | None = None,
        artifact_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        self.probe = labelled_probe(probe, "InfluenceMonitor")
        for name, value in (("k", k), ("num_suspects", num_suspects), ("every_n_epochs", every_n_epochs)):
            if not isinstance(value, int) or value < 1:
                raise MisconfigurationException(f"InfluenceMonitor: {name} must be a positive int, got {value!r}")
        if num_candidates is not None and (not isinstance(num_candidates, int) or num_candidates < k):
            raise MisconfigurationException(
                f"InfluenceMonitor: num_candidates must be an int >= k ({k}), got {num_candidates!r}"
            )
        if layers is not None and not (
            isinstance(layers, str)
            or (isinstance(layers, Sequence) and layers and all(isinstance(n, str) for n in layers))
        ):
            raise MisconfigurationException(
                "InfluenceMonitor: layers must be None, a module name, a non-empty list of them or 'all'; "
                f"got {layers!r}"
            )
        if image_shape is not None and int(torch.Size(image_shape).numel()) != probe[0][0].numel():
            raise MisconfigurationException(
                f"InfluenceMonitor: image_shape {tuple(image_shape)} must hold one input's "
                f"{probe[0][0].numel()} values (shape {tuple(probe[0].shape[1:])})"
            )
        self.layers = [layers] if isinstance(layers, str) and layers != "all" else layers
        self.loss_fn: LossFn = loss_fn if loss_fn is not None else _cross_entropy
        self.k = k
        self.num_candidates = num_candidates if num_candidates is not None else 4 * k
        self.num_suspects = num_suspects
        self.every_n_epochs = every_n_epochs
        self.input_key = input_key
        self.label_key = label_key
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.example_text = example_text
        self.artifact_dir = None if artifact_dir is None else Path(artifact_dir)
        self.seed = seed
        self.tracin = OnlineTracIn(len(probe[0]), self.num_candidates)
        self._gradients: TrainingGradients | None = None
        self._active = False
        self._warned: set[str] = set()
        self._seconds = 0.0
        self._since = time.perf_counter()

    @property
    @override
    def state_key(self) -> str:
        layers = self.layers if not isinstance(self.layers, list) else tuple(self.layers)
        return self._generate_state_key(layers=layers, k=self.k, num_candidates=self.num_candidates)

    @property
    def _used(self) -> TrainingGradients:
        """The parameters the scores use (resolved at setup)."""
        if self._gradients is None:
            raise MisconfigurationException("InfluenceMonitor: no model yet; its layers are resolved at setup")
        return self._gradients

    # ------------------------------------------------------------------ Lightning hooks: whether to act

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._active = stage == "fit" and not trainer.fast_dev_run  # type: ignore[attr-defined]  # undeclared
        if self._active:
            check_strategy(trainer.strategy, "InfluenceMonitor")
            check_alone(
                trainer.callbacks,  # type: ignore[attr-defined]  # undeclared
                self,
                "influence/ tags and suspect CSV files",
                "Give one monitor every layer to score (layers=[...]).",
            )
            self._gradients = self._resolve(pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seconds, self._since = 0.0, time.perf_counter()
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if self._active and hasattr(dataset, "__len__"):
            self.tracin.reserve(len(dataset))  # type: ignore[arg-type]  # checked: it has a length

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._active:
            start = time.perf_counter()
            self._accumulate(trainer, pl_module, batch)
            self._seconds += time.perf_counter() - start

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            point = InfluencePoint(
                trainer.global_step, trainer.current_epoch, self._gathered(trainer), self.num_suspects
            )
            self._log(trainer, point)
            for callback in trainer.callbacks:  # type: ignore[attr-defined]  # Lightning sets it undeclared
                if getattr(callback, "influence_read", None) is self:
                    callback.on_influence_point(trainer, point)

    @override
    def state_dict(self) -> dict[str, Any]:
        # Lightning asks every process when it saves a checkpoint, so all of them take part in the gathering.
        strategy = self._strategy
        if strategy is not None and strategy.world_size > 1:
            return {"tracin": _gather(self.tracin, strategy).state_dict(), "combined": True}
        return {"tracin": self.tracin.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        tracin = OnlineTracIn.from_state_dict(state_dict["tracin"])
        if state_dict.get("combined") and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            tracin = tracin.emptied()  # the processes' sums are in rank zero's; counting them twice is wrong
        self.tracin = tracin

    # ------------------------------------------------------------------ helpers: compute

    _strategy: Any = None

    def _resolve(self, model: pl.LightningModule) -> TrainingGradients:
        self._strategy = model.trainer.strategy if model._trainer is not None else None
        modules = dict(model.named_modules())
        if self.layers is None:
            linear = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
            if not linear:
                raise MisconfigurationException(
                    "InfluenceMonitor: the model has no nn.Linear layer; name the layers to use with layers="
                )
            last = modules[linear[-1]]
            assert isinstance(last, nn.Linear)
            return TrainingGradients(model, None, last, self.loss_fn)
        if self.layers == "all":
            names = [n for n, p in model.named_parameters() if p.requires_grad]
        else:
            unknown = [n for n in self.layers if n not in modules]
            if unknown:
                known = [n for n, m in modules.items() if n and any(True for _ in m.parameters(recurse=False))]
                raise MisconfigurationException(
                    f"InfluenceMonitor: layers {unknown} do not exist; the model's layers with parameters are {known}"
                )
            names = [
                f"{layer}.{n}" if layer else n
                for layer in self.layers
                for n, p in modules[layer].named_parameters()
                if p.requires_grad
            ]
        if not names:
            raise MisconfigurationException(f"InfluenceMonitor: layers {self.layers!r} have no trainable parameters")
        return TrainingGradients(model, names, None, self.loss_fn)

    def _rates(self, trainer: pl.Trainer) -> list[float]:
        """The learning rate of each parameter the scores use, from the optimizers' groups (0: not trained)."""
        if not trainer.optimizers:
            raise MisconfigurationException(
                "InfluenceMonitor: the trainer has no optimizer to read the learning rate from"
            )
        rate_of = {id(p): float(g["lr"]) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
        missing = [n for n, p in zip(self._used.names, self._used.tensors) if id(p) not in rate_of]
        if missing:
            self._warn_once(
                "untrained",
                f"InfluenceMonitor: parameters {missing} are in no optimizer: they do not train, so they add "
                "nothing to the scores",
            )
        return [rate_of.get(id(p), 0.0) for p in self._used.tensors]

    def _accumulate(self, trainer: pl.Trainer, model: pl.LightningModule, batch: Any) -> None:
        parts = split_indexed_batch(batch, self.input_key, self.label_key)
        if len(parts.indices) == 0:
            return
        rates = self._rates(trainer)
        device = self._used.tensors[0].device
        probe = tuple(t.to(device) for t in self.probe)
        with torch.inference_mode(False), untouched_training_state(model, self.seed):
            scores = self._used.step_scores(probe, parts.inputs, parts.labels, rates)  # type: ignore[arg-type]
        self.tracin.update(parts.indices, parts.labels, scores)

    def _gathered(self, trainer: pl.Trainer) -> OnlineTracIn:
        return _gather(self.tracin, trainer.strategy) if trainer.world_size > 1 else self.tracin

    def _warn_once(self, key: str, message: str, warn: bool = True) -> None:
        """Say ``message`` once per monitor: as a warning, or (``warn=False``) as information."""
        if key not in self._warned:
            self._warned.add(key)
            (rank_zero_warn if warn else rank_zero_info)(message)

    # ------------------------------------------------------------------ helpers: write

    def _log(self, trainer: pl.Trainer, point: InfluencePoint) -> None:
        tracin, step = point.tracin, point.step
        suspects = tracin.suspects()
        values = tracin.self_influence[suspects]
        now = time.perf_counter()
        seconds, wall = self._seconds, max(now - self._since, 1e-9)
        self._seconds, self._since = 0.0, now
        state_bytes = sum(t.numel() * t.element_size() for t in tracin.state_dict().values() if isinstance(t, Tensor))
        metrics = {
            "influence/seconds": seconds,
            "influence/share_of_time": seconds / wall,
            "influence/state_mib": state_bytes / 2**20,
        }
        if len(suspects):
            metrics["influence/self_influence_max"] = float(values[0])
            metrics["influence/self_influence_mean"] = float(values.mean())
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        # Trainer.log_dir is a broadcast under DDP: every process asks, only rank zero writes.
        directory = self.artifact_dir or Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        directory.mkdir(parents=True, exist_ok=True)
        labels, visits = tracin.labels[suspects].tolist(), tracin.visits[suspects].tolist()
        rows = [
            [rank, index, label, f"{value:.9g}", visit]
            for rank, (index, label, value, visit) in enumerate(zip(suspects.tolist(), labels, values.tolist(), visits))
        ]
        columns = ["rank", "index", "label", "self_influence", "visits"]
        _write_csv(directory / f"influence_suspects_epoch_{point.epoch:04d}.csv", columns, rows)
        probe_rows: list[list[Any]] = []
        for kind, ranked in (("proponent", tracin.proponents(self.k)), ("opponent", tracin.opponents(self.k))):
            for i, (indices, scores) in enumerate(zip(ranked.indices.tolist(), ranked.scores.tolist())):
                for rank, (index, score) in enumerate((x, s) for x, s in zip(indices, scores) if x >= 0):
                    probe_rows.append([i, kind, rank, index, int(tracin.labels[index]), f"{score:.9g}"])
        probe_columns = ["probe", "kind", "rank", "index", "label", "score"]
        _write_csv(directory / f"influence_probe_epoch_{point.epoch:04d}.csv", probe_columns, probe_rows)
        shown = sorted({r[1] for r in rows[: self.num_suspects]} | {r[3] for r in probe_rows})
        examples = self._training_examples(trainer, shown)
        texts = self._texts(examples)
        self._tables(trainer, point, columns, rows[: self.num_suspects], probe_columns, probe_rows, texts, cost=metrics)
        if examples is not None:
            self._images(trainer, point, probe_rows, examples, directory)

    def _training_examples(self, trainer: pl.Trainer, indices: list[int]) -> dict[int, tuple[Tensor, Any]] | None:
        """``index -> (x, y)`` read from the training dataset; None (with a warning, once) where it cannot be
        indexed."""
        if not indices or (self.example_text is None and not self._images_possible()):
            return None
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__getitem__"):
            self._warn_once(
                "dataset",
                "InfluenceMonitor: the training data is not one map-style dataset, so the examples cannot be "
                "shown; the tables and CSV files list their indices",
            )
            return None
        found = {}
        for index in indices:
            x, y, own = split_indexed_item(dataset[index], self.input_key, self.label_key)
            if int(own) != index:
                raise MissingIndexError(
                    f"InfluenceMonitor: the training dataset's item {index} says it is example {int(own)}; the "
                    "index must be the item's position in the dataset (lightning_xai.IndexedDataset does this)"
                )
            found[index] = (torch.as_tensor(x), y)
        return found

    def _images_possible(self) -> bool:
        possible = as_images(self.probe[0][:1], self.image_shape) is not None
        if not possible:
            self._warn_once(
                "images",
                f"InfluenceMonitor: inputs of shape {tuple(self.probe[0].shape[1:])} are not shown as images; pass "
                "image_shape= for flat images, or example_text= to show them as text in the tables",
                warn=False,
            )
        return possible

    def _texts(self, examples: dict[int, tuple[Tensor, Any]] | None) -> dict[int, str]:
        if self.example_text is None or examples is None:
            return {}
        return {index: self.example_text(x) for index, (x, _) in examples.items()}

    def _tables(
        self,
        trainer: pl.Trainer,
        point: InfluencePoint,
        columns: list[str],
        rows: list[list[Any]],
        probe_columns: list[str],
        probe_rows: list[list[Any]],
        texts: dict[int, str],
        cost: dict[str, float],
    ) -> None:
        extra = ["text"] if texts else []
        sinks = table_sinks(trainer)
        title = (
            f"Most self-influential training examples, step {point.step} (epoch {point.epoch}); the monitor took "
            f"{cost['influence/seconds']:.2f} s ({cost['influence/share_of_time']:.0%} of the time) since the "
            f"previous point and holds {cost['influence/state_mib']:.2f} MiB"
        )
        suspects = [row + [texts.get(row[1], "")] * bool(texts) for row in rows]
        for sink in sinks:
            sink.write("influence/suspects", columns + extra, suspects, point.step, title)
        for i in range(len(self.probe[0])):
            lines = [r[1:] + [texts.get(r[3], "")] * bool(texts) for r in probe_rows if r[0] == i]
            label = self.probe[1][i]
            name = f"probe {i}, label {int(label)}" if label.dim() == 0 else f"probe {i}"
            title = f"{name}: top proponents and opponents, step {point.step} (epoch {point.epoch})"
            for sink in sinks:
                sink.write(f"influence/probe_{i}", probe_columns[1:] + extra, lines, point.step, title)

    def _images(
        self,
        trainer: pl.Trainer,
        point: InfluencePoint,
        probe_rows: list[list[Any]],
        examples: dict[int, tuple[Tensor, Any]],
        directory: Path,
    ) -> None:
        probe_images = as_images(self.probe[0].detach().cpu(), self.image_shape)
        if probe_images is None:
            return
        sinks = image_sinks(trainer, directory)
        for i in range(len(self.probe[0])):
            groups = []
            for kind in ("proponent", "opponent"):
                chosen = [r for r in probe_rows if r[0] == i and r[1] == kind]
                inputs = [examples[r[3]][0].detach().cpu() for r in chosen]
                images = as_images(torch.stack(inputs), self.image_shape) if inputs else probe_images[:0]
                captions = [[f"#{r[3]} y={r[4]}", f"{float(r[5]):+.2g}"] for r in chosen]
                groups.append((f"{kind}s", images if images is not None else probe_images[:0], captions))
            label = self.probe[1][i]
            probe_lines = [f"probe {i}"] + ([f"y={int(label)}"] if label.dim() == 0 else [])
            title: list[render.Caption] = [
                f"influence on probe {i}, step {point.step} (epoch {point.epoch})",
                ("#index y=label, score", render.MUTED),
            ]
            picture = Picture(influence_sheet(probe_images[i : i + 1], probe_lines, groups, title))
            caption = f"probe {i}: top {self.k} proponents and opponents at step {point.step}"
            for sink in sinks:
                sink.write(f"influence/probe_{i}", picture, point.step, caption)


def _gather(tracin: OnlineTracIn, strategy: Any) -> OnlineTracIn:
    """Every process's scores added up (a collective call: every process must make it)."""
    state = tracin.state_dict()
    device = strategy.root_device
    length = int(strategy.all_gather(torch.tensor(len(state["self_influence"]), device=device)).max())
    pads = {"self_influence": 0.0, "visits": 0, "labels": -1}
    for name, fill in pads.items():
        vector = state[name]
        state[name] = torch.cat([vector, torch.full((length - len(vector),), fill, dtype=vector.dtype)])
    tensors = [*pads, "pool_indices", "pool_scores"]
    gathered = {name: strategy.all_gather(state[name].to(device)).cpu() for name in tensors}
    ranks = gathered["pool_indices"].shape[0]
    return combined([{**state, **{name: gathered[name][r] for name in tensors}} for r in range(ranks)])


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(header)
    out.writerows(rows)
    path.write_text(buffer.getvalue())
