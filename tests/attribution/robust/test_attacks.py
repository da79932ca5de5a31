"""FGSM and PGD: closed forms on a linear score, bounds, masks, random starts, a small CNN, the caller's state,
errors, and parity with Captum."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from attribution._internal.checks import ArgumentError
from attribution.robust import FGSM, PGD, Perturbation

W = torch.tensor([[0.5, -2.0, 1.0, -0.25], [-1.0, 0.75, 3.0, 2.0], [0.0, 1.0, -1.0, 0.5]])


class ExpLinear(nn.Module):
    """``exp(x @ W.T)``: the default loss ``-log(output[t])`` is the linear score ``-w_t . x``, whose
    gradient is ``-w_t`` everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(W)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).exp()


def _x(n: int = 3) -> Tensor:
    return torch.linspace(-1, 1, 4 * n).reshape(n, 4)


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_closed_form(targeted: bool) -> None:
    x, target = _x(), torch.tensor([0, 1, 2])
    out = FGSM(ExpLinear()).perturb(x, 0.1, target, targeted=targeted)
    # untargeted ascends -w_t . x: x - eps * sign(w_t); targeted descends it; zero weights do not move
    direction = torch.sign(W[target]) * (1.0 if targeted else -1.0)
    torch.testing.assert_close(out, x + 0.1 * direction)
    assert torch.equal(out[2, 0], x[2, 0])  # w_2[0] = 0: a zero gradient leaves the element alone


def test_fgsm_bounds_mask_and_tuple_inputs() -> None:
    model = lambda a, b: ExpLinear()(torch.cat([a, b], dim=1))
    x = _x()
    a, b = x[:, :2], x[:, 2:]
    mask = (torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    out = FGSM(model, lower_bound=-0.9, upper_bound=0.9).perturb((a, b), 0.5, 1, mask=mask)
    assert isinstance(out, tuple)
    expected = (x - 0.5 * torch.sign(W[1]) * torch.tensor([1.0, 0.0, 0.0, 1.0])).clamp(-0.9, 0.9)
    torch.testing.assert_close(torch.cat(out, dim=1), expected)
    assert torch.equal(out[0][:, 1], a[:, 1].clamp(-0.9, 0.9)) and torch.equal(out[1][:, 0], b[:, 0].clamp(-0.9, 0.9))


def test_fgsm_loss_func_and_additional_args() -> None:
    def forward(x: Tensor, scale: Tensor) -> Tensor:
        return x @ W.T * scale

    loss = nn.CrossEntropyLoss(reduction="none")
    x, labels = _x(), torch.tensor([2, 0, 1])
    scale = torch.tensor(2.0)
    out = FGSM(forward, loss_func=loss).perturb(x, 0.05, labels, additional_forward_args=scale)
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(forward(leaf, scale), labels).sum(), leaf)
    torch.testing.assert_close(out, x + 0.05 * g.sign())


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("steps", [2, 10])
def test_pgd_linf_closed_form(targeted: bool, steps: int) -> None:
    x, target = _x(), torch.tensor([1, 0, 1])
    out = PGD(ExpLinear()).perturb(x, radius=0.25, step_size=0.1, step_num=steps, target=target, targeted=targeted)
    sign = torch.sign(W[target]) * (1.0 if targeted else -1.0)
    torch.testing.assert_close(out, x + min(0.1 * steps, 0.25) * sign)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_l2_closed_form(targeted: bool) -> None:
    # Captum's PGD steps along the gradient's sign for both norms; L2 projects each example's change back
    # to the ball, so a linear score ends at x -/+ radius * sign(w_t) / sqrt(d) (the direction w_t / |w_t|
    # only where all |w_t| are equal)
    x, target = _x(), torch.tensor([1, 1, 0])
    out = PGD(ExpLinear()).perturb(x, 0.3, 0.1, 6, target, targeted=targeted, norm="L2")
    sign = torch.sign(W[target]) * (1.0 if targeted else -1.0)
    torch.testing.assert_close(out, x + 0.3 * sign / math.sqrt(4), atol=1e-6, rtol=0)
    torch.testing.assert_close((out - x).norm(dim=1), torch.full((3,), 0.3))
    # before the ball is reached, the change is step_num sign steps
    short = PGD(ExpLinear()).perturb(x, 0.3, 0.05, 1, target, targeted=targeted, norm="L2")
    torch.testing.assert_close(short, x + 0.05 * sign)


def test_pgd_bounds_and_masks() -> None:
    x = _x()
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    out = PGD(ExpLinear(), lower_bound=-0.8, upper_bound=0.8).perturb(x, 0.5, 0.2, 5, 1, mask=mask)
    assert isinstance(out, Tensor)
    assert out.min() >= -0.8 and out.max() <= 0.8
    assert torch.equal(out[:, 2], x[:, 2].clamp(-0.8, 0.8))  # masked out: only the bound applies
    expected = (x - 0.5 * torch.sign(W[1]) * mask).clamp(-0.8, 0.8)
    torch.testing.assert_close(out, expected)
    assert ((out - x).abs() <= 0.5 + 1e-6).all()


