"""Finding mislabelled training examples with TracIn self-influence.

scikit-learn's bundled 8x8 digits (``sklearn.datasets.load_digits``, no
download) with the labels of 10% of the training set flipped to another
class at random.  A small MLP is trained with plain SGD for a few epochs and
its weights (plus the learning rate) are saved at the end of every epoch.  A
training example's TracIn self-influence, ``sum over checkpoints of
lr * |grad loss(z)|^2``, is large when the model keeps having to bend to fit
it, which is what a wrong label does; so sorting the training set by it and
inspecting from the top finds the flipped labels early.  Four rankings are
compared:

* TracIn self-influence from ``attribution.influence.TracInCPFast``;
* the same from Captum's ``captum.influence.TracInCPFast`` when ``main`` is given
  it as ``reference`` (the example never imports Captum; its test passes it),
  checked to agree with ours and timed against it;
* the per-example loss at the final weights (the usual baseline);
* a random order (what inspecting without a ranking gives).

The script prints how many flipped labels each ranking puts in its top 10%,
and writes ``detection_curve.png`` (fraction of flipped labels found against
fraction of the training set inspected) and ``detection.json`` into the
output directory (default ``runs/digits_mislabels``).  It runs in about ten
seconds on two CPU cores, most of it imports.

With the default 8 epochs both TracIn and the loss put over 85% of the
flipped labels in their top 10% (the loss a little more: the model has not
yet memorized the wrong labels, so they still have a high loss).  Train
longer (``--epochs 60 --hidden 256 --lr 0.1``) and the loss of memorized
flipped labels falls, while self-influence still counts the early epochs in
which they were hard: TracIn then ranks ahead of the loss.

    python examples/digits_mislabels.py
    python examples/digits_mislabels.py --out /tmp/digits --epochs 5 --flip 0.2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from attribution.influence import TracInCPFast

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

INSPECTED = 0.1
"""The share of the training set a person inspects; recall is reported at this budget."""
OURS, CAPTUM, LOSS, RANDOM = (
    "TracIn self-influence (ours)",
    "TracIn self-influence (Captum)",
    "loss at final weights",
    "random inspection",
)
"""The rankings: their names in the printout, the JSON and the figure's legend."""
STYLES: dict[str, dict[str, Any]] = {
    OURS: {"lw": 2.5},
    CAPTUM: {"ls": "--", "lw": 1.5},  # dashed over ours: where they agree both stay visible
    LOSS: {"lw": 1.5},
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
    """64 pixels -> ``hidden`` ReLU units -> 10 logits; the last module is TracInCPFast's final layer."""
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def train(
    model: nn.Module, data: TensorDataset, epochs: int, lr: float, out: Path, generator: torch.Generator
) -> list[Path]:
    """Plain minibatch SGD; after each epoch save the state dict with its ``learning_rate``, the format
    ``attribution.influence``'s (and Captum's) default checkpoint loader reads."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=generator)
    checkpoints = []
    for epoch in range(1, epochs + 1):
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss_fn(model(inputs), labels).backward()
            optimizer.step()
        path = out / "checkpoints" / f"epoch-{epoch:02d}.pt"
        torch.save({**model.state_dict(), "learning_rate": lr}, path)
        checkpoints.append(path)
    return checkpoints


def timed(compute: Callable[[], Tensor], repeats: int = 3) -> tuple[Tensor, float]:
    """The scores and the best wall-clock seconds of ``repeats`` calls (the first call also pays warm-up)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = compute()
        seconds.append(time.perf_counter() - start)
    return scores.detach(), min(seconds)


def load_checkpoint(model: nn.Module, path: str) -> float:
    """Load one of :func:`train`'s checkpoints; return its learning rate.

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
    """Train, rank the training set four ways, save the curve and the numbers; return the numbers.

    ``reference``: a class with Captum's ``TracInCPFast`` signature to compare with (the shipped code never
    imports Captum: ``tests/integration/test_digits_mislabels.py`` passes Captum's).
    """
    args = parse_args(argv)
    with one_thread():
        return run(args, reference)


def run(args: argparse.Namespace, reference: Any = None) -> dict[str, Any]:
    """:func:`main` after parsing: the checkpoints, the rankings, the figure and the JSON under ``args.out``."""
    (args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    train_set, flipped, test_set = noisy_digits(args.flip, generator)
    with torch.random.fork_rng():  # the model's initialization is seeded without touching the global RNG
        torch.manual_seed(args.seed)
        model = mlp(args.hidden)
    checkpoints = train(model, train_set, args.epochs, args.lr, args.out, generator)
    inputs, labels = test_set.tensors
    with torch.no_grad():
        accuracy = float((model(inputs).argmax(1) == labels).double().mean())

    scores, times = {}, {}
    scores[OURS], times["ours"] = timed(lambda: self_influence(TracInCPFast, model, train_set, checkpoints))
    captum_note = None
    if reference is None:
        captum_note = "Captum comparison skipped: no reference class given (its test passes Captum's TracInCPFast)"
        print(captum_note)
    else:
        scores[CAPTUM], times["captum"] = timed(
            lambda: self_influence(reference, model, train_set, checkpoints, checkpoints_load_func=load_checkpoint)
        )
    load_checkpoint(model, str(checkpoints[-1]))  # the TracIn runs leave whichever checkpoint they loaded last
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
        "seconds": times,
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
        f"{n} training digits, {result['n_flipped']} labels flipped, {args.epochs} epochs, "
        f"clean test accuracy {accuracy:.3f}"
    )
    print(f"flipped labels among the top {INSPECTED:.0%} ({budget} examples) of each ranking:")
    for name, found in result["found_in_top"].items():
        print(f"  {name:<32} {found:>4} / {result['n_flipped']}  ({result['recall_at_inspected'][name]:.0%})")
    print("self-influence time (best of 3): " + ", ".join(f"{k} {v:.3f} s" for k, v in times.items()))
    if result["captum_agreement"] is not None:
        agreement = result["captum_agreement"]
        print(
            f"agreement with Captum: Spearman {agreement['spearman']:.6f}, "
            f"max relative difference {agreement['max_relative_difference']:.2e}"
        )
    print(f"figure: {figure}")
    print(f"numbers: {args.out / 'detection.json'}")
    return result


if __name__ == "__main__":
    main()
