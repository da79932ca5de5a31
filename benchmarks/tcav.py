"""Our ``TCAV`` vs. Captum's, side by side in one process.

    python -m benchmarks.tcav

torchvision's ResNet-18 (10 classes, random weights) at 64x64, layers ``layer2``, ``layer3`` and
``layer4``: 2 concepts and 4 random concepts of 48 images each (batches of 16), 10 experimental sets
(each concept against each random concept, and random against random), then the TCAV scores of 32
images.  Each run builds a fresh TCAV over an empty folder: activations are gathered, CAVs trained,
saved and scored.  First both get the same classifier (class-mean differences, in torch), whose scores
must agree; then each its default (ours: a ridge classifier in torch; Captum's: scikit-learn's SGD).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from benchmarks._measure import row, side_by_side

LAYERS = ["layer2", "layer3", "layer4"]


class _MeanDifference:
    """One CAV per class: its mean activation minus the mean of the classes' means (Captum's interface)."""

    def __init__(self) -> None:
        self._weights = torch.zeros(0)
        self._classes: list[int] = []

    def train_and_eval(self, dataloader: Iterable[tuple[Tensor, Tensor]], **kwargs: Any) -> dict[str, Any]:
        x, y = map(torch.cat, zip(*list(dataloader)))
        self._classes = sorted(set(y.tolist()))
        means = torch.stack([x[y == c].mean(0) for c in self._classes])
        self._weights = means - means.mean(0, keepdim=True)
        return {"accs": torch.tensor(1.0)}

    def weights(self) -> Tensor:
        return self._weights

    def classes(self) -> list[int]:
        return self._classes


def _concept_batches(seed: int, brightness: float) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(48, 3, 64, 64, generator=g) + brightness).clamp(0, 1)
    return list(images.split(16))


def _sets(factory: Callable[..., Any]) -> list[list[Any]]:
    concepts = [factory(i, f"concept_{i}", _concept_batches(i, 0.3 * (i + 1))) for i in range(2)]
    randoms = [factory(10 + i, f"random_{i}", _concept_batches(10 + i, 0.0)) for i in range(4)]
    sets = [[c, r] for c in concepts for r in randoms]
    return sets + [[randoms[0], randoms[1]], [randoms[2], randoms[3]]]


def bench_tcav(repeats: int = 2) -> list[str]:
    """Time both libraries' TCAV (CAVs + scores); returns the lines to print."""
    import torchvision
    from captum import concept as theirs  # type: ignore[import-untyped]

    from attribution import concept as ours

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    inputs = torch.rand(32, 3, 64, 64, generator=torch.Generator().manual_seed(99))
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18 at 64x64, layers {LAYERS}"]

    def run(library: Any, classifier: Callable[[], Any] | None) -> Callable[[], Any]:
        def compute() -> Any:
            with tempfile.TemporaryDirectory() as folder:
                extra = {} if classifier is None else {"classifier": classifier()}
                tcav = library.TCAV(model, LAYERS, save_path=folder, **extra)
                return tcav.interpret(inputs, _sets(library.Concept), target=3)

        return compute

    run_ours, run_theirs = side_by_side(run(ours, _MeanDifference), run(theirs, _MeanDifference), repeats)
    lines += [row("TCAV, same classifier (class means)", run_ours, run_theirs), _apart(run_ours, run_theirs)]
    run_ours, run_theirs = side_by_side(run(ours, None), run(theirs, None), repeats)
    lines += [row("TCAV, each default (ridge vs sklearn SGD)", run_ours, run_theirs), _agree(run_ours, run_theirs)]
    return lines


def _scores(run: Any, kind: str) -> Tensor:
    return torch.stack([run.result[key][layer][kind] for key in sorted(run.result) for layer in LAYERS])


def _apart(ours: Any, theirs: Any) -> str:
    sign = float((_scores(ours, "sign_count") - _scores(theirs, "sign_count")).abs().max())
    mine, other = _scores(ours, "magnitude"), _scores(theirs, "magnitude")
    magnitude = float((mine - other).norm() / other.norm())
    return f"{'':<44} sign_count max difference {sign:.1e}, magnitude relative L2 {magnitude:.1e}"


def _agree(ours: Any, theirs: Any) -> str:
    sign = (_scores(ours, "sign_count") - _scores(theirs, "sign_count")).abs()
    return f"{'':<44} sign_count mean |difference| {float(sign.mean()):.2f} (different classifiers)"


if __name__ == "__main__":
    print("\n".join(bench_tcav()))
