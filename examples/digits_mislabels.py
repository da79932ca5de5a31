"""Finding mislabelled training examples with TracIn self-influence, computed while the model trains.

scikit-learn's bundled 8x8 digits (``sklearn.datasets.load_digits``, no
download) with the labels of 10% of the training set flipped to another
class at random.  A small MLP is trained with Lightning (plain SGD) on the
training set wrapped in ``lightning_xai.IndexedDataset``, with an
``InfluenceMonitor`` in the callbacks (its probe: a few clean test digits) and
a callback that saves the MLP's weights (plus the learning rate) at the end
of every epoch.  A training example's TracIn self-influence,
``sum over steps of lr * |grad loss(z)|^2``, is large when the model keeps
having to bend to fit it, which is what a wrong label does; so sorting the
training set by it and inspecting from the top finds the flipped labels
early.  Five rankings are compared:

* the monitor's: TracIn online, at every step whose batch held the example,
  read from its last ``influence_suspects_epoch_XXXX.csv`` (beside the logs);
* TracIn on the epoch checkpoints, from ``attribution.influence.TracInCPFast``;
* the same from Captum's ``captum.influence.TracInCPFast`` when ``main`` is given
  it as ``reference`` (the example never imports Captum; its test passes it),
  checked to agree with ours and timed against it;
* the per-example loss at the final weights (the usual baseline);
* a random order (what inspecting without a ranking gives).

The script prints how many flipped labels each ranking puts in its top 10%,
and writes ``detection_curve.png`` (fraction of flipped labels found against
fraction of the training set inspected), ``detection.json``, the checkpoints
and the TensorBoard logs (the monitor's tables of suspects and of each probe
digit's proponents and opponents) into the output directory (default
``runs/digits_mislabels``).  It runs in about fifteen seconds on two CPU
cores, a third of it imports.

With the default 8 epochs the monitor's ranking puts 85% of the flipped
labels in its top 10% (TracIn on the epoch checkpoints 86%, Captum's the same
scores; random 8%), and the loss more, 94%: the model has not yet memorized
the wrong labels, so they still have a high loss.  Train longer
(``--epochs 60 --hidden 256 --lr 0.1``) and the loss of memorized flipped
labels falls, while self-influence still counts the early epochs in which
they were hard: TracIn, online or on checkpoints, then ranks ahead of the
loss (94% against 92%).

    python examples/digits_mislabels.py
    python examples/digits_mislabels.py --out /tmp/digits --epochs 5 --flip 0.2
    python examples/digits_mislabels.py --epochs 60 --hidden 256 --lr 0.1
    tensorboard --logdir runs/digits_mislabels
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from attribution.influence import TracInCPFast
from lightning_xai import IndexedDataset, InfluenceMonitor

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

INSPECTED = 0.1
"""The share of the training set a person inspects; recall is reported at this budget."""
PROBE_SIZE = 8
"""Clean test digits whose proponents and opponents the monitor tracks (its tables in TensorBoard)."""
MONITOR, OURS, CAPTUM, LOSS, RANDOM = (
    "TracIn online, every step (InfluenceMonitor)",
    "TracIn, epoch checkpoints (ours)",
    "TracIn, epoch checkpoints (Captum)",
    "loss at final weights",
    "random inspection",
)
"""The rankings: their names in the printout, the JSON and the figure's legend."""
STYLES: dict[str, dict[str, Any]] = {
    MONITOR: {"lw": 2.5, "color": "tab:red"},
    OURS: {"lw": 1.5, "color": "tab:blue"},  # thinner than the monitor's: both show where they overlap
    CAPTUM: {"ls": "--", "lw": 1.5, "color": "tab:cyan"},  # dashed over ours: where they agree both stay visible
    LOSS: {"lw": 1.5, "color": "tab:green"},
    RANDOM: {"lw": 1.5, "color": "grey"},
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/digits_mislabels"), help="output directory")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs, one checkpoint each")
    parser.add_argument("--flip", type=float, default=0.1, help="share of training labels flipped")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units of the MLP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress-bar", action="store_true", help="show Lightning's progress bar")
    args = parser.parse_args(argv)
    if not 0 < args.flip < 1:
        parser.error(f"--flip: expected a share in (0, 1), got {args.flip}")
    if args.epochs < 1:
        parser.error(f"--epochs: expected at least 1, got {args.epochs}")
    return args


