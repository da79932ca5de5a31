"""TracInCP: a closed form, parity with Captum, invariances and argument errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution.influence.base import KMostInfluentialResults
from attribution.influence.tracincp import TracInCP

captum_tracincp = pytest.importorskip("captum.influence._core.tracincp")


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def save_checkpoints(model: nn.Module, folder: Path, rates: list[float], seed: int = 0) -> list[str]:
    """Perturbed copies of ``model``'s weights with a learning rate each, as Captum's tests do."""
    generator = torch.Generator().manual_seed(seed)
    paths = []
    for i, rate in enumerate(rates):
        state = {k: v + 0.3 * torch.randn(v.shape, generator=generator) for k, v in model.state_dict().items()}
        path = folder / f"ckpt-{i}.pt"
        torch.save({"state": state, "lr": rate}, path)
        paths.append(str(path))
    return paths


def load_with_rate(model: nn.Module, path: str) -> float:
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["state"])
    return float(checkpoint["lr"])


@pytest.fixture
def classification(tmp_path: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    model = _mlp()
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    x_test, y_test = torch.randn(4, 4), torch.randint(0, 3, (4,))
    paths = save_checkpoints(model, tmp_path, [0.5, 1.5, 0.1])
    return {"model": model, "train": TensorDataset(x, y), "test": (x_test, y_test), "paths": paths}


def test_closed_form_linear_regression(tmp_path: Path) -> None:
    # Squared loss of a linear model: grad wrt (w, b) = 2 r (x, 1), r the residual; TracIn is
    # sum_c lr_c * 4 r r' (x . x' + 1).
    model = nn.Linear(3, 1)
    x, y = torch.randn(6, 3), torch.randn(6, 1)
    x_test, y_test = torch.randn(2, 3), torch.randn(2, 1)
    states, rates, paths = [], [0.3, 2.0], []
    for i, rate in enumerate(rates):
        state = {"weight": torch.randn(1, 3), "bias": torch.randn(1)}
        states.append(state)
        torch.save({**state, "learning_rate": rate}, tmp_path / f"c{i}.pt")
        paths.append(str(tmp_path / f"c{i}.pt"))
    expected = torch.zeros(2, 6)
    for state, rate in zip(states, rates):
        r_train = x @ state["weight"].T + state["bias"] - y
        r_test = x_test @ state["weight"].T + state["bias"] - y_test
        expected += rate * 4 * (r_test @ r_train.T) * (x_test @ x.T + 1)
    tracin = TracInCP(model, TensorDataset(x, y), str(tmp_path), loss_fn=nn.MSELoss(reduction="none"), batch_size=4)
    torch.testing.assert_close(tracin.influence((x_test, y_test)), expected)
    self_expected = sum(
        rate * 4 * (x @ s["weight"].T + s["bias"] - y).squeeze(1) ** 2 * ((x * x).sum(1) + 1)
        for s, rate in zip(states, rates)
    )
    torch.testing.assert_close(tracin.self_influence(), self_expected)


@pytest.mark.parametrize(
    ("reduction", "sample_wise", "layers"),
    [("none", False, None), ("sum", True, None), ("mean", True, None), ("none", False, ["2"])],
)
def test_parity_with_captum(classification: dict[str, Any], reduction: str, sample_wise: bool, layers: Any) -> None:
    c = classification
    args = (c["model"], c["train"], c["paths"], load_with_rate)
    kwargs = dict(
        layers=layers,
        loss_fn=nn.CrossEntropyLoss(reduction=reduction),
        batch_size=3,
        sample_wise_grads_per_batch=sample_wise,
    )
    ours, theirs = TracInCP(*args, **kwargs), captum_tracincp.TracInCP(*args, **kwargs)
    torch.testing.assert_close(ours.influence(c["test"]), theirs.influence(c["test"]))
    for proponents in (True, False):
        mine = ours.influence(c["test"], k=3, proponents=proponents)
        reference = theirs.influence(c["test"], k=3, proponents=proponents)
        assert isinstance(mine, KMostInfluentialResults)
        torch.testing.assert_close(mine.indices, reference.indices)
        torch.testing.assert_close(mine.influence_scores, reference.influence_scores)
    torch.testing.assert_close(ours.self_influence(), theirs.self_influence())
    torch.testing.assert_close(ours.self_influence(c["test"]), theirs.self_influence(c["test"]))
    torch.testing.assert_close(ours.influence(c["test"], aggregate=True), theirs.influence(c["test"], aggregate=True))


def test_batch_size_and_dataloader_invariance(classification: dict[str, Any]) -> None:
    c = classification
    loss = nn.CrossEntropyLoss(reduction="none")
    results = []
    for batch_size in (1, 4, 10):
        tracin = TracInCP(c["model"], c["train"], c["paths"], load_with_rate, loss_fn=loss, batch_size=batch_size)
        test_loader = DataLoader(TensorDataset(*c["test"]), batch_size=3)
        scores = tracin.influence(test_loader)
        assert isinstance(scores, Tensor)
        torch.testing.assert_close(scores, tracin.influence(c["test"]))
        by_checkpoints = tracin.self_influence(outer_loop_by_checkpoints=True)
        torch.testing.assert_close(by_checkpoints, tracin.self_influence(show_progress=False))
        results.append((scores, by_checkpoints))
    for scores, self_scores in results[1:]:
        torch.testing.assert_close(scores, results[0][0])
        torch.testing.assert_close(self_scores, results[0][1])


def test_model_state_restored_and_train_dataloader_accepted(classification: dict[str, Any]) -> None:
    c = classification
    before = {k: v.clone() for k, v in c["model"].state_dict().items()}
    flags = [p.requires_grad for p in c["model"].parameters()]
    loader = DataLoader(c["train"], batch_size=4)
    tracin = TracInCP(c["model"], loader, c["paths"], load_with_rate, loss_fn=nn.CrossEntropyLoss(reduction="none"))
    scores = tracin.influence(c["test"])
    assert isinstance(scores, Tensor) and scores.shape == (4, 10)
    tracin.self_influence()
    for key, value in c["model"].state_dict().items():
        assert torch.equal(value, before[key])
    assert [p.requires_grad for p in c["model"].parameters()] == flags
    assert all(p.grad is None for p in c["model"].parameters())


def test_checkpoints_directory_glob_natural_order_and_default_loader(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    for i in (10, 9, 2):
        torch.save({**model.state_dict(), "learning_rate": float(i)}, tmp_path / f"ckpt-{i}.pt")
    data = TensorDataset(torch.randn(3, 2), torch.randn(3, 1))
    loss = nn.MSELoss(reduction="none")
    names = [Path(p).name for p in TracInCP(model, data, str(tmp_path), loss_fn=loss).checkpoints]
    assert names == ["ckpt-2.pt", "ckpt-9.pt", "ckpt-10.pt"]
    globbed = TracInCP(model, data, str(tmp_path / "ckpt-1*.pt"), loss_fn=loss).checkpoints
    assert [Path(p).name for p in globbed] == ["ckpt-10.pt"]
    single = TracInCP(model, data, globbed, loss_fn=loss).self_influence()
    all_three = TracInCP(model, data, str(tmp_path), loss_fn=loss).self_influence()
    torch.testing.assert_close(all_three, single * 21 / 10)  # same weights: scores scale with sum of rates


def test_errors(classification: dict[str, Any], tmp_path: Path) -> None:
    c = classification
    base = (c["model"], c["train"], c["paths"], load_with_rate)
    with pytest.raises(ArgumentError, match="checkpoints"):
        TracInCP(c["model"], c["train"], str(tmp_path / "missing"))
    with pytest.raises(ArgumentTypeError, match="checkpoints"):
        TracInCP(c["model"], c["train"], 3)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="train_dataset"):
        TracInCP(c["model"], [1, 2], c["paths"])  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="batch_size"):
        TracInCP(*base, batch_size=0)
    with pytest.raises(ArgumentError, match="loss_fn: reduction"):
        TracInCP(*base, loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(ArgumentError, match="loss_fn: reduction"):
        TracInCP(*base, loss_fn=nn.CrossEntropyLoss(reduction="none"), sample_wise_grads_per_batch=True)
    with pytest.raises(ArgumentError, match="did you mean '2'"):
        TracInCP(*base, layers=["22"])
    tracin = TracInCP(*base, loss_fn=nn.CrossEntropyLoss(reduction="none"))
    with pytest.raises(ArgumentError, match="self_influence"):
        tracin.influence(None)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="inputs"):
        tracin.influence(torch.utils.data.Subset(c["train"], [0]))  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="k: expected"):
        tracin.influence(c["test"], k=0)
    bad_loader = TracInCP(c["model"], c["train"], c["paths"], lambda m, p: "fast")  # type: ignore[arg-type,return-value]
    with pytest.raises(ArgumentTypeError, match="learning rate"):
        bad_loader.self_influence()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TracInCP(*base, loss_fn=nn.CrossEntropyLoss(reduction="none"))


class _Tied(nn.Module):
    """Tied input and output embeddings and a BatchNorm's buffers: what loading a checkpoint must keep."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(4, 4, bias=False)
        self.norm = nn.BatchNorm1d(4)
        self.decode = nn.Linear(4, 4)
        self.decode.weight = self.encode.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(torch.tanh(self.norm(self.encode(x))))


