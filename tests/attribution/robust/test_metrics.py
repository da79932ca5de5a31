"""AttackComparator and MinParamPerturbation on deterministic toys, and parity with Captum."""

from __future__ import annotations

import warnings
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attribution.robust import FGSM, AttackComparator, MinParamPerturbation

Result = namedtuple("Result", "accuracy score")


def identity_model() -> nn.Module:
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    return model


def metric(out: Tensor, target: Tensor) -> Result:
    return Result((out.argmax(dim=1) == target).float(), out.gather(1, target[:, None]).squeeze(1))


def zero_column(x: Tensor, column: int) -> Tensor:
    return x * (torch.arange(x.shape[1]) != column)


class Cycle:
    """A 'random' attack that is deterministic: attempt ``k`` zeroes column ``k % 3``."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        return zero_column(x, (self.calls - 1) % 3)


X1 = torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, 1.0]])
T1 = torch.tensor([0, 1])
X2 = torch.tensor([[1.0, 2.0, 5.0], [2.0, 1.0, 0.0]])
T2 = torch.tensor([2, 1])


def comparator(forwards: list[int] | None = None) -> AttackComparator:
    model = identity_model()

    def forward(x: Tensor) -> Tensor:
        if forwards is not None:
            forwards.append(len(x))
        return model(x)

    comp = AttackComparator(forward, metric)
    comp.add_attack(zero_column, name="drop0", attack_kwargs={"column": 0})
    comp.add_attack(Cycle(), name="cycle", num_attempts=3)
    return comp


@pytest.mark.parametrize("per_eval", [1, 2, 5])
def test_attack_comparator_values(per_eval: int) -> None:
    forwards: list[int] = []
    comp = comparator(forwards)
    first = comp.evaluate(X1, perturbations_per_eval=per_eval, target=T1)
    # 5 copies (original, drop0, 3 cycle attempts) in ceil(5 / per_eval) forwards
    assert len(forwards) == -(-5 // per_eval) and sum(forwards) == 10
    assert isinstance(first["Original"], Result)
    torch.testing.assert_close(first["Original"].accuracy, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(first["Original"].score, torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(first["drop0"]["mean"].accuracy, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(first["drop0"]["mean"].score, torch.tensor([0.0, 4.0]))
    cycle = first["cycle"]
    assert set(cycle) == {"mean", "min", "max"}
    # the three attempts zero columns 0, 1, 2: scores of example 0 (target 0) are 0, 3, 3; example 1: 4, 0, 4
    torch.testing.assert_close(cycle["mean"].score, torch.tensor([2.0, 8 / 3]))
    torch.testing.assert_close(cycle["min"].score, torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(cycle["max"].score, torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(cycle["mean"].accuracy, torch.tensor([2 / 3, 2 / 3]))

    second = comp.evaluate(X2, perturbations_per_eval=per_eval, target=T2)
    torch.testing.assert_close(second["Original"].score, torch.tensor([5.0, 1.0]))
    summary = comp.summary()
    assert set(summary) == {"Original", "drop0", "cycle Mean Attempt", "cycle Min Attempt", "cycle Max Attempt"}
    # running mean over batches of each batch's mean over examples
    torch.testing.assert_close(summary["Original"]["mean"].score, torch.tensor((3.5 + 3.0) / 2))
    torch.testing.assert_close(summary["Original"]["mean"].accuracy, torch.tensor((1.0 + 0.5) / 2))
    torch.testing.assert_close(summary["drop0"]["mean"].score, torch.tensor((2.0 + 3.0) / 2))
    # batch 2's cycle attempts: example 0 scores 5, 5, 0; example 1 scores 1, 0, 1
    torch.testing.assert_close(summary["cycle Min Attempt"]["mean"].score, torch.tensor((0.0 + 0.0) / 2))
    torch.testing.assert_close(summary["cycle Max Attempt"]["mean"].score, torch.tensor((3.5 + 3.0) / 2))
    comp.reset()
    assert comp.summary() == {}


def test_attack_comparator_plain_metric_additional_args_and_fgsm() -> None:
    model = nn.Sequential(identity_model(), nn.Softmax(dim=1))
    comp = AttackComparator(lambda x, scale: model(x * scale), lambda out, target: out[:, target])
    comp.add_attack(FGSM(model), attack_kwargs={"epsilon": 1.0}, additional_attack_arg_names=["target"])
    results = comp.evaluate(X1, additional_forward_args=torch.ones(2, 1), perturbations_per_eval=2, target=0)
    clean = model(X1)[:, 0]
    attacked = model(X1 + torch.tensor([-1.0, 1.0, 1.0]))[:, 0]  # -log p_0 rises fastest along (-1, +1, +1)
    torch.testing.assert_close(results["Original"], clean)
    torch.testing.assert_close(results["FGSM"]["mean"], attacked)
    torch.testing.assert_close(comp.summary()["FGSM"]["mean"], attacked.mean())


def test_attack_comparator_errors_and_warnings() -> None:
    comp = comparator()
    with pytest.raises(RuntimeError, match="drop0"):
        comp.add_attack(zero_column, name="drop0")
    with pytest.raises(ValueError, match="num_attempts"):
        comp.add_attack(zero_column, name="x", num_attempts=0)
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        comp.evaluate(X1, perturbations_per_eval=0, target=T1)
    comp.add_attack(lambda x, target: x, name="needs target", additional_attack_arg_names=["target", "label"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comp.evaluate(X1, target=T1)
    assert any("label" in str(w.message) for w in caught)
    text = AttackComparator(lambda x: x, lambda out: out.sum(), preproc_fn=lambda s: s)
    text.add_attack(lambda s: s + "!", name="bang")
    with pytest.raises(TypeError, match="perturbations_per_eval"):
        text.evaluate("abc", perturbations_per_eval=2)


class Threshold(nn.Module):
    """Class 1 wins once the scalar input exceeds 0.7: logits (0.7, x)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append(len(x))
        return torch.cat([torch.full_like(x, 0.7), x], dim=1)