def noisy_digits(flip: float, generator: torch.Generator) -> tuple[TensorDataset, Tensor, TensorDataset]:
    """The digits split 80/20, pixels scaled to [0, 1], and ``flip`` of the training labels changed to a
    different class. Returns the noisy training set, the mask of flipped examples and the clean test set."""
    digits = load_digits()
    images = torch.as_tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=generator)
    n_train = int(0.8 * len(labels))
    train, test = order[:n_train], order[n_train:]
    noisy = labels[train].clone()
    flipped = torch.zeros(n_train, dtype=torch.bool)
    chosen = torch.randperm(n_train, generator=generator)[: round(flip * n_train)]
    # adding 1..9 modulo 10 always lands on another class
    noisy[chosen] = (noisy[chosen] + torch.randint(1, 10, (len(chosen),), generator=generator)) % 10
    flipped[chosen] = True
    return TensorDataset(images[train], noisy), flipped, TensorDataset(images[test], labels[test])


def mlp(hidden: int) -> nn.Sequential:
    """64 pixels -> ``hidden`` ReLU units -> 10 logits; the last module is the layer TracIn looks at."""
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


class DigitsClassifier(L.LightningModule):
    """The MLP trained with plain SGD on ``(x, y, index)`` batches (the index is the monitor's)."""

    def __init__(self, model: nn.Sequential, lr: float) -> None:
        super().__init__()
        self.mlp = model
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.mlp(x)
        return logits

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels, _ = batch
        loss = nn.functional.cross_entropy(self(inputs), labels)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class EpochCheckpoints(L.Callback):
    """At every epoch end, save ``model``'s state dict with its ``learning_rate`` (the format
    ``attribution.influence``'s and Captum's checkpoint loaders read) to ``folder/epoch-XX.pt``."""

    def __init__(self, folder: Path, model: nn.Module, lr: float) -> None:
        self.folder, self.model, self.lr = folder, model, lr
        self.paths: list[Path] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.folder / f"epoch-{trainer.current_epoch + 1:02d}.pt"
        torch.save({**self.model.state_dict(), "learning_rate": self.lr}, path)
        self.paths.append(path)


def influence_monitor(test_set: TensorDataset) -> InfluenceMonitor:
    """The monitor: TracIn on the last linear layer at every step, for the first ``PROBE_SIZE`` clean test
    digits (their 5 proponents and opponents, shown as 8x8 images in TensorBoard), and the 30 most
    self-influential training digits in its table (its CSV lists them all)."""
    inputs, labels = test_set.tensors
    return InfluenceMonitor((inputs[:PROBE_SIZE], labels[:PROBE_SIZE]), num_suspects=30, image_shape=(8, 8))


def fit(
    model: nn.Sequential,
    data: TensorDataset,
    epochs: int,
    lr: float,
    out: Path,
    generator: torch.Generator,
    callbacks: Sequence[L.Callback] = (),
    progress_bar: bool = False,
) -> L.Trainer:
    """Train ``model`` in place with minibatch SGD (batch size 16, shuffled by ``generator``) on ``data``
    wrapped in :class:`~lightning_xai.IndexedDataset`, logging to TensorBoard under ``out/tensorboard``."""
    loader = DataLoader(IndexedDataset(data), batch_size=16, shuffle=True, generator=generator)
    with quiet_lightning():
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=TensorBoardLogger(out, name="tensorboard"),
            callbacks=list(callbacks),
            enable_checkpointing=False,  # EpochCheckpoints saves what TracIn reads
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
        )
        trainer.fit(DigitsClassifier(model, lr), train_dataloaders=loader)
    return trainer


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up notes (devices found, logger tips), its advice to use worker processes (the
    data is a tensor in memory) and torch's deprecation notice about Lightning's own ``LeafSpec`` use; restore
    the caller's logging level and warning filters afterwards."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
            yield
    finally:
        log.setLevel(level)


