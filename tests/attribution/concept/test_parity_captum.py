"""Our TCAV against Captum's: the same classifier gives the same scores; each default classifier finds the
same clear concept."""

import random

import numpy as np
import pytest
import torch

from attribution.concept import TCAV, Concept
from tests.attribution.concept._models import SmallConvNet
from tests.attribution.concept.test_tcav import MeanDifference

captum_concept = pytest.importorskip("captum.concept")

LAYERS = ["conv1", "conv2", "fc"]


def _concepts(factory):
    g = torch.Generator().manual_seed(0)
    bright = torch.rand(24, 1, 6, 6, generator=g) + 1.0
    noise = [torch.rand(24, 1, 6, 6, generator=g) for _ in range(3)]
    batches = lambda x: [x[:10], x[10:]]  # noqa: E731  (two batches, as a DataLoader gives)
    return factory(0, "bright", batches(bright)), *(
        factory(i + 1, f"random_{i}", batches(x)) for i, x in enumerate(noise)
    )


def _sets(concepts):
    bright, *randoms = concepts
    return [[bright, randoms[0]], [bright, randoms[1]], [randoms[0], randoms[1], randoms[2]]]


def test_same_classifier_same_scores_as_captum(tmp_path):
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    inputs = torch.rand(6, 1, 6, 6)
    ours = TCAV(model, LAYERS, classifier=MeanDifference(), save_path=str(tmp_path / "ours"))
    theirs = captum_concept.TCAV(model, LAYERS, classifier=MeanDifference(), save_path=str(tmp_path / "captum"))
    expected = theirs.interpret(inputs, _sets(_concepts(captum_concept.Concept)), target=2)
    got = ours.interpret(inputs, _sets(_concepts(Concept)), target=2)
    assert set(got) == set(expected) == {"0-1", "0-2", "1-2-3"}
    for key in expected:
        for layer in LAYERS:
            for kind in ("sign_count", "magnitude"):
                torch.testing.assert_close(got[key][layer][kind], expected[key][layer][kind], rtol=1e-5, atol=1e-6)
    # the CAV files are named as Captum names them
    assert sorted(p.name for p in (tmp_path / "ours" / "default_model_id").iterdir()) == sorted(
        p.name for p in (tmp_path / "captum" / "default_model_id").iterdir()
    )


def test_our_default_classifier_agrees_with_captums_on_a_clear_concept(tmp_path):
    pytest.importorskip("sklearn")
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    with torch.no_grad():  # the class-0 score grows with the mean of the input
        model.fc.weight.zero_()
        model.fc.weight[0] = 1.0
        for conv in (model.conv1, model.conv2):
            conv.weight.fill_(0.1)
    inputs = torch.rand(8, 1, 6, 6)
    sets = lambda factory: _sets(_concepts(factory))[:2]  # noqa: E731
    got = TCAV(model, ["conv2"], save_path=str(tmp_path / "ours")).interpret(inputs, sets(Concept), target=0)
    # Captum's default shuffles with Python's RNG and fits scikit-learn's SGD with numpy's, unscaled: it is not
    # deterministic, and flips this concept for about one seed in six; seeded here, restored after
    states = random.getstate(), np.random.get_state()
    try:
        random.seed(0), np.random.seed(0)
        theirs = captum_concept.TCAV(model, ["conv2"], save_path=str(tmp_path / "captum"))
        expected = theirs.interpret(inputs, sets(captum_concept.Concept), target=0)
    finally:
        random.setstate(states[0]), np.random.set_state(states[1])
    for key in ("0-1", "0-2"):
        assert got[key]["conv2"]["sign_count"].tolist() == [1.0, 0.0]
        assert expected[key]["conv2"]["sign_count"].tolist() == [1.0, 0.0]
