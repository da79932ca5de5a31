"""Is a concept's TCAV score significant?  The two-sample t-test of the paper (Kim et al., 2018, section
3.2), without scipy: scores of CAVs trained against many random concepts are compared with the scores of
random-vs-random CAVs.

The p-value of Student's (or Welch's) t is ``I_{df / (df + t^2)}(df / 2, 1 / 2)``, the regularized
incomplete beta function, evaluated with its continued fraction (Lentz's method).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from attribution._internal.canonical import TargetType
from attribution._internal.checks import ArgumentError, check_choice
from attribution.concept.concept import Concept, concepts_to_str
from attribution.concept.tcav import TCAV


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``.

    Raises:
        ValueError: arguments out of range.
    """
    if a <= 0 or b <= 0 or not 0 <= x <= 1:
        raise ArgumentError(f"betainc: expected a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):  # the continued fraction converges fast on the other side
        return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b
    return math.exp(log_front) * _beta_fraction(a, b, x) / a


def _beta_fraction(a: float, b: float, x: float, eps: float = 1e-15, max_terms: int = 10_000) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_terms):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def student_t_two_sided(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return betainc(df / 2, 0.5, df / (df + t * t))


class TTestResult(NamedTuple):
    """A two-sample t-test: the statistic, its two-sided p-value and the degrees of freedom."""

    statistic: float
    pvalue: float
    df: float


def ttest_ind(a: Tensor | Any, b: Tensor | Any, equal_var: bool = True) -> TTestResult:
    """Two-sample t-test of equal means, two-sided (scipy's ``ttest_ind``; Welch's with ``equal_var=False``).

    Args:
        a, b: 1-D samples (tensors or sequences of numbers), two values each at least.
        equal_var: pool the variances (Student); False: Welch's test with Welch-Satterthwaite df.

    Raises:
        ValueError: a sample with fewer than two values.

    Example:
        >>> from attribution.concept.significance import ttest_ind
        >>> round(ttest_ind([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]).pvalue, 4)
        0.071
    """
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.numel() < 2 or y.numel() < 2:
        raise ArgumentError(f"ttest_ind: expected two values per sample at least, got {x.numel()} and {y.numel()}")
    n1, n2 = x.numel(), y.numel()
    v1, v2 = float(x.var()), float(y.var())
    diff = float(x.mean() - y.mean())
    if equal_var:
        df = float(n1 + n2 - 2)
        pooled = ((n1 - 1) * v1 + (n2 - 1) * v2) / df
        se2 = pooled * (1 / n1 + 1 / n2)
    else:
        q1, q2 = v1 / n1, v2 / n2
        se2 = q1 + q2
        df = se2 * se2 / (q1 * q1 / (n1 - 1) + q2 * q2 / (n2 - 1)) if se2 > 0 else float(n1 + n2 - 2)
    if se2 == 0:
        t = math.nan if diff == 0 else math.copysign(math.inf, diff)
    else:
        t = diff / math.sqrt(se2)
    return TTestResult(t, student_t_two_sided(t, df), df)


class SignificanceResult(NamedTuple):
    """The test of one concept in one layer: its scores against each random concept, the random-vs-random
    scores, the t-test of the two, and whether the p-value is below ``alpha``."""

    concept_scores: Tensor
    random_scores: Tensor
    statistic: float
    pvalue: float
    significant: bool


def concept_significance(
    tcav: TCAV,
    inputs: Tensor | tuple[Tensor, ...],
    concept: Concept,
    random_concepts: list[Concept],
    target: TargetType = None,
    additional_forward_args: Any = None,
    score_type: str = "sign_count",
    alpha: float = 0.05,
    equal_var: bool = True,
    **kwargs: Any,
) -> dict[str, SignificanceResult]:
    """Test ``concept``'s TCAV score against random concepts in every layer of ``tcav``.

    CAVs are trained for ``[concept, r_i]`` and for ``[r_i, r_{i+1}]`` (cyclically) for each random
    concept ``r_i``; the first concept's scores of the two families are compared with :func:`ttest_ind`.
    One ``interpret`` call scores all of them (one forward and backward with the default method).

    Args:
        tcav: the interpreter (its layers, classifier and store are used).
        inputs, target, additional_forward_args, kwargs: as for :meth:`~attribution.concept.TCAV.interpret`.
        concept: the concept to test.
        random_concepts: two random concepts at least (the paper uses many: 10 to 500).
        score_type: ``"sign_count"`` or ``"magnitude"``.
        alpha: the significance level.
        equal_var: Student's test (as the paper and Captum's tutorial); False for Welch's.

    Returns:
        ``{layer: SignificanceResult}``.

    Raises:
        ValueError: fewer than two random concepts, or an unknown ``score_type``.
    """
    check_choice(score_type, "score_type", ["sign_count", "magnitude"])
    if len(random_concepts) < 2:
        raise ArgumentError(f"random_concepts: expected two concepts at least, got {len(random_concepts)}")
    n = len(random_concepts)
    concept_sets = [[concept, r] for r in random_concepts]
    random_sets = [[random_concepts[i], random_concepts[(i + 1) % n]] for i in range(n)]
    scores = tcav.interpret(inputs, concept_sets + random_sets, target, additional_forward_args, **kwargs)
    results = {}
    for layer in tcav.layers:
        ours = torch.stack([scores[concepts_to_str(s)][layer][score_type][0] for s in concept_sets])
        theirs = torch.stack([scores[concepts_to_str(s)][layer][score_type][0] for s in random_sets])
        test = ttest_ind(ours, theirs, equal_var=equal_var)
        results[layer] = SignificanceResult(ours, theirs, test.statistic, test.pvalue, test.pvalue < alpha)
    return results