def monitor_scores(directory: Path, n: int) -> Tensor:
    """The self-influence of the ``n`` training examples from the monitor's last
    ``influence_suspects_epoch_XXXX.csv`` in ``directory`` (its documented output)."""
    tables = sorted(directory.glob("influence_suspects_epoch_*.csv"))
    if not tables:
        raise FileNotFoundError(f"no influence_suspects_epoch_*.csv in {directory}")
    scores = torch.full((n,), float("nan"), dtype=torch.float64)
    with tables[-1].open(newline="") as f:
        for row in csv.DictReader(f):
            scores[int(row["index"])] = float(row["self_influence"])
    if scores.isnan().any():
        raise ValueError(f"{tables[-1]} lacks {int(scores.isnan().sum())} of the {n} training examples")
    return scores


def timed(compute: Callable[[], Tensor], repeats: int = 3) -> tuple[Tensor, float]:
    """The scores and the best wall-clock seconds of ``repeats`` calls (the first call also pays warm-up)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = compute()
        seconds.append(time.perf_counter() - start)
    return scores.detach(), min(seconds)


def load_checkpoint(model: nn.Module, path: str) -> float:
    """Load one of :class:`EpochCheckpoints`' checkpoints; return its learning rate.

    ``attribution.influence``'s default loader does this already; Captum's default loader keeps the
    ``"learning_rate"`` entry in the state dict and fails on it, so Captum gets this one.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    learning_rate = state.pop("learning_rate")
    model.load_state_dict(state)
    return float(learning_rate)


def self_influence(
    tracin_class: type, model: nn.Sequential, data: TensorDataset, checkpoints: list[Path], **options: Any
) -> Tensor:
    """The training examples' self-influence from ``tracin_class`` (ours or Captum's, same signature) over
    the last linear layer."""
    tracin = tracin_class(
        model,
        model[-1],
        data,
        [str(p) for p in checkpoints],
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=256,
        **options,
    )
    scores: Tensor = tracin.self_influence()
    return scores


def final_loss(model: nn.Module, data: TensorDataset) -> Tensor:
    """The baseline ranking: each training example's loss under its (possibly flipped) label."""
    inputs, labels = data.tensors
    with torch.no_grad():
        return nn.functional.cross_entropy(model(inputs), labels, reduction="none")


