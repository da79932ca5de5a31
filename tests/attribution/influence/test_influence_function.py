"""NaiveInfluenceFunction: the closed form of linear regression, parity with Captum, batch-size invariance,
DataLoader inputs, the caller's state left alone and argument errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from attribution.influence.base import KMostInfluentialResults
from attribution.influence.influence_function import ArnoldiInfluenceFunction, NaiveInfluenceFunction


def regression(n: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)


def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 1)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1 = nn.Linear(3, 4)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


def test_linear_regression_closed_form() -> None:
    model, (x, y), (x_test, y_test) = linear(), regression(), regression(4, seed=1)
    reg = 1e-3
    fn = NaiveInfluenceFunction(
        model,
        TensorDataset(x, y),
        loss_fn=nn.MSELoss(reduction="none"),
        batch_size=5,
        projection_dim=None,
        hessian_reg=reg,
    )

    # Per-example loss (w'x + b - y)^2: gradient 2 r [x, 1], Hessian sum_i 2 [x_i, 1][x_i, 1]'.
    def features(a: Tensor) -> Tensor:
        return torch.cat((a, torch.ones(len(a), 1)), dim=1)

    def grads(a: Tensor, b: Tensor) -> Tensor:
        with torch.no_grad():
            g: Tensor = 2 * (model(a) - b) * features(a)
        return g

    # Parameter order of the model: weight (3), then bias (1).
    H = 2 * features(x).T @ features(x) + reg * torch.eye(4)
    expected = grads(x_test, y_test) @ torch.linalg.solve(H, grads(x, y).T)
    assert torch.allclose(fn.influence((x_test, y_test)), expected, rtol=1e-4, atol=1e-5)
    expected_self = torch.einsum("ij,ij->i", grads(x, y), torch.linalg.solve(H, grads(x, y).T).T)
    assert torch.allclose(fn.self_influence(), expected_self, rtol=1e-4, atol=1e-5)


def test_parity_with_captum(tmp_path: Path) -> None:
    captum_if = pytest.importorskip("captum.influence._core.influence_function")
    model, x = MLP(), torch.randn(10, 3, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    path = tmp_path / "checkpoint.pt"
    torch.save(model.state_dict(), path)
    test = (x[:3] + 0.5, labels[:3])
    kwargs: dict[str, Any] = dict(
        layers=["fc2"], loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=4, projection_dim=4
    )
    ours = NaiveInfluenceFunction(model, TensorDataset(x, labels), str(path), **kwargs)
    theirs = captum_if.NaiveInfluenceFunction(model, TensorDataset(x, labels), str(path), **kwargs)
    assert torch.allclose(ours.influence(test), theirs.influence(test), atol=1e-5)
    assert torch.allclose(ours.self_influence(), theirs.self_influence(), atol=1e-5)
    got, expected = ours.influence(test, k=3, proponents=False), theirs.influence(test, k=3, proponents=False)
    assert isinstance(got, KMostInfluentialResults)
    assert torch.equal(got.indices, expected.indices)
    assert torch.allclose(got.influence_scores, expected.influence_scores, atol=1e-5)
    # Keep eigenvalues well above the tolerance (the 5th is 3e-5): float32 noise there is amplified by 1/l.
    # Captum's embeddings agree up to the sign of each eigenvector: compare their Gram matrices.
    a = ours.compute_intermediate_quantities(test)
    b = theirs.compute_intermediate_quantities(test)
    assert torch.allclose(a @ a.T, b @ b.T, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 10])
def test_batch_size_invariance_and_dataloader_inputs(batch_size: int) -> None:
    x, y = regression(10)
    loss = nn.MSELoss(reduction="none")
    reference = NaiveInfluenceFunction(MLP2(), TensorDataset(x, y), loss_fn=loss, batch_size=10)
    fn = NaiveInfluenceFunction(MLP2(), DataLoader(TensorDataset(x, y), batch_size=batch_size), loss_fn=loss)
    test_x, test_y = regression(5, seed=3)
    expected = reference.influence((test_x, test_y))
    loader = DataLoader(TensorDataset(test_x, test_y), batch_size=2)
    assert torch.allclose(fn.influence(loader), expected, atol=1e-5)
    assert torch.allclose(fn.influence((test_x, test_y)), expected, atol=1e-5)


class MLP2(nn.Module):
    """A one-output MLP for regression."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reduction_does_not_matter(reduction: str) -> None:
    x, y = regression(8)
    data = TensorDataset(x, y)
    reference = NaiveInfluenceFunction(linear(), data, loss_fn=nn.MSELoss(reduction="none"), batch_size=3)
    fn = NaiveInfluenceFunction(linear(), data, loss_fn=nn.MSELoss(reduction=reduction), batch_size=3)
    assert torch.allclose(fn.influence((x[:2], y[:2])), reference.influence((x[:2], y[:2])), atol=1e-5)