def test_random_start_in_the_ball() -> None:
    torch.manual_seed(0)
    x = torch.zeros(512, 10)
    mask = torch.ones(1, 10)
    mask[0, :2] = 0
    linf = PGD(ExpLinear()).perturb(x, 0.2, 0.1, 0, 0, random_start=True, mask=mask)
    assert isinstance(linf, Tensor)
    assert (linf.abs() <= 0.2).all() and (linf[:, :2] == 0).all()
    assert abs(float(linf[:, 2:].abs().mean()) - 0.1) < 0.01  # uniform on [-r, r]: mean |change| is r / 2
    l2 = PGD(ExpLinear()).perturb(x, 0.2, 0.1, 0, 0, random_start=True, norm="L2")
    assert isinstance(l2, Tensor)
    norms = l2.norm(dim=1)
    assert (norms <= 0.2 + 1e-6).all()
    # uniform in a 10-dimensional ball: P(|delta| <= r / 2) = 2^-10, so nearly all lie near the sphere
    assert float(norms.median()) == pytest.approx(0.2 * 0.5 ** (1 / 10), rel=0.03)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 5), nn.Softmax(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def test_pgd_on_a_cnn_lowers_the_correct_class_and_leaves_no_mark() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.rand(6, 3, 8, 8)
    x_before = x.clone()
    label = model(x).argmax(dim=1)
    requires = [p.requires_grad for p in model.parameters()]
    out = PGD(model, lower_bound=0, upper_bound=1).perturb(x, 8 / 255, 2 / 255, 10, label)
    assert isinstance(out, Tensor)
    p_before = model(x).gather(1, label[:, None])
    p_after = model(out).gather(1, label[:, None])
    assert (p_after < p_before - 1e-3).all()
    assert ((out - x).abs() <= 8 / 255 + 1e-6).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, x_before) and not x.requires_grad and not out.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == requires


def test_works_under_no_grad_and_keeps_input_flags() -> None:
    x = _x().requires_grad_()
    with torch.no_grad():
        out = FGSM(ExpLinear()).perturb(x, 0.1, 0)
    assert x.requires_grad and x.grad is None
    torch.testing.assert_close(out, x.detach() - 0.1 * torch.sign(W[0]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: FGSM(ExpLinear()).perturb(_x(), -0.1, 0), "epsilon"),
        (lambda: FGSM(ExpLinear()).perturb(_x(), 0.1, 0, mask=torch.ones(3, 5)), "mask"),
        (lambda: FGSM(ExpLinear()).perturb(_x().long(), 0.1, 0), "floating-point"),
        (lambda: FGSM(ExpLinear(), lower_bound=1, upper_bound=0), "lower_bound"),
        (lambda: PGD(ExpLinear()).perturb(_x(), 0.1, 0.1, 1, 0, norm="L1"), "norm.*Linf"),
        (lambda: PGD(ExpLinear()).perturb(_x(), 0.1, 0.1, -1, 0), "step_num"),
        (lambda: PGD(ExpLinear()).perturb(_x(), float("nan"), 0.1, 1, 0), "radius"),
        (lambda: FGSM(ExpLinear()).perturb(_x(), 0.1, [0, 1]), "target"),
    ],
)
def test_errors_name_the_argument(call: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()  # type: ignore[operator]


def test_perturbation_base() -> None:
    class Shift(Perturbation):
        def perturb(self, x: Tensor, amount: float) -> Tensor:  # type: ignore[override]
            return x + amount

    assert torch.equal(Shift()(torch.zeros(2), amount=1.0), torch.ones(2))
    with pytest.raises(NotImplementedError):
        Perturbation()(torch.zeros(1))
    assert issubclass(ArgumentError, AssertionError)


def _mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4), nn.Softmax(dim=1))


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_parity_with_captum(norm: str, targeted: bool) -> None:
    robust = pytest.importorskip("captum.robust")
    model = _mlp()
    torch.manual_seed(4)
    x = 2 * torch.randn(5, 6)  # some elements lie outside the bounds by more than the radius
    target = torch.tensor([0, 1, 2, 3, 0])
    mask = (torch.rand(1, 6) > 0.3).float()
    ours = FGSM(model, lower_bound=-1, upper_bound=1).perturb(x, 0.1, target, targeted=targeted, mask=mask)
    theirs = robust.FGSM(model, lower_bound=-1, upper_bound=1).perturb(x, 0.1, target, None, targeted, mask)
    torch.testing.assert_close(ours, theirs)
    kwargs = dict(targeted=targeted, norm=norm, mask=mask)
    ours = PGD(model, lower_bound=-1, upper_bound=1).perturb(x, 0.3, 0.05, 8, target, **kwargs)
    theirs = robust.PGD(model, lower_bound=-1, upper_bound=1).perturb(x, 0.3, 0.05, 8, target, **kwargs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_replaced_bound_is_applied_after_each_projection() -> None:
    pgd = PGD(ExpLinear(), lower_bound=-0.5, upper_bound=0.5)
    calls: list[Tensor] = []

    def bound(t: Tensor) -> Tensor:
        calls.append(t)
        return t.clamp(-0.1, 0.1)

    pgd.bound = bound
    out = pgd.perturb(_x(), 1.0, 0.05, 3, 0)
    assert len(calls) == 3 and isinstance(out, Tensor) and out.abs().max() <= 0.1
