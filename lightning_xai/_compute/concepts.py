"""TCAV (Kim et al., 2018) at one training point: for each concept, layer and target class, the share of the
probe's examples of that class whose class score rises along the concept's activation vector, against the
same share for random counter-examples, with the p-value of the difference (a two-sided t-test over the
random sets)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from attribution.concept import TCAV, Concept
from attribution.concept.significance import ttest_ind


@dataclass(frozen=True)
class ConceptScore:
    """TCAV of one concept for one layer and target class.

    Attributes:
        concept: the concept's name.
        layer: the layer's dotted name.
        target: the class whose score is differentiated.
        score: the mean over the random sets of the TCAV score (``sign_count``: the share of the probe's
            examples of ``target`` whose score rises along the concept's CAV against that random set).
        scores: the score against each random set.
        random_scores: the same for random examples against each other random set (the baseline).
        p_value: two-sided t-test of ``scores`` against ``random_scores``: small when the concept matters.
    """

    concept: str
    layer: str
    target: int
    score: float
    scores: list[float]
    random_scores: list[float]
    p_value: float


def concept_scores(
    model: nn.Module,
    layers: Sequence[str],
    concepts: Mapping[str, Tensor],
    randoms: Sequence[Tensor],
    inputs: Tensor,
    labels: Tensor,
    targets: Sequence[int],
    batch_size: int,
) -> list[ConceptScore]:
    """TCAV of every concept for every layer and target class present in ``labels``; ``randoms[0]`` plays
    the concept in the baseline, against ``randoms[1:]``. CAVs are trained afresh (the model changed since
    the last point) in memory, once for all targets."""
    named = [
        Concept(i, name, DataLoader(_Examples(examples), batch_size))
        for i, (name, examples) in enumerate(concepts.items())
    ]
    first = len(named)
    random_sets = [
        Concept(first + i, f"random_{i}", DataLoader(_Examples(r), batch_size)) for i, r in enumerate(randoms)
    ]
    baseline, others = random_sets[0], random_sets[1:]
    experimental_sets = [[c, r] for c in named for r in others] + [[baseline, r] for r in others]
    found = []
    tcav = TCAV(model, list(layers), model_id="point", save_path=None)  # in memory: nothing written
    for target in targets:
        chosen = labels == target
        if not bool(chosen.any()):
            continue
        result = tcav.interpret(inputs[chosen], experimental_sets, target=int(target))
        for layer in layers:
            base = _sign_counts(result, layer, baseline, others)
            for concept in named:
                scores = _sign_counts(result, layer, concept, others)
                p_value = ttest_ind(scores, base).pvalue
                if math.isnan(p_value):  # both samples constant and equal: no evidence of a difference
                    p_value = 1.0
                mean = sum(scores) / len(scores)
                found.append(ConceptScore(concept.name, layer, int(target), mean, scores, base, p_value))
    return found


def _sign_counts(result: Mapping[str, Any], layer: str, concept: Concept, others: Sequence[Concept]) -> list[float]:
    """The TCAV ``sign_count`` of ``concept`` against each of ``others`` at ``layer``."""
    return [float(result[f"{concept.id}-{r.id}"][layer]["sign_count"][0]) for r in others]


class _Examples(Dataset[Tensor]):
    """A tensor's rows as a dataset: what a Concept's DataLoader iterates (inputs only)."""

    def __init__(self, examples: Tensor) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Tensor:
        return self.examples[index]
