"""How robust a model's predictions on the probe are: the share of correctly classified probe examples that an
FGSM or a PGD attack at a fixed budget misclassifies, and per example the smallest FGSM epsilon that flips its
prediction (found by bisection with :class:`attribution.robust.MinParamPerturbation`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from attribution.robust import FGSM, PGD, MinParamPerturbation

Forward = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class AttackBudget:
    """The attacks a point runs.

    Attributes:
        epsilon: the perturbation budget of FGSM and PGD (in input units).
        norm: PGD's norm, ``"Linf"`` or ``"L2"`` (FGSM is the Linf sign step).
        pgd_steps: PGD's iterations.
        pgd_step_size: PGD's step; None: ``2.5 * epsilon / pgd_steps`` (Madry et al.'s rule).
        lower_bound: inputs are clamped at or above it after the attack.
        upper_bound: inputs are clamped at or below it after the attack.
        max_epsilon: the largest FGSM epsilon searched for the smallest one that flips a prediction (0: no
            search).
    """

    epsilon: float
    norm: str = "Linf"
    pgd_steps: int = 5
    pgd_step_size: float | None = None
    lower_bound: float = -math.inf
    upper_bound: float = math.inf
    max_epsilon: float = 0.0

    @property
    def step_size(self) -> float:
        return self.pgd_step_size if self.pgd_step_size is not None else 2.5 * self.epsilon / self.pgd_steps


SEARCH_STEPS = 32
"""The minimal epsilon is found to ``max_epsilon / SEARCH_STEPS`` (a bisection: about five evaluations)."""


def robustness_values(forward: Forward, inputs: Tensor, labels: Tensor, budget: AttackBudget) -> dict[str, float]:
    """``probe_accuracy``; and over the correctly classified examples (none: left out) ``fgsm_success``,
    ``pgd_success`` (the share the attack misclassifies), ``min_epsilon_median`` (examples not flipped within
    ``max_epsilon`` count as ``max_epsilon``: a lower bound) and ``flipped_within_max``."""
    with torch.no_grad():
        correct = forward(inputs).argmax(1) == labels
    values = {"probe_accuracy": float(correct.float().mean())}
    if not bool(correct.any()):
        return values
    x, y = inputs[correct], labels[correct]
    # The loss on the model's scores (logits): the attacks' default, -log(output), expects probabilities and
    # takes no step where a logit is negative.
    bounds = {"lower_bound": budget.lower_bound, "upper_bound": budget.upper_bound}
    fgsm = FGSM(forward, loss_func=_cross_entropy, **bounds)
    pgd = PGD(forward, loss_func=_cross_entropy, **bounds)
    attacked = {
        "fgsm_success": fgsm.perturb(x, budget.epsilon, y),
        "pgd_success": pgd.perturb(
            x, radius=budget.epsilon, step_size=budget.step_size, step_num=budget.pgd_steps, target=y, norm=budget.norm
        ),
    }
    with torch.no_grad():
        for name, adversarial in attacked.items():
            assert isinstance(adversarial, Tensor)  # one tensor in, one out
            values[name] = float((forward(adversarial).argmax(1) != y).float().mean())
    if budget.max_epsilon > 0:
        smallest = minimal_epsilons(forward, fgsm, x, y, budget.max_epsilon)
        values["min_epsilon_median"] = statistics.median(e if e is not None else budget.max_epsilon for e in smallest)
        values["flipped_within_max"] = sum(e is not None for e in smallest) / len(smallest)
    return values


def _cross_entropy(scores: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(scores, labels, reduction="none")


def minimal_epsilons(
    forward: Forward, fgsm: FGSM, inputs: Tensor, labels: Tensor, max_epsilon: float
) -> list[float | None]:
    """Per example, the smallest FGSM epsilon in ``(0, max_epsilon]`` that flips its prediction (None: none
    does), to ``max_epsilon / SEARCH_STEPS``."""
    search = MinParamPerturbation(
        forward,
        attack=fgsm.perturb,
        arg_name="epsilon",
        arg_min=max_epsilon / SEARCH_STEPS,
        arg_max=max_epsilon,
        arg_step=max_epsilon / SEARCH_STEPS,
        mode="binary",
    )
    found = []
    for x, y in zip(inputs, labels):
        one, label = x.unsqueeze(0), y.unsqueeze(0)
        _, epsilon = search.evaluate(one, target=label, attack_kwargs={"target": label})
        found.append(None if epsilon is None else float(epsilon))
    return found