def test_caller_state_untouched() -> None:
    model = MLP().eval()
    model.fc1.weight.requires_grad_(False)
    x, labels = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fn = NaiveInfluenceFunction(model, TensorDataset(x, labels), loss_fn=nn.CrossEntropyLoss(reduction="none"))
    fn.influence((x[:2], labels[:2]), k=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.fc1.weight.requires_grad and all(p.grad is None for p in model.parameters())
    assert not model.training and torch.equal(rng, torch.get_rng_state())


def test_bad_arguments() -> None:
    x, y = regression(6)
    data, loss = TensorDataset(x, y), nn.MSELoss(reduction="none")
    with pytest.raises(ValueError, match="layers: 'fc9'"):
        NaiveInfluenceFunction(linear(), data, loss_fn=loss, layers=["fc9"])
    with pytest.raises(TypeError, match="layers"):
        NaiveInfluenceFunction(linear(), data, loss_fn=loss, layers="weight")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_dataset"):
        NaiveInfluenceFunction(linear(), [x, y], loss_fn=loss)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hessian_reg"):
        NaiveInfluenceFunction(linear(), data, loss_fn=loss, hessian_reg=-1.0)
    with pytest.raises(ValueError, match="projection_dim"):
        NaiveInfluenceFunction(linear(), data, loss_fn=loss, projection_dim=0)
    with pytest.raises(ValueError, match="hessian_inverse_tol: no eigenvalue"):
        NaiveInfluenceFunction(linear(), data, loss_fn=loss, hessian_inverse_tol=1e9)
    with pytest.raises(ValueError, match="reduction"):
        NaiveInfluenceFunction(linear(), data, loss_fn=nn.MSELoss(reduction="batchmean"))
    fn = NaiveInfluenceFunction(linear(), data, loss_fn=loss)
    with pytest.raises(ValueError, match="k:"):
        fn.influence((x, y), k=0)
    with pytest.raises(TypeError, match="inputs_dataset"):
        fn.influence(x)  # type: ignore[call-overload]


def test_arnoldi_over_the_whole_space_equals_naive() -> None:
    model, x = MLP(), torch.randn(10, 3, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    data, test = TensorDataset(x, labels), (x[:3] + 0.5, labels[:3])
    kwargs: dict[str, Any] = dict(
        layers=["fc2"], loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=4, hessian_reg=1e-3
    )
    naive = NaiveInfluenceFunction(model, data, projection_dim=4, hessian_inverse_tol=1e-4, **kwargs)
    # fc2 has 10 parameters: 10 Krylov vectors span them all.
    rng = torch.get_rng_state()
    arnoldi = ArnoldiInfluenceFunction(model, data, projection_dim=4, arnoldi_dim=10, arnoldi_tol=1e-6, **kwargs)
    assert torch.equal(rng, torch.get_rng_state())  # the start vector comes from a private generator
    assert torch.allclose(arnoldi.influence(test), naive.influence(test), atol=1e-4)
    assert torch.allclose(arnoldi.self_influence(), naive.self_influence(), atol=1e-4)


def test_arnoldi_parity_with_captum_on_top_eigenpairs(tmp_path: Path) -> None:
    captum_arnoldi = pytest.importorskip("captum.influence._core.arnoldi_influence_function")
    model, x = MLP(), torch.randn(10, 3, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    data, test = TensorDataset(x, labels), (x[:3] + 0.5, labels[:3])
    path = tmp_path / "checkpoint.pt"
    torch.save(model.state_dict(), path)
    # The top eigenvalues (5.4, 1.4, 0.29) are well separated: any start vector finds them in 8 steps. A tiny
    # arnoldi_tol keeps both iterations going (Captum drops the last basis vector, fatal when it stops at 2).
    kwargs: dict[str, Any] = dict(
        layers=["fc2"],
        loss_fn=nn.CrossEntropyLoss(reduction="none"),
        batch_size=4,
        projection_dim=3,
        arnoldi_dim=8,
        arnoldi_tol=1e-6,
    )
    ours = ArnoldiInfluenceFunction(model, data, str(path), **kwargs)
    theirs = captum_arnoldi.ArnoldiInfluenceFunction(model, data, str(path), **kwargs)
    assert torch.allclose(ours.influence(test), theirs.influence(test), atol=1e-4)
    assert torch.allclose(ours.self_influence(), theirs.self_influence(), atol=1e-4)


def test_arnoldi_bad_arguments() -> None:
    x, y = regression(6)
    data, loss = TensorDataset(x, y), nn.MSELoss(reduction="none")
    with pytest.raises(ValueError, match="arnoldi_dim"):
        ArnoldiInfluenceFunction(linear(), data, loss_fn=loss, arnoldi_dim=0)
    with pytest.raises(ValueError, match="arnoldi_tol"):
        ArnoldiInfluenceFunction(linear(), data, loss_fn=loss, arnoldi_tol=float("nan"))
