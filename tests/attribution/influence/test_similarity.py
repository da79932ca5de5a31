"""SimilarityInfluence: closed forms on a range dataset, parity with Captum, batch-size invariance, the cache
under ``activation_dir`` and argument errors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from attribution.influence.similarity import (
    SimilarityInfluence,
    SimilarityMetric,
    cosine_similarity,
    euclidean_distance,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 5)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.relu(self.fc1(x)))
        return out


class Rows(Dataset[Tensor]):
    """A dataset of unlabelled rows (Captum's tests use one)."""

    def __init__(self, rows: Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Tensor:
        row: Tensor = self.rows[i]
        return row


def data(n: int = 13) -> Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(1))


def test_metrics_closed_form() -> None:
    a, b = torch.randn(3, 2, 2), torch.randn(5, 4)
    assert torch.allclose(euclidean_distance(a, b), torch.cdist(a.reshape(3, 4), b), atol=1e-6)
    expected = torch.nn.functional.cosine_similarity(a.reshape(3, 1, 4), b.reshape(1, 5, 4), dim=2)
    assert torch.allclose(cosine_similarity(a, b), expected, atol=1e-6)
    zeros = cosine_similarity(torch.zeros(1, 4), b, replace_nan=-2)
    assert torch.equal(zeros, torch.full((1, 5), -2.0))


def test_euclidean_on_identity_layer_finds_nearest_inputs(tmp_path: Path) -> None:
    train = data()
    model = nn.Sequential(nn.Identity(), nn.Linear(4, 2))
    sim = SimilarityInfluence(
        model, "0", Rows(train), str(tmp_path), similarity_metric=euclidean_distance, similarity_direction="min"
    )
    x = train[[2, 7]] + 1e-3
    indices, scores = sim.influence(x, top_k=3)["0"]
    distances = torch.cdist(x, train)
    expected_scores, expected_indices = distances.topk(3, dim=1, largest=False)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(scores, expected_scores, atol=1e-5)
    assert torch.equal(indices[:, 0], torch.tensor([2, 7]))


@pytest.mark.parametrize("metric,direction", [(cosine_similarity, "max"), (euclidean_distance, "min")])
def test_parity_with_captum(tmp_path: Path, metric: SimilarityMetric, direction: str) -> None:
    captum_sim = pytest.importorskip("captum.influence._core.similarity_influence")
    model, train, x = Net(), data(12), data(3) * 2  # Captum fails on a last batch smaller than top_k
    kwargs: dict[str, Any] = dict(similarity_direction=direction, batch_size=4)
    theirs_metric = captum_sim.cosine_similarity if metric is cosine_similarity else captum_sim.euclidean_distance
    ours = SimilarityInfluence(
        model, ["fc1", "fc2"], Rows(train), str(tmp_path / "a"), similarity_metric=metric, **kwargs
    )
    theirs = captum_sim.SimilarityInfluence(
        model, ["fc1", "fc2"], Rows(train), str(tmp_path / "b"), similarity_metric=theirs_metric, **kwargs
    )
    got, expected = ours.influence(x, top_k=4), theirs.influence(x, top_k=4)
    for layer in ("fc1", "fc2"):
        assert torch.equal(got[layer][0], expected[layer][0])
        assert torch.allclose(got[layer][1], expected[layer][1], atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 13, 20])
def test_batch_size_invariance_and_dataloader(tmp_path: Path, batch_size: int) -> None:
    model, train, x = Net(), data(), data(2)
    reference = SimilarityInfluence(model, "fc1", Rows(train), str(tmp_path / "ref"), batch_size=13).influence(
        x, top_k=5
    )
    labelled = DataLoader(TensorDataset(train, torch.arange(13)), batch_size=batch_size)
    sim = SimilarityInfluence(model, "fc1", labelled, str(tmp_path / str(batch_size)))
    got = sim.influence(x, top_k=5)
    assert torch.equal(got["fc1"][0], reference["fc1"][0])
    assert torch.allclose(got["fc1"][1], reference["fc1"][1])


def test_top_k_larger_than_dataset(tmp_path: Path) -> None:
    indices, scores = SimilarityInfluence(Net(), "fc2", Rows(data(5)), str(tmp_path), batch_size=2).influence(
        data(2), top_k=9
    )["fc2"]
    assert indices.shape == scores.shape == (2, 5)
    assert torch.equal(indices.sort(dim=1).values, torch.arange(5).expand(2, 5))


