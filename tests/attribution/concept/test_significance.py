"""The t-test behind TCAV's significance test, and the test itself on a concept with a known answer."""

import math

import pytest
import torch

from attribution.concept import TCAV, Concept
from attribution.concept.significance import betainc, concept_significance, ttest_ind
from tests.attribution.concept._models import FEATURES, QuadraticScore, shifted_concepts

A = [0.3, 1.2, 2.2, 0.9, 1.7, 1.1, 0.4]
B = [1.9, 2.8, 1.4, 3.1, 2.6, 2.2, 3.5, 2.0]
# scipy.stats.ttest_ind(A, B) and ttest_ind(A, B, equal_var=False) (scipy 1.17)
STUDENT = (-3.736260288027674, 0.0024918066575158196)
WELCH = (-3.741676694389126, 0.0025281954545930407)


@pytest.mark.parametrize(("equal_var", "expected"), [(True, STUDENT), (False, WELCH)])
def test_ttest_matches_known_values(equal_var, expected):
    result = ttest_ind(torch.tensor(A, dtype=torch.float64), B, equal_var=equal_var)
    assert result.statistic == pytest.approx(expected[0], rel=1e-10)
    assert result.pvalue == pytest.approx(expected[1], rel=1e-8)


def test_ttest_matches_scipy_on_random_samples():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for n1, n2, shift in [(5, 9, 0.3), (30, 12, 1.5), (100, 100, 0.05), (3, 3, 8.0)]:
        a, b = torch.randn(n1, generator=g, dtype=torch.float64), torch.randn(n2, generator=g, dtype=torch.float64)
        for equal_var in (True, False):
            ours = ttest_ind(a, b + shift, equal_var=equal_var)
            theirs = stats.ttest_ind(a.numpy(), (b + shift).numpy(), equal_var=equal_var)
            assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-10)
            assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-7, abs=1e-300)


def test_betainc_closed_forms():
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)  # uniform
    assert betainc(2.0, 1.0, 0.6) == pytest.approx(0.36)  # x^a
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5)  # arcsine, symmetric
    assert betainc(0.5, 0.5, 0.25) == pytest.approx(2 / math.pi * math.asin(0.5))


def test_a_real_concept_is_significant_and_a_random_one_is_not(tmp_path):
    concept, _ = shifted_concepts()
    g = torch.Generator().manual_seed(1)
    randoms = [Concept(10 + i, f"random_{i}", [torch.randn(40, FEATURES, generator=g)]) for i in range(9)]
    tcav = TCAV(QuadraticScore(), "layer", save_path=str(tmp_path))
    inputs = torch.randn(64, FEATURES, generator=g)
    real = concept_significance(tcav, inputs, concept, randoms[:8], target=0)["layer"]
    # the gradient is direction + h: the concept's CAV scores ~P(N(1, 1) > 0) = 0.84, random ones ~0.5
    assert real.concept_scores.min() > 0.7 and real.random_scores.mean() < 0.7
    assert real.significant and real.pvalue < 1e-3
    fake = concept_significance(tcav, inputs, randoms[8], randoms[:8], target=0)["layer"]
    assert not fake.significant and fake.pvalue > 0.05
