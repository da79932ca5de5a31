"""Our ``TracInCPFast`` and ``TracInCPFastRandProj`` vs. Captum's, side by side in one process.

    python -m benchmarks.influence

An MLP of about 1M parameters (784-1024-256-10) on 10k random training examples, 3 checkpoints, batch
size 500: self-influence of every training example, and the 5 most influential training examples
(proponents) for 100 test examples.  Each line prints our time and peak RSS growth, Captum's, the ratios
(> 1 means we are faster / smaller), and how far the results are apart.  Captum's default nearest-neighbour
index needs ``annoy``; both libraries get the same exact index here.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from benchmarks._measure import row, side_by_side


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))


class _ExactNeighbours:
    """Captum's nearest-neighbour interface, exact: the same index for both libraries."""

    def setup(self, data: Tensor) -> None:
        self.data = data.flatten(1)

    def get_nearest_neighbors(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        scores, indices = torch.topk(query.flatten(1) @ self.data.T, k, dim=1)
        return indices, scores


def bench_influence(repeats: int = 2) -> list[str]:
    """Time both libraries' fast TracIn; returns the lines to print."""
    from captum import influence as theirs  # type: ignore[import-untyped]

    from attribution import influence as ours

    model = _mlp()
    torch.manual_seed(1)
    train = TensorDataset(torch.randn(10_000, 784), torch.randint(0, 10, (10_000,)))
    test = (torch.randn(100, 784), torch.randint(0, 10, (100,)))
    params = sum(p.numel() for p in model.parameters())
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP of {params / 1e6:.2f}M parameters"]
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

        fast_ours = ours.TracInCPFast(model, "4", train, folder, **common)
        fast_theirs = theirs.TracInCPFast(model, "4", train, folder, checkpoints_load_func=load, **common)
        run_ours, run_theirs = side_by_side(fast_ours.self_influence, fast_theirs.self_influence, repeats)
        lines += [row("TracInCPFast self_influence, 10k examples", run_ours, run_theirs), _apart(run_ours, run_theirs)]

        def k_most(tracin: Any) -> Any:
            return lambda: tracin.influence(test, k=5, proponents=True)

        run_ours, run_theirs = side_by_side(k_most(fast_ours), k_most(fast_theirs), repeats)
        lines += [
            row("TracInCPFast 5 proponents of 100 tests", run_ours, run_theirs),
            _apart(run_ours.result.influence_scores, run_theirs.result[1]),
        ]

        def projected(library: Any, **extra: Any) -> Any:
            def build_and_query() -> Any:
                tracin = library.TracInCPFastRandProj(
                    model, "4", train, folder, nearest_neighbors=_ExactNeighbours(), **common, **extra
                )
                return tracin.influence(test, k=5, proponents=True)

            return build_and_query

        run_ours, run_theirs = side_by_side(projected(ours), projected(theirs, checkpoints_load_func=load), repeats)
        lines += [
            row("TracInCPFastRandProj build + 5 proponents", run_ours, run_theirs),
            _apart(run_ours.result.influence_scores, run_theirs.result[1]),
        ]
    return lines


def _apart(ours: Any, theirs: Any) -> str:
    ours_t = ours.result if hasattr(ours, "result") else ours
    theirs_t = theirs.result if hasattr(theirs, "result") else theirs
    distance = float((ours_t - theirs_t).norm() / theirs_t.norm())
    return f"{'':<44} relative L2 between the results {distance:.1e}"


if __name__ == "__main__":
    print("\n".join(bench_influence()))
