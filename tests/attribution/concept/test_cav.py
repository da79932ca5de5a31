"""CAVs: the direction a classifier learns, and saving and loading them."""

import pytest
import torch

from attribution.concept import CAV, TCAV, Concept, DefaultClassifier
from attribution.concept.classifier import fit_ridge
from tests.attribution.concept._models import FEATURES, direction, linear_model, shifted_concepts


def test_the_cav_aligns_with_the_known_concept_direction(tmp_path):
    concept, random = shifted_concepts()
    tcav = TCAV(linear_model(), "layer", save_path=str(tmp_path))
    cav = tcav.compute_cavs([[concept, random]])["0-1"]["layer"]
    weights, classes = cav.stats["weights"], cav.stats["classes"]
    assert classes == [0, 1] and weights.shape == (2, FEATURES)
    assert torch.equal(weights[0], -weights[1])  # two concepts: [-w, w], as Captum's
    cosine = torch.nn.functional.cosine_similarity(weights[0], direction(), dim=0)
    assert cosine > 0.99
    assert cav.stats["accs"] > 0.95


def test_the_default_classifier_is_deterministic_and_leaves_the_global_rng_alone():
    x = torch.randn(60, 5)
    y = torch.arange(60) % 3
    loader = [(x, y)]
    state = torch.random.get_rng_state()
    first, second = DefaultClassifier(seed=3), DefaultClassifier(seed=3)
    acc1, acc2 = first.train_and_eval(loader), second.train_and_eval(loader)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.weights(), second.weights()) and acc1 == acc2
    assert first.weights().shape == (3, 5) and first.classes() == [0, 1, 2]


@pytest.mark.parametrize("features", [3, 50])  # primal and dual solves
def test_ridge_separates_two_clouds(features):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, features, generator=g) + 4, torch.randn(20, features, generator=g)])
    y = torch.cat([torch.ones(20), torch.zeros(20)]).long()
    weights, bias = fit_ridge(x, y, torch.tensor([0, 1]), alpha=0.01)
    predicted = (x @ weights.T + bias).argmax(dim=1)
    assert torch.equal(predicted, y)


def test_saving_and_loading_a_cav_round_trips_with_captums_file_name(tmp_path):
    concepts = [Concept(0, "striped", None), Concept(5, "random_2", None)]
    stats = {"weights": torch.randn(2, 7, dtype=torch.float64), "classes": [0, 5], "accs": torch.tensor(0.75)}
    CAV(concepts, "block.conv", stats, str(tmp_path), "my_model").save()
    path = tmp_path / "my_model" / "0-5-block.conv.pkl"
    assert path.is_file()
    loaded = CAV.load(str(tmp_path), "my_model", concepts, "block.conv")
    assert loaded is not None and loaded.layer == "block.conv"
    assert [(c.id, c.name) for c in loaded.concepts] == [(0, "striped"), (5, "random_2")]
    assert torch.equal(loaded.stats["weights"], stats["weights"]) and loaded.stats["classes"] == [0, 5]
    assert CAV.load(str(tmp_path), "my_model", concepts[::-1], "block.conv") is None


def test_saved_cavs_are_reused_and_force_train_retrains(tmp_path):
    concept, random = shifted_concepts()
    first = TCAV(linear_model(), "layer", save_path=str(tmp_path))
    first.compute_cavs([[concept, random]])
    assert (tmp_path / "default_model_id" / "0-1-layer.pkl").is_file()
    assert (tmp_path / "av" / "default_model_id" / "shifted-0" / "layer" / "0.pt").is_file()
    calls = []

    class Counting(DefaultClassifier):
        def train_and_eval(self, dataloader, **kwargs):
            calls.append(1)
            return super().train_and_eval(dataloader, **kwargs)

    second = TCAV(linear_model(), "layer", classifier=Counting(), save_path=str(tmp_path))
    loaded = second.compute_cavs([[concept, random]])["0-1"]["layer"]
    assert calls == [] and torch.equal(loaded.stats["weights"], first.cavs["0-1"]["layer"].stats["weights"])
    second.compute_cavs([[concept, random]], force_train=True)
    assert calls == [1]


def test_in_memory_mode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    concept, random = shifted_concepts()
    tcav = TCAV(linear_model(), "layer", save_path=None)
    tcav.interpret(torch.randn(4, FEATURES), [[concept, random]], target=0)
    assert list(tmp_path.iterdir()) == []
    assert tcav.activations["shifted-0"]["layer"].shape == (400, FEATURES)