def test_cache_is_written_read_and_refreshed(tmp_path: Path) -> None:
    model, train, x = Net(), data(), data(2)
    sim = SimilarityInfluence(model, "fc1", Rows(train), str(tmp_path), model_id="v1", batch_size=5)
    first = sim.influence(x, top_k=2)
    layer_dir = tmp_path / "av" / "v1" / "src" / "fc1"
    assert sorted(os.listdir(layer_dir)) == ["0.pt", "1.pt", "2.pt"]
    with torch.no_grad():
        model.fc1.weight.mul_(-1)
    cached = sim.influence(x, top_k=2)  # test activations change, training ones come from the stale cache
    fresh = sim.influence(x, top_k=2, load_src_from_disk=False)
    assert not torch.equal(cached["fc1"][1], fresh["fc1"][1])
    with torch.no_grad():
        model.fc1.weight.mul_(-1)
    again = sim.influence(x, top_k=2, load_src_from_disk=False)
    assert torch.equal(again["fc1"][0], first["fc1"][0])


def test_zero_activations_warn_and_are_listed(tmp_path: Path) -> None:
    train = torch.cat((data(3), torch.zeros(1, 4)))
    model = nn.Sequential(nn.Identity())
    with pytest.warns(RuntimeWarning, match="all-zero"):
        out = SimilarityInfluence(model, "0", Rows(train), str(tmp_path), batch_size=3).influence(data(2), top_k=4)
    assert torch.equal(out["zero_acts-0"], torch.tensor([[0, 3], [1, 3]]))
    assert torch.equal(out["0"][0][:, -1], torch.tensor([3, 3]))  # ranked last (score -2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SimilarityInfluence(model, "0", Rows(data(3)), str(tmp_path / "b")).influence(data(2))


def test_no_hooks_left_mode_and_rng_kept(tmp_path: Path) -> None:
    model = Net().eval()
    rng = torch.get_rng_state()
    SimilarityInfluence(model, ["fc1", "relu"], Rows(data()), str(tmp_path)).influence(data(2))
    assert not model.training and torch.equal(rng, torch.get_rng_state())
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_arguments(tmp_path: Path) -> None:
    model, train = Net(), Rows(data())
    with pytest.raises(ValueError, match="similarity_direction.*'max'"):
        SimilarityInfluence(model, "fc1", train, str(tmp_path), similarity_direction="maximum")
    with pytest.raises(ValueError, match="layers: the model has no module 'fc3'.*fc1"):
        SimilarityInfluence(model, "fc3", train, str(tmp_path))
    with pytest.raises(ValueError, match="layers: expected at least one"):
        SimilarityInfluence(model, [], train, str(tmp_path))
    with pytest.raises(TypeError, match="influence_src_dataset"):
        SimilarityInfluence(model, "fc1", [1, 2], str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        SimilarityInfluence(model, "fc1", train, str(tmp_path), batch_size=0)
    sim = SimilarityInfluence(model, "fc1", train, str(tmp_path), similarity_metric=lambda a, b: a @ a.T)
    with pytest.raises(ValueError, match="similarity_metric: expected a tensor of shape"):
        sim.influence(data(2))
    with pytest.raises(ValueError, match="top_k"):
        SimilarityInfluence(model, "fc1", train, str(tmp_path)).influence(data(2), top_k=0)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Identity()

    def forward(self, a: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        out: Tensor = self.mix(scale * (a + b))
        return out


def test_tuple_inputs_and_additional_forward_args(tmp_path: Path) -> None:
    a, b = data(6), data(6) * 0.5
    train = DataLoader(TensorDataset(a, b, torch.arange(6)), batch_size=4)  # (inputs..., label)
    sim = SimilarityInfluence(TwoInputs(), "mix", train, str(tmp_path))
    indices, scores = sim.influence((a[:2], b[:2]), top_k=1, additional_forward_args=(3.0,))["mix"]
    assert torch.equal(indices[:, 0], torch.tensor([0, 1]))  # cosine ignores the scale
    assert torch.allclose(scores, torch.ones(2, 1), atol=1e-6)