def add_noise(x: Tensor, noise: float) -> Tensor:
    return x + noise


@pytest.mark.parametrize("mode", ["linear", "binary"])
@pytest.mark.parametrize("per_eval", [1, 4])
def test_min_param_finds_the_threshold(mode: str, per_eval: int) -> None:
    model = Threshold()
    search = MinParamPerturbation(model, add_noise, "noise", arg_min=0.0, arg_max=2.0, arg_step=0.25, mode=mode)
    x = torch.zeros(1, 1)
    perturbed, value = search.evaluate(x, target=0, perturbations_per_eval=per_eval)
    assert value == 0.75  # the first grid value above 0.7
    torch.testing.assert_close(perturbed, torch.full((1, 1), 0.75))
    if mode == "linear":  # values 0, 0.25, 0.5, 0.75 tried, per_eval at a time
        assert sum(model.calls) == 4 and len(model.calls) == -(-4 // per_eval)
    else:  # bisection of 8 grid values: 3 or 4 probes
        assert len(model.calls) <= 4


def test_min_param_none_found_and_custom_correct_fn() -> None:
    search = MinParamPerturbation(Threshold(), add_noise, "noise", 0.0, 0.5, 0.1)
    assert search.evaluate(torch.zeros(1, 1), target=0) == (None, None)

    def still_low(out: Tensor, limit: float) -> bool:
        return bool((out[:, 1] < limit).all())

    for mode in ("linear", "binary"):
        search = MinParamPerturbation(
            Threshold(), add_noise, "noise", 0, 10, 1, mode=mode, correct_fn=still_low, num_attempts=2
        )
        perturbed, value = search.evaluate(
            torch.zeros(2, 1), correct_fn_kwargs={"limit": 3.5}, perturbations_per_eval=3
        )
        assert value == 4
        torch.testing.assert_close(perturbed, torch.full((2, 1), 4.0))


def test_min_param_preproc() -> None:
    # inputs are strings; the attack pads them before preprocessing, the model reads their length
    model = lambda x: torch.stack([torch.full_like(x, 5.0), x], dim=1)
    preproc = lambda words: torch.tensor([float(len(w)) for w in words])
    pad = lambda words, extra: [w + "x" * extra for w in words]
    search = MinParamPerturbation(model, pad, "extra", 0, 10, 1, preproc_fn=preproc, apply_before_preproc=True)
    perturbed, value = search.evaluate(["ab", "abc"], target=0, perturbations_per_eval=3)
    assert value == 3 and perturbed == ["abxxx", "abcxxx"]
    after = MinParamPerturbation(model, add_noise, "noise", 0, 10, 1, preproc_fn=preproc, mode="binary")
    perturbed, value = after.evaluate(["ab", "abc"], target=0)
    assert value == 3 and torch.equal(perturbed, torch.tensor([5.0, 6.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arg_max": 0.2}, "arg_max"),
        ({"arg_step": 0}, "arg_step"),
        ({"mode": "binay"}, "binary"),
        ({"num_attempts": 0}, "num_attempts"),
        ({"arg_min": "0"}, "arg_min"),
    ],
)
def test_min_param_errors(kwargs: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {"arg_min": 0.0, "arg_max": 1.0, "arg_step": 0.25, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        MinParamPerturbation(Threshold(), add_noise, "noise", **options)
    with pytest.raises(ValueError, match="target"):
        MinParamPerturbation(Threshold(), add_noise, "noise", 0, 1, 0.25).evaluate(torch.zeros(1, 1))


def test_parity_with_captum() -> None:
    robust = pytest.importorskip("captum.robust")
    for mode in ("linear", "binary"):
        ours = MinParamPerturbation(Threshold(), add_noise, "noise", 0.0, 2.0, 0.25, mode=mode)
        theirs = robust.MinParamPerturbation(Threshold(), add_noise, "noise", 0.0, 2.0, 0.25, mode=mode)
        for per_eval in (1, 3):
            a, b = ours.evaluate(torch.zeros(1, 1), target=0, perturbations_per_eval=per_eval)
            c, d = theirs.evaluate(torch.zeros(1, 1), target=0, perturbations_per_eval=per_eval)
            assert b == d and torch.equal(a, c)
    results = []
    for library in (None, robust):
        comp = comparator() if library is None else library.AttackComparator(identity_model(), metric)
        if library is not None:
            comp.add_attack(zero_column, name="drop0", attack_kwargs={"column": 0})
            comp.add_attack(Cycle(), name="cycle", num_attempts=3)
        comp.evaluate(X1, perturbations_per_eval=2, target=T1)
        batch = comp.evaluate(X2, target=T2)
        results.append((batch, comp.summary()))
    (ours_batch, ours_summary), (theirs_batch, theirs_summary) = results
    torch.testing.assert_close(ours_batch, theirs_batch)
    torch.testing.assert_close(ours_summary, theirs_summary)
