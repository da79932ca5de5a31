"""Our ``TracInCPFast`` and ``TracInCPFastRandProj`` vs. Captum's, side by side in one process.

    python -m benchmarks.influence

Two models of about 1M parameters, each on 10k random training examples, 3 checkpoints, batch size 500:
an MLP (784-1024-256-10) and a digits-sized CNN (8x8 images; six 3x3 conv-BatchNorm-ReLU layers, 64 to 256
channels, then a linear layer).  For each: self-influence of every training example, the 5 most influential
training examples (proponents) for 100 test examples, and TracInCPFastRandProj's build and proponents.
Each line prints our time and peak RSS growth (the kernel's high-water mark, in a process whose heap hands
freed tensors back at once), Captum's, the ratios (> 1 means we are faster / smaller), and how far the
results are apart.  TracInCPFastRandProj's default is an exact top k in ours and an ``annoy`` index in
Captum's (approximate; it copies the stored rows into the index); Captum gets an exact index that holds a
view of its rows instead, the least memory it can take.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from benchmarks._measure import row, side_by_side


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))


def _cnn() -> nn.Module:
    """1.15M parameters on 8x8 one-channel images (scikit-learn's digits), in eval mode."""

    def conv(width_in: int, width_out: int) -> list[nn.Module]:
        return [nn.Conv2d(width_in, width_out, 3, padding=1, bias=False), nn.BatchNorm2d(width_out), nn.ReLU()]

    torch.manual_seed(0)
    layers = [*conv(1, 64), *conv(64, 64), nn.MaxPool2d(2), *conv(64, 128), *conv(128, 128), nn.MaxPool2d(2)]
    layers += [*conv(128, 256), *conv(256, 256), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10)]
    return nn.Sequential(*layers).eval()


class _ExactNeighbours:
    """Captum's nearest-neighbour interface, exact: the same index for both libraries."""

    def setup(self, data: Tensor) -> None:
        self.data = data.flatten(1)

    def get_nearest_neighbors(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        scores, indices = torch.topk(query.flatten(1) @ self.data.T, k, dim=1)
        return indices, scores


HEAP_SETTING = {"MALLOC_MMAP_THRESHOLD_": "65536"}
"""glibc serves every block over 64 KiB from its own mapping and unmaps it when freed, so RSS follows the live
tensors. With glibc's default heap, freed memory stays for reuse and the peak of a call depends on what ran
before it: the same rows moved by a factor of two from run to run."""


def bench_influence(repeats: int = 2) -> list[str]:
    """Time both libraries' fast TracIn; returns the lines to print.

    Runs in a child process with :data:`HEAP_SETTING` (the setting is read when a process starts) unless
    this process has it already.
    """
    if sys.platform.startswith("linux") and not HEAP_SETTING.items() <= os.environ.items():
        child = [sys.executable, "-m", "benchmarks.influence", "--repeats", str(repeats)]
        done = subprocess.run(child, env={**os.environ, **HEAP_SETTING}, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"benchmarks.influence failed in its child process:\n{done.stderr}")
        return done.stdout.splitlines()
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; {HEAP_SETTING}"]
    lines += _bench_model("MLP", _mlp(), (784,), repeats)
    lines += _bench_model("CNN", _cnn(), (1, 8, 8), repeats)
    return lines


def _bench_model(name: str, model: nn.Module, shape: tuple[int, ...], repeats: int) -> list[str]:
    from captum import influence as theirs  # type: ignore[import-untyped]

    from attribution import influence as ours

    torch.manual_seed(1)
    train = TensorDataset(torch.randn(10_000, *shape), torch.randint(0, 10, (10_000,)))
    test = (torch.randn(100, *shape), torch.randint(0, 10, (100,)))
    params = sum(p.numel() for p in model.parameters())
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    lines = [f"{name} of {params / 1e6:.2f}M parameters, final layer {last!r}"]
    with tempfile.TemporaryDirectory() as folder:
        for epoch in range(3):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            torch.save({**model.state_dict(), "learning_rate": 0.1}, f"{folder}/checkpoint-{epoch}.pt")
        loss = nn.CrossEntropyLoss(reduction="sum")
        common: dict[str, Any] = {"loss_fn": loss, "batch_size": 500}

        def load(model: nn.Module, path: str) -> float:
            state = torch.load(path, weights_only=True)
            rate = float(state.pop("learning_rate"))
            model.load_state_dict(state)
            return rate

        fast_ours = ours.TracInCPFast(model, last, train, folder, **common)
        fast_theirs = theirs.TracInCPFast(model, last, train, folder, checkpoints_load_func=load, **common)
        run_ours, run_theirs = side_by_side(fast_ours.self_influence, fast_theirs.self_influence, repeats)
        lines += [row("TracInCPFast self_influence, 10k examples", run_ours, run_theirs), _apart(run_ours, run_theirs)]

        def k_most(tracin: Any) -> Any:
            return lambda: tracin.influence(test, k=5, proponents=True)

        run_ours, run_theirs = side_by_side(k_most(fast_ours), k_most(fast_theirs), repeats)
        lines += [
            row("TracInCPFast 5 proponents of 100 tests", run_ours, run_theirs),
            _apart(run_ours.result.influence_scores, run_theirs.result[1]),
        ]

        def build_and_query(library: Any, **extra: Any) -> Any:
            def call() -> Any:
                tracin = library.TracInCPFastRandProj(model, last, train, folder, **common, **extra)
                return tracin.influence(test, k=5, proponents=True)

            return call

        theirs_indexed = build_and_query(theirs, checkpoints_load_func=load, nearest_neighbors=_ExactNeighbours())
        for label, ours_call in [
            ("TracInCPFastRandProj build + 5 proponents", build_and_query(ours)),
            ("  the same, both through one exact index", build_and_query(ours, nearest_neighbors=_ExactNeighbours())),
        ]:
            run_ours, run_theirs = side_by_side(ours_call, theirs_indexed, repeats)
            lines += [row(label, run_ours, run_theirs), _apart(run_ours.result.influence_scores, run_theirs.result[1])]
    return lines


def _apart(ours: Any, theirs: Any) -> str:
    ours_t = ours.result if hasattr(ours, "result") else ours
    theirs_t = theirs.result if hasattr(theirs, "result") else theirs
    distance = float((ours_t - theirs_t).norm() / theirs_t.norm())
    return f"{'':<44} relative L2 between the results {distance:.1e}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each call (best is kept)")
    print("\n".join(bench_influence(parser.parse_args().repeats)))
