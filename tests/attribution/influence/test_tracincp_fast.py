"""TracInCPFast and TracInCPFastRandProj: the closed form, parity with Captum, invariances, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution.influence import _gradients as core
from attribution.influence.base import KMostInfluentialResults
from attribution.influence.tracincp import TracInCP
from attribution.influence.tracincp_fast import TracInCPFast, TracInCPFastRandProj

from .test_tracincp import load_with_rate, save_checkpoints

captum_fast = pytest.importorskip("captum.influence._core.tracincp_fast_rand_proj")


class ExactNeighbors:
    """Exact top-k inner products, Captum's NearestNeighbors interface (its default index needs annoy)."""

    def setup(self, data: Tensor) -> None:
        self.data = data

    def get_nearest_neighbors(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        scores, indices = torch.topk(query @ self.data.T, k, dim=1)
        return indices, scores


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    x_test, y_test = torch.randn(5, 4), torch.randint(0, 3, (5,))
    paths = save_checkpoints(model, tmp_path, [0.7, 1.3])
    return {"model": model, "train": TensorDataset(x, y), "test": (x_test, y_test), "paths": paths}


def test_fast_equals_tracincp_on_last_weight(setup: dict[str, Any]) -> None:
    # The closed form g a^T is the last layer's weight gradient: TracInCP on that weight alone agrees.
    s = setup
    model = s["model"]
    model[2].bias.requires_grad_(False)
    loss = nn.CrossEntropyLoss(reduction="none")
    full = TracInCP(model, s["train"], s["paths"], load_with_rate, loss_fn=loss, batch_size=5)
    full.parameter_names = ["2.weight"]  # only the weight: the fast form leaves the bias out
    fast = TracInCPFast(model, "2", s["train"], s["paths"], load_with_rate, loss_fn=loss, batch_size=5)
    torch.testing.assert_close(fast.influence(s["test"]), full.influence(s["test"]))
    torch.testing.assert_close(fast.self_influence(), full.self_influence())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_fast_parity_with_captum(setup: dict[str, Any], reduction: str) -> None:
    s = setup
    loss = nn.CrossEntropyLoss(reduction=reduction)
    ours = TracInCPFast(s["model"], "2", s["train"], s["paths"], load_with_rate, loss_fn=loss, batch_size=4)
    theirs = captum_fast.TracInCPFast(s["model"], s["model"][2], s["train"], s["paths"], load_with_rate, loss, 4)
    torch.testing.assert_close(ours.influence(s["test"]), theirs.influence(s["test"]))
    for proponents in (True, False):
        mine = ours.influence(s["test"], k=4, proponents=proponents)
        reference = theirs.influence(s["test"], k=4, proponents=proponents)
        assert isinstance(mine, KMostInfluentialResults)
        torch.testing.assert_close(mine.indices, reference.indices)
        torch.testing.assert_close(mine.influence_scores, reference.influence_scores)
    torch.testing.assert_close(ours.self_influence(), theirs.self_influence())
    torch.testing.assert_close(
        ours.self_influence(s["test"], outer_loop_by_checkpoints=True), theirs.self_influence(s["test"])
    )


@pytest.mark.parametrize("projection_dim", [None, 4, 1000])
def test_rand_proj_parity_with_captum(setup: dict[str, Any], projection_dim: int | None) -> None:
    # Exact without projection; with one, the same projection matrices give the same scores (see below).
    s = setup
    loss = nn.CrossEntropyLoss(reduction="sum")
    rng_state = torch.get_rng_state()
    ours = TracInCPFastRandProj(
        s["model"], "2", s["train"], s["paths"], load_with_rate, loss, 5, projection_dim=projection_dim, seed=3
    )
    assert torch.equal(torch.get_rng_state(), rng_state)
    with_index = TracInCPFastRandProj(  # a seeded private generator: the same draws again
        s["model"], "2", s["train"], s["paths"], load_with_rate, loss, 5,
        nearest_neighbors=ExactNeighbors(), projection_dim=projection_dim, seed=3,
    )  # fmt: skip
    torch.testing.assert_close(with_index.influence(s["test"], k=3), ours.influence(s["test"], k=3))
    with pytest.warns(UserWarning):
        theirs = captum_fast.TracInCPFastRandProj(
            s["model"], s["model"][2], s["train"], s["paths"], load_with_rate, loss, 5,
            nearest_neighbors=ExactNeighbors(), projection_dim=projection_dim, seed=3,
        )  # fmt: skip
    if projection_dim == 4:
        # Captum draws from the global RNG after its DataLoader has drawn a worker seed from it, so the
        # same seed gives other matrices; same shapes, then Captum's matrices in ours.
        assert ours.projection_quantities is not None and theirs.projection_quantities is not None
        assert [p.shape for p in ours.projection_quantities] == [p.shape for p in theirs.projection_quantities]
        ours.projection_quantities = theirs.projection_quantities
        ours._index()  # the training set stored again, under Captum's projections
    else:
        assert ours.projection_quantities is None and theirs.projection_quantities is None
    torch.testing.assert_close(ours.influence(s["test"], k=None), theirs.influence(s["test"], k=None))
    for proponents in (True, False):
        mine = ours.influence(s["test"], k=3, proponents=proponents)
        reference = theirs.influence(s["test"], k=3, proponents=proponents)
        assert isinstance(mine, KMostInfluentialResults)
        torch.testing.assert_close(mine.indices, reference.indices)
        torch.testing.assert_close(mine.influence_scores, reference.influence_scores)
    if projection_dim is None:
        fast = TracInCPFast(s["model"], "2", s["train"], s["paths"], load_with_rate, loss)
        torch.testing.assert_close(ours.influence(s["test"], k=None), fast.influence(s["test"]))
    with pytest.raises(NotImplementedError, match="TracInCPFast"):
        ours.self_influence()


def test_batch_size_dataloader_invariance_and_state(setup: dict[str, Any]) -> None:
    s = setup
    before = {k: v.clone() for k, v in s["model"].state_dict().items()}
    loss = nn.CrossEntropyLoss(reduction="mean")  # rescaled by the batch size: must not depend on it
    test_loader = DataLoader(TensorDataset(*s["test"]), batch_size=2)
    reference = None
    for batch_size in (1, 5, 12):
        fast = TracInCPFast(s["model"], s["model"][2], s["train"], s["paths"], load_with_rate, loss, batch_size)
        scores = fast.influence(test_loader)
        assert isinstance(scores, Tensor)
        torch.testing.assert_close(scores, fast.influence(s["test"]))
        proj = TracInCPFastRandProj(s["model"], "2", s["train"], s["paths"], load_with_rate, loss, batch_size)
        torch.testing.assert_close(proj.influence(test_loader, k=None), scores)
        reference = scores if reference is None else reference
        torch.testing.assert_close(scores, reference)
    for key, value in s["model"].state_dict().items():
        assert torch.equal(value, before[key])


def test_errors(setup: dict[str, Any]) -> None:
    s = setup
    base = (s["model"], "2", s["train"], s["paths"], load_with_rate)
    loss = nn.CrossEntropyLoss(reduction="sum")
    with pytest.raises(ArgumentError, match="loss_fn: required"):
        TracInCPFast(*base)
    with pytest.raises(ArgumentError, match="final_fc_layer.*did you mean"):
        TracInCPFast(s["model"], "22", s["train"], s["paths"], load_with_rate, loss)
    with pytest.raises(ArgumentError, match="not part of the model"):
        TracInCPFast(s["model"], nn.Linear(6, 3), s["train"], s["paths"], load_with_rate, loss)
    with pytest.raises(ArgumentTypeError, match="final_fc_layer"):
        TracInCPFast(s["model"], 2, s["train"], s["paths"], load_with_rate, loss)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="final_fc_layer: the layer was not called"):
        model = nn.ModuleDict({"used": nn.Linear(4, 3), "unused": nn.Linear(3, 3)})
        model.forward = model["used"].forward
        TracInCPFast(model, "unused", s["train"], s["paths"], lambda m, p: 1.0, loss).influence(s["test"])
    with pytest.raises(ArgumentError, match="projection_dim"):
        TracInCPFastRandProj(*base, loss, projection_dim=0)
    with pytest.raises(ArgumentTypeError, match="seed"):
        TracInCPFastRandProj(*base, loss, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="nearest_neighbors"):
        TracInCPFastRandProj(*base, loss, nearest_neighbors=object())  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="inputs: required"):
        TracInCPFastRandProj(*base, loss).influence()