def test_checkpoints_are_loaded_into_the_model_and_its_own_state_comes_back(tmp_path: Path) -> None:
    # The default loader and a custom one both copy each checkpoint into the model's own tensors (the
    # model's values wait in a file meanwhile); both give the same numbers and leave the same model behind:
    # the same Parameter objects, still tied, with their values.
    torch.manual_seed(0)
    model = _Tied().eval()
    x, y = torch.randn(12, 4), torch.randint(0, 4, (12,))
    paths = []
    for i in range(3):
        state = {
            k: v + 0.3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()
        }
        state["decode.weight"] = state["encode.weight"]
        torch.save({**state, "learning_rate": 0.5 + i}, tmp_path / f"ckpt-{i}.pt")
        paths.append(str(tmp_path / f"ckpt-{i}.pt"))

    def copy_into(model: nn.Module, path: str) -> float:
        state = torch.load(path, weights_only=True)
        rate = float(state.pop("learning_rate"))
        model.load_state_dict(state)
        return rate

    params = dict(model.named_parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = nn.CrossEntropyLoss(reduction="none")
    test = (torch.randn(3, 4), torch.randint(0, 4, (3,)))
    results = []
    for load in (None, copy_into):
        extra = {} if load is None else {"checkpoints_load_func": load}
        tracin = TracInCP(model, TensorDataset(x, y), paths, loss_fn=loss, batch_size=5, **extra)
        assert tracin.parameter_names == ["encode.weight", "norm.weight", "norm.bias", "decode.bias"]
        results.append((tracin.influence(test), tracin.influence(test, k=4), tracin.self_influence()))
    for got, expected in zip(results[0], results[1]):
        for a, b in zip(
            got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert dict(model.named_parameters()) == params and model.decode.weight is model.encode.weight
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])

    torch.save({"encode.weight": torch.zeros(2, 2)}, tmp_path / "ckpt-9.pt")  # loaded last: fails mid-way
    with pytest.raises(RuntimeError, match="size mismatch"):
        TracInCP(model, TensorDataset(x, y), str(tmp_path), loss_fn=loss, batch_size=5).self_influence()
    assert dict(model.named_parameters()) == params
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("batch_size", [1, 3, 10])
def test_k_most_merged_by_batch_matches_the_full_matrix(classification: dict[str, Any], batch_size: int) -> None:
    c = classification
    loss = nn.CrossEntropyLoss(reduction="none")
    tracin = TracInCP(c["model"], c["train"], c["paths"], load_with_rate, loss_fn=loss, batch_size=batch_size)
    scores = tracin.influence(c["test"])
    for proponents in (True, False):
        for k in (1, 4, 25):  # 25: more than the training set
            indices, values = tracin.influence(c["test"], k=k, proponents=proponents)
            expected = torch.topk(scores, min(k, 10), dim=1, largest=proponents)
            torch.testing.assert_close(values, expected.values, rtol=0, atol=0)
            torch.testing.assert_close(indices, expected.indices)