def spearman(a: Tensor, b: Tensor) -> float:
    """Rank correlation (no tie correction: the scores are continuous)."""
    ranks = [x.argsort().argsort().double() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def found_curve(scores: Tensor, flipped: Tensor) -> Tensor:
    """Fraction of the flipped labels among the ``k`` highest scores, for k = 1..n."""
    order = scores.argsort(descending=True)
    return flipped[order].double().cumsum(0) / flipped.sum()


def detection_figure(curves: dict[str, Tensor], flip: float, path: Path) -> Path:
    n = len(next(iter(curves.values())))
    inspected = torch.arange(1, n + 1).double() / n
    figure, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, curve in curves.items():
        recall = float(curve[round(INSPECTED * n) - 1])
        ax.plot(inspected, curve, label=f"{name} ({recall:.0%} at {INSPECTED:.0%})", **STYLES[name])
    ax.plot([0, flip, 1], [0, 1, 1], ":", color="black", lw=1, label="ideal (flipped ones first)")
    ax.axvline(INSPECTED, color="grey", lw=0.8, alpha=0.5)
    ax.set(
        xlabel="fraction of training data inspected, highest score first",
        ylabel="fraction of flipped labels found",
        title=f"Finding flipped labels: digits, {flip:.0%} of {n} training labels flipped",
        xlim=(0, min(1.0, 4 * flip)),  # the rankings differ only near the flip rate; beyond it all are done
        ylim=(0, 1.02),
    )
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting: on a busy two-core machine the
    synchronisation of two threads costs far more than the tiny matrix products gain."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None, reference: Any = None) -> dict[str, Any]:
    """Train with the monitor, rank the training set five ways, save the curve and the numbers; return the numbers.

    ``reference``: a class with Captum's ``TracInCPFast`` signature to compare with (the shipped code never
    imports Captum: ``tests/integration/test_digits_mislabels.py`` passes Captum's).
    """
    args = parse_args(argv)
    with one_thread():
        return run(args, reference)


def run(args: argparse.Namespace, reference: Any = None) -> dict[str, Any]:
    """:func:`main` after parsing: the fit with the monitor, the rankings, the figure and the JSON under
    ``args.out``."""
    (args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    train_set, flipped, test_set = noisy_digits(args.flip, generator)
    with torch.random.fork_rng():  # the model's initialization is seeded without touching the global RNG
        torch.manual_seed(args.seed)
        model = mlp(args.hidden)
    inputs, labels = test_set.tensors
    monitor = influence_monitor(test_set)
    checkpoints = EpochCheckpoints(args.out / "checkpoints", model, args.lr)
    start = time.perf_counter()
    callbacks = [monitor, checkpoints]
    trainer = fit(model, train_set, args.epochs, args.lr, args.out, generator, callbacks, args.progress_bar)
    fit_seconds = time.perf_counter() - start
    log_dir = Path(trainer.log_dir or args.out)
    with torch.no_grad():
        accuracy = float((model(inputs).argmax(1) == labels).double().mean())

    scores, times = {MONITOR: monitor_scores(log_dir, len(flipped))}, {}
    paths = checkpoints.paths
    scores[OURS], times["ours"] = timed(lambda: self_influence(TracInCPFast, model, train_set, paths))
    captum_note = None
    if reference is None:
        captum_note = "Captum comparison skipped: no reference class given (its test passes Captum's TracInCPFast)"
        print(captum_note)
    else:
        scores[CAPTUM], times["captum"] = timed(
            lambda: self_influence(reference, model, train_set, paths, checkpoints_load_func=load_checkpoint)
        )
    load_checkpoint(model, str(paths[-1]))  # the TracIn runs leave whichever checkpoint they loaded last
    scores[LOSS] = final_loss(model, train_set)
    scores[RANDOM] = torch.rand(len(flipped), generator=generator)

    n, budget = len(flipped), round(INSPECTED * len(flipped))
    curves = {name: found_curve(s, flipped) for name, s in scores.items()}
    result: dict[str, Any] = {
        "n_train": n,
        "n_flipped": int(flipped.sum()),
        "epochs": args.epochs,
        "test_accuracy": accuracy,
        "inspected_fraction": INSPECTED,
        "inspected": budget,
        "found_in_top": {name: round(float(curve[budget - 1] * flipped.sum())) for name, curve in curves.items()},
        "recall_at_inspected": {name: float(curve[budget - 1]) for name, curve in curves.items()},
        "fit_seconds": fit_seconds,
        "seconds": times,
        "monitor_vs_checkpoints_spearman": spearman(scores[MONITOR], scores[OURS]),
        "log_dir": str(log_dir),
        "checkpoints": [str(p) for p in paths],
    }
    if CAPTUM in scores:
        ours, theirs = scores[OURS], scores[CAPTUM]
        result["captum_agreement"] = {
            "spearman": spearman(ours, theirs),
            "max_relative_difference": float((ours - theirs).abs().max() / theirs.abs().max()),
        }
    else:
        result["captum_agreement"] = None
        result["captum_note"] = captum_note

    figure = detection_figure(curves, args.flip, args.out / "detection_curve.png")
    (args.out / "detection.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{n} training digits, {result['n_flipped']} labels flipped, {args.epochs} epochs "
        f"({fit_seconds:.1f} s with the monitor), clean test accuracy {accuracy:.3f}"
    )
    print(f"flipped labels among the top {INSPECTED:.0%} ({budget} examples) of each ranking:")
    for name, found in result["found_in_top"].items():
        print(f"  {name:<45} {found:>4} / {result['n_flipped']}  ({result['recall_at_inspected'][name]:.0%})")
    print(f"monitor (every step) against epoch checkpoints: Spearman {result['monitor_vs_checkpoints_spearman']:.3f}")
    print("checkpoint self-influence time (best of 3): " + ", ".join(f"{k} {v:.3f} s" for k, v in times.items()))
    if result["captum_agreement"] is not None:
        agreement = result["captum_agreement"]
        print(
            f"agreement with Captum: Spearman {agreement['spearman']:.6f}, "
            f"max relative difference {agreement['max_relative_difference']:.2e}"
        )
    print(f"figure: {figure}")
    print(f"numbers: {args.out / 'detection.json'}")
    print(f"monitor's tables: {log_dir}; view them with  tensorboard --logdir {args.out}")
    return result


if __name__ == "__main__":
    main()