def test_rand_proj_seeded_and_unbiased(setup: dict[str, Any]) -> None:
    s = setup
    loss = nn.CrossEntropyLoss(reduction="sum")
    args = (s["model"], "2", s["train"], s["paths"], load_with_rate, loss, 4)
    first, again = (TracInCPFastRandProj(*args, projection_dim=9, seed=7) for _ in range(2))
    other = TracInCPFastRandProj(*args, projection_dim=9, seed=8)
    assert first.projection_quantities is not None and again.projection_quantities is not None
    assert other.projection_quantities is not None
    assert all(torch.equal(a, b) for a, b in zip(first.projection_quantities, again.projection_quantities))
    assert not torch.equal(first.projection_quantities[1], other.projection_quantities[1])
    assert [tuple(p.shape) for p in first.projection_quantities] == [(3, 3), (6, 3)]
    # The projections are unbiased: averaged over seeds, the scores approach the exact ones.
    exact = TracInCPFast(*args).influence(s["test"])
    assert isinstance(exact, Tensor)
    mean = torch.stack(
        [
            cast(Tensor, TracInCPFastRandProj(*args, projection_dim=9, seed=i).influence(s["test"], k=None))
            for i in range(200)
        ]
    ).mean(0)
    assert (mean - exact).abs().max() < 0.2 * exact.abs().max()


def test_stored_factors_give_captums_rows_and_scores(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # The training set is stored as the factors (sqrt(lr) g, a) of each checkpoint; Captum's rows are their
    # flattened outer products, and the scores the rows' dot products, whichever way they are computed.
    s = setup
    loss = nn.CrossEntropyLoss(reduction="sum")
    fast = TracInCPFastRandProj(s["model"], "2", s["train"], s["paths"], load_with_rate, loss, batch_size=5)
    assert sum(f.numel() for pair in fast._train_factors for f in pair) == 12 * 2 * (3 + 6)
    rows = fast.src_intermediate_quantities
    assert rows.shape == (12, 2 * 3 * 6) and (rows != 0).any(dim=1).all()
    by_hand = []
    for path, rate in zip(s["paths"], [0.7, 1.3]):
        load_with_rate(s["model"], path)
        g, a = core.last_layer_factors(s["model"], s["model"][2], s["train"].tensors, loss, "sum")
        by_hand.append((rate**0.5 * g.unsqueeze(2) * a.unsqueeze(1)).flatten(1))
    torch.testing.assert_close(rows, torch.cat(by_hand, dim=1))
    queries = fast.compute_intermediate_quantities(s["test"])
    torch.testing.assert_close(fast.influence(s["test"], k=None), queries @ rows.T)
    # Loaders that batch differently give the same rows.
    custom_collate = DataLoader(s["train"], batch_size=5, collate_fn=lambda items: tuple(map(torch.stack, zip(*items))))
    torch.testing.assert_close(fast.compute_intermediate_quantities(custom_collate), rows)
    dropped = DataLoader(s["train"], batch_size=5, drop_last=True)
    torch.testing.assert_close(fast.compute_intermediate_quantities(dropped), rows[:10])
    # The top k of a test set scored in blocks of one row (a tiny budget) is that of the whole matrix.
    whole = fast.influence(s["test"], k=3)
    monkeypatch.setattr("attribution.influence.tracincp_fast.memory_budget", lambda device: 1)
    blocked = fast.influence(s["test"], k=3)
    assert isinstance(whole, KMostInfluentialResults) and isinstance(blocked, KMostInfluentialResults)
    torch.testing.assert_close(blocked.indices, whole.indices)
    torch.testing.assert_close(blocked.influence_scores, whole.influence_scores)
    torch.testing.assert_close(whole.influence_scores, torch.topk(queries @ rows.T, 3, dim=1).values)


def test_a_loader_that_yields_other_counts_at_another_checkpoint_is_an_error(setup: dict[str, Any]) -> None:
    s = setup
    loss = nn.CrossEntropyLoss(reduction="sum")
    grown = TensorDataset(*(torch.cat([t, t[:3]]) for t in s["train"].tensors))
    dataset = TensorDataset(*s["train"].tensors)

    def load_and_grow(model: nn.Module, path: str) -> float:  # a list appended to while the scores run
        rate = load_with_rate(model, path)
        if path == s["paths"][1]:
            dataset.tensors = grown.tensors
        return rate

    fast = TracInCPFastRandProj(s["model"], "2", s["train"], s["paths"], load_with_rate, loss, batch_size=5)
    fast.checkpoints_load_func = load_and_grow
    with pytest.raises(ArgumentError, match="yielded 15 examples at checkpoint 1 and 12 at the first"):
        fast.compute_intermediate_quantities(DataLoader(dataset, batch_size=5))
    with pytest.raises(ArgumentError, match="no examples"):
        fast.compute_intermediate_quantities(DataLoader(TensorDataset(torch.empty(0, 4), torch.empty(0))))
