"""Infidelity and max-sensitivity: closed forms, chunking invariance, parity with the reference, errors."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import Tensor, nn

from attribution import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from attribution.metrics import (
    default_infidelity_perturb_func,
    default_perturb_func,
    infidelity,
    infidelity_perturb_func_decorator,
    sensitivity_max,
)
from tests.models import Linear, seeded

f64 = torch.float64


@pytest.fixture
def captum():
    pytest.importorskip("captum.attr")
    pytest.importorskip("captum.metrics")
    return pytest.importorskip("captum")


def _line(weights: list[float], bias: float = 0.5) -> nn.Module:
    model = nn.Linear(len(weights), 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights]))
        model.bias.fill_(bias)
    return model


class TablePerturb:
    """Perturbations ``table[s, i]`` for sample ``s`` of example ``i``, one copy of the batch at a time.

    We call ``perturb_func`` once on all copies; the reference, with
    ``max_examples_per_batch=N``, once per copy.  Both stack the copies
    example-major, so both see the same perturbations.
    """

    def __init__(self, *table: Tensor, infidelity: bool = True) -> None:
        self.table, self.infidelity, self.used = table, infidelity, 0

    def __call__(self, inputs):
        values = (inputs,) if isinstance(inputs, Tensor) else inputs
        n = self.table[0].shape[1]
        copies = values[0].shape[0] // n
        rows = [t[self.used : self.used + copies].transpose(0, 1) for t in self.table]  # example-major
        noise = tuple(r.reshape(copies * n, *r.shape[2:]) for r in rows)
        self.used += copies
        if not self.infidelity:
            moved = tuple(x + d for x, d in zip(values, noise))
            return moved[0] if isinstance(inputs, Tensor) else moved
        moved = tuple(x - d for x, d in zip(values, noise))
        return (noise[0], moved[0]) if isinstance(inputs, Tensor) else (noise, moved)


# --------------------------------------------------------------------------- closed forms


def test_infidelity_of_exact_attributions_is_zero(linear):
    model = linear.double()
    x = torch.randn(4, 6, dtype=f64)
    grads = Saliency(model).attribute(x, target=1, abs=False)
    assert infidelity(model, default_infidelity_perturb_func, x, grads, target=1).abs().max() < 1e-24
    # global attributions with I = (x - x') / x: InputXGradient is complete for a linear model
    perturb = infidelity_perturb_func_decorator(True)(lambda inp: inp - 0.1 * torch.randn_like(inp))
    values = infidelity(model, perturb, x, InputXGradient(model).attribute(x, target=1), target=1)
    assert values.shape == (4,) and values.abs().max() < 1e-24


def test_infidelity_passes_stacked_per_example_baselines(linear):
    model = linear.double()
    x, baselines = torch.randn(3, 6, dtype=f64), torch.randn(3, 6, dtype=f64)
    seen = []

    @infidelity_perturb_func_decorator(multiply_by_inputs=True)
    def to_baselines(inputs, baselines):  # x' = b, so I = 1 and I . attr = sum(IG) = f(x) - f(b)
        seen.append(baselines.shape)
        return baselines

    attrs = IntegratedGradients(model).attribute(x, baselines, target=2)
    assert infidelity(model, to_baselines, x, attrs, baselines, target=2, n_perturb_samples=4).abs().max() < 1e-24
    assert seen == [(12, 6)]


def test_infidelity_by_hand():
    model = _line([1.0, 2.0])  # f(x) - f(x - I) = 3c for I = c * ones
    x = torch.tensor([[0.3, -0.7]], dtype=f64)

    def steps(inputs):  # sample s: I = 0.1 (s + 1)
        noise = 0.1 * torch.arange(1, 4, dtype=f64)[:, None].expand(3, 2)
        return noise, inputs - noise

    attrs = torch.ones(1, 2, dtype=f64)  # I . attr = 2c, error (c)^2
    value = infidelity(model, steps, x, attrs, n_perturb_samples=3)
    torch.testing.assert_close(value, torch.tensor([0.01 * 14 / 3], dtype=f64))
    assert infidelity(model, steps, x, attrs, n_perturb_samples=3, normalize=True).abs().max() < 1e-24


def test_normalize_removes_scale(linear):
    model = linear.double()
    x = torch.randn(5, 6, dtype=f64)
    scaled = 3 * Saliency(model).attribute(x, target=0, abs=False)
    assert infidelity(model, default_infidelity_perturb_func, x, scaled, target=0).min() > 0
    normalized = infidelity(model, default_infidelity_perturb_func, x, scaled, target=0, normalize=True)
    assert normalized.abs().max() < 1e-24


def test_normalized_infidelity_is_never_negative():
    # The reference expands beta^2 E[a^2] - 2 beta E[ab] + E[b^2]; in float32 this cancels to values
    # around -1e-5 here (a mean of squares).  We square beta * a - b directly.
    model = nn.Linear(100, 3)
    x = torch.randn(16, 100)
    attrs = 3 * model.weight[0].detach().expand(16, 100)

    def loud(inputs):
        noise = 10 * torch.randn_like(inputs)
        return noise, inputs - noise

    values = infidelity(model, loud, x, attrs, target=0, normalize=True, n_perturb_samples=50)
    assert values.min() >= 0 and values.max() < 1e-6


def test_sensitivity_of_saliency_on_a_linear_model_is_zero(linear):
    x = torch.randn(4, 6)
    assert torch.equal(sensitivity_max(Saliency(linear).attribute, x, target=2), torch.zeros(4))


@pytest.mark.parametrize("norm_ord", ["fro", 1, math.inf])
def test_sensitivity_of_input_x_gradient_by_hand(linear, norm_ord):
    model = linear.double()
    x = torch.randn(4, 6, dtype=f64)
    x[3] = 0  # an explanation of norm 0 is divided by 1
    target = [0, 1, 2, 0]

    def shift(inputs, radius):  # e(x + r) - e(x) = w r
        return inputs + radius

    value = sensitivity_max(
        InputXGradient(model).attribute, x, shift, perturb_radius=0.1, norm_ord=norm_ord, target=target
    )
    w = model.fc.weight.detach()[target]
    order = 2 if norm_ord == "fro" else norm_ord
    scale = torch.linalg.vector_norm(w * x, ord=order, dim=1)
    expected = torch.linalg.vector_norm(0.1 * w, ord=order, dim=1) / torch.where(scale == 0, 1.0, scale)
    torch.testing.assert_close(value, expected)


# --------------------------------------------------------------------------- invariants


def test_infidelity_does_not_depend_on_chunking(cnn):
    x = torch.randn(3, 3, 8, 8)
    attrs = Saliency(cnn).attribute(x, target=[0, 2, 3], abs=False)
    runs = []
    for chunk in (None, 1, 3, 7, 100):
        torch.manual_seed(0)
        kwargs = dict(target=[0, 2, 3], n_perturb_samples=5, max_examples_per_batch=chunk, normalize=True)
        runs.append(infidelity(cnn, default_infidelity_perturb_func, x, attrs, **kwargs))
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0], rtol=1e-4, atol=1e-9)


def test_several_explanations_are_scored_on_the_same_perturbations_with_one_set_of_forwards(cnn):
    x, target = torch.randn(3, 3, 8, 8), [0, 2, 3]
    named = {
        "saliency": Saliency(cnn).attribute(x, target=target, abs=False),
        "ig": IntegratedGradients(cnn).attribute(x, target=target, n_steps=8),
    }
    calls = []
    counted = lambda inputs: calls.append(inputs.shape[0]) or cnn(inputs)  # noqa: E731
    torch.manual_seed(0)
    together = infidelity(counted, default_infidelity_perturb_func, x, named, target=target, n_perturb_samples=4)
    assert calls == [3 * 5]  # the batch and its 4 perturbed copies, once for both explanations
    assert set(together) == {"saliency", "ig"}
    for name, attributions in named.items():
        torch.manual_seed(0)  # the same perturbations, scored one explanation at a time
        alone = infidelity(cnn, default_infidelity_perturb_func, x, attributions, target=target, n_perturb_samples=4)
        torch.testing.assert_close(together[name], alone)
    with pytest.raises(ValueError, match=r"attributions\['ig'\]"):
        infidelity(cnn, default_infidelity_perturb_func, x, {"ig": named["ig"][:2]}, target=target)


def test_sensitivity_does_not_depend_on_chunking(two_input):
    image, table = torch.randn(3, 1, 6, 6), torch.randn(3, 5)
    kwargs = dict(
        target=torch.tensor([0, 2, 1]),
        baselines=(torch.randn(3, 1, 6, 6), 0.5),
        additional_forward_args=torch.rand(3, 1) + 0.5,
        n_steps=8,
    )
    runs = []
    for chunk in (None, 1, 6, 100):
        torch.manual_seed(0)
        explain = IntegratedGradients(two_input).attribute
        runs.append(
            sensitivity_max(explain, (image, table), n_perturb_samples=4, max_examples_per_batch=chunk, **kwargs)
        )
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0], rtol=1e-4, atol=1e-7)


def test_results_are_plain_tensors_and_models_untouched(mlp):
    x = torch.randn(2, 6, requires_grad=True)
    attrs = Saliency(mlp).attribute(x, target=0)
    value = infidelity(mlp, default_infidelity_perturb_func, x, attrs.requires_grad_(), target=0)
    sens = sensitivity_max(Saliency(mlp).attribute, x, target=0)
    for v in (value, sens):
        assert not v.requires_grad and not v.is_inference()
        (v * torch.ones(2, requires_grad=True)).sum().backward()  # usable in autograd
    assert x.grad is None and all(p.grad is None for p in mlp.parameters())


def test_default_perturb_func_keeps_dtype_and_radius(captum):
    x = torch.zeros(64, 6, dtype=torch.bfloat16)
    moved = default_perturb_func(x, 0.1)
    assert moved.dtype == torch.bfloat16 and 0 < moved.abs().max() <= 0.1
    # the reference draws float32 noise, so a bfloat16 model gets float32 inputs and fails
    model = seeded(Linear).to(torch.bfloat16)
    assert sensitivity_max(Saliency(model).attribute, x[:4], target=0).dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="dtype"):
        captum.metrics.sensitivity_max(captum.attr.Saliency(model).attribute, x[:4], target=0)


# --------------------------------------------------------------------------- parity with the reference


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("target", [1, [0, 3, 2, 1]])
def test_infidelity_matches_reference(captum, cnn, normalize, target):
    x = torch.randn(4, 3, 8, 8)
    attrs = Saliency(cnn).attribute(x, target=target, abs=False)
    table = 0.05 * torch.randn(5, 4, 3, 8, 8)
    kwargs = dict(target=target, n_perturb_samples=5, normalize=normalize)
    ours = infidelity(cnn, TablePerturb(table), x, attrs, **kwargs)
    theirs = captum.metrics.infidelity(cnn, TablePerturb(table), x, attrs, max_examples_per_batch=4, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_reference_two_inputs(captum, two_input, normalize):
    # global attributions (IG from per-example baselines) with decorated perturbations I = (x - x') / (x - b)
    inputs, scale = (torch.randn(3, 1, 6, 6), torch.randn(3, 5)), torch.rand(3, 1) + 0.5
    baselines = (torch.randn(3, 1, 6, 6), torch.randn(3, 5))
    kwargs = dict(additional_forward_args=scale, target=[2, 0, 1])
    attrs = IntegratedGradients(two_input).attribute(inputs, baselines, n_steps=8, **kwargs)
    tables = (0.3 * torch.rand(4, 3, 1, 6, 6), 0.3 * torch.rand(4, 3, 5))

    def perturb():
        moved = TablePerturb(*tables, infidelity=False)
        return infidelity_perturb_func_decorator(True)(lambda inputs, baselines: moved(inputs))

    kwargs |= dict(baselines=baselines, n_perturb_samples=4, normalize=normalize)
    ours = infidelity(two_input, perturb(), inputs, attrs, **kwargs)
    theirs = captum.metrics.infidelity(two_input, perturb(), inputs, attrs, max_examples_per_batch=3, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    ("method", "norm_ord"), [("saliency", "fro"), ("saliency", 1), ("integrated_gradients", "fro")]
)
def test_sensitivity_matches_reference(captum, cnn, method, norm_ord):
    x = torch.randn(4, 3, 8, 8)
    ours_cls, theirs_cls = {
        "saliency": (Saliency, captum.attr.Saliency),
        "integrated_gradients": (IntegratedGradients, captum.attr.IntegratedGradients),
    }[method]
    kwargs = {"target": [0, 3, 2, 1], "n_perturb_samples": 3, "norm_ord": norm_ord}
    kwargs |= {"n_steps": 8} if method != "saliency" else {}
    table = 0.02 * torch.rand(3, 4, 3, 8, 8)
    ours = sensitivity_max(ours_cls(cnn).attribute, x, TablePerturb(table, infidelity=False), **kwargs)
    theirs = captum.metrics.sensitivity_max(
        theirs_cls(cnn).attribute, x, TablePerturb(table, infidelity=False), max_examples_per_batch=4, **kwargs
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_sensitivity_stacks_every_per_example_baseline(captum, two_input):
    # the reference stacks baselines only if the first one is shaped like the first input, and fails here
    inputs, other = (torch.randn(3, 1, 6, 6), torch.randn(3, 5)), torch.randn(3, 5)
    tables = (0.02 * torch.rand(2, 3, 1, 6, 6), 0.02 * torch.rand(2, 3, 5))
    kwargs = dict(target=[0, 2, 1], n_steps=8, n_perturb_samples=2)
    ours_ig, their_ig = IntegratedGradients(two_input).attribute, captum.attr.IntegratedGradients(two_input).attribute
    ours = sensitivity_max(ours_ig, inputs, TablePerturb(*tables, infidelity=False), baselines=(0.5, other), **kwargs)
    with pytest.raises(AssertionError):
        captum.metrics.sensitivity_max(their_ig, inputs, baselines=(0.5, other), **kwargs)
    kwargs |= dict(baselines=(torch.full_like(inputs[0], 0.5), other), max_examples_per_batch=3)  # same, stackable
    theirs = captum.metrics.sensitivity_max(their_ig, inputs, TablePerturb(*tables, infidelity=False), **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_seeded_infidelity_draws_the_references_perturbations(captum, cnn, normalize):
    # The reference stacks the copies example-major (row i * S + s) and, by default, draws them in one call;
    # so do we, whatever our chunking.
    x, target = torch.randn(4, 3, 8, 8), [0, 3, 2, 1]
    attrs = Saliency(cnn).attribute(x, target=target, abs=False)
    perturb = functools.partial(default_infidelity_perturb_func, stdev=0.5)  # far enough to cross ReLU kinks
    kwargs = dict(target=target, n_perturb_samples=6, normalize=normalize)
    torch.manual_seed(2)
    theirs = captum.metrics.infidelity(cnn, perturb, x, attrs, **kwargs)
    assert theirs.min() > 1e-6  # far from 0: the draws decide the value
    for chunk in (None, 4, 12):
        torch.manual_seed(2)
        ours = infidelity(cnn, perturb, x, attrs, max_examples_per_batch=chunk, **kwargs)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-9)


def test_seeded_infidelity_stacks_per_example_baselines_like_the_reference(captum, two_input):
    inputs, scale = (torch.randn(3, 1, 6, 6), torch.randn(3, 5)), torch.rand(3, 1) + 0.5
    baselines = (torch.randn(3, 1, 6, 6), torch.randn(3, 5))
    kwargs = dict(additional_forward_args=scale, target=[2, 0, 1])
    attrs = IntegratedGradients(two_input).attribute(inputs, baselines, n_steps=8, **kwargs)

    @infidelity_perturb_func_decorator(multiply_by_inputs=True)
    def toward_baselines(inputs, baselines):  # a random share of the way to each example's own baseline
        return tuple(x + torch.rand_like(x) * (b - x) for x, b in zip(inputs, baselines))

    kwargs |= dict(baselines=baselines, n_perturb_samples=5)
    torch.manual_seed(3)
    theirs = captum.metrics.infidelity(two_input, toward_baselines, inputs, attrs, **kwargs)
    torch.manual_seed(3)
    ours = infidelity(two_input, toward_baselines, inputs, attrs, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("explainer", ["saliency", "smoothgrad"])
def test_seeded_sensitivity_draws_the_references_perturbations(captum, cnn, explainer):
    # The reference explains x first, then draws the copies example-major in one call and explains them in one
    # call with the targets repeated per example: a random explanation (SmoothGrad) gets the same draws too.
    x = torch.randn(4, 3, 8, 8)
    ours, theirs = {
        "saliency": (Saliency(cnn).attribute, captum.attr.Saliency(cnn).attribute),
        "smoothgrad": (
            NoiseTunnel(Saliency(cnn)).attribute,
            captum.attr.NoiseTunnel(captum.attr.Saliency(cnn)).attribute,
        ),
    }[explainer]
    kwargs = dict(target=[0, 3, 2, 1], n_perturb_samples=5, perturb_radius=0.1)
    kwargs |= {"nt_samples": 3, "stdevs": 0.05} if explainer == "smoothgrad" else {}
    torch.manual_seed(4)
    expected = captum.metrics.sensitivity_max(theirs, x, **kwargs)
    chunks = (None, 8) if explainer == "saliency" else (None,)  # a random explanation's draws follow its calls
    for chunk in chunks:
        torch.manual_seed(4)
        got = sensitivity_max(ours, x, max_examples_per_batch=chunk, **kwargs)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_sensitivity_reuses_explanations_it_is_given(cnn):
    x, target = torch.randn(3, 3, 8, 8), [0, 2, 1]
    calls = []

    def explain(inputs, **kwargs):
        calls.append(inputs.shape[0])
        return Saliency(cnn).attribute(inputs, **kwargs)

    torch.manual_seed(0)
    computed = sensitivity_max(explain, x, n_perturb_samples=4, target=target)
    assert calls == [3, 12]  # e(x), then every perturbed copy in one call
    calls.clear()
    torch.manual_seed(0)
    given = Saliency(cnn).attribute(x, target=target)
    reused = sensitivity_max(explain, x, n_perturb_samples=4, explanations=given, target=target)
    assert calls == [12]
    torch.testing.assert_close(reused, computed)
    with pytest.raises(ValueError, match="explanations: expected explanations with 3 rows"):
        sensitivity_max(explain, x, explanations=given[:2], target=target)
    with pytest.raises(TypeError, match="explanations: expected a tensor"):
        sensitivity_max(explain, x, explanations=[given.numpy()], target=target)


# --------------------------------------------------------------------------- errors


def test_infidelity_rejects_bad_arguments(linear):
    x = torch.randn(2, 6)
    attrs = torch.randn(2, 6)
    perturb = default_infidelity_perturb_func
    with pytest.raises(ValueError, match="n_perturb_samples"):
        infidelity(linear, perturb, x, attrs, target=0, n_perturb_samples=0)
    with pytest.raises(ValueError, match="max_examples_per_batch"):
        infidelity(linear, perturb, x, attrs, target=0, max_examples_per_batch=0)
    with pytest.raises(ValueError, match=r"attributions: expected \[0\] of shape \(2, 6\)"):
        infidelity(linear, perturb, x, attrs[:, :5], target=0)
    with pytest.raises(ValueError, match="attributions: expected 1 tensor"):
        infidelity(linear, perturb, x, (attrs, attrs), target=0)
    with pytest.raises(TypeError, match="infidelity_perturb_func_decorator"):
        infidelity(linear, lambda inp: inp + 1, x, attrs, target=0)
    with pytest.raises(ValueError, match=r"perturb_func \(perturbations\): expected \[0\] of shape \(20, 6\)"):
        infidelity(linear, lambda inp: (inp[:2], inp), x, attrs, target=0)
    with pytest.raises(TypeError, match="perturb_func: expected a callable"):
        infidelity(linear, None, x, attrs, target=0)


def test_sensitivity_rejects_bad_arguments(linear):
    x = torch.randn(2, 6)
    explain = Saliency(linear).attribute
    for norm_ord in ("nuc", "l2", True):
        with pytest.raises(ValueError, match="norm_ord"):
            sensitivity_max(explain, x, norm_ord=norm_ord, target=0)
    with pytest.raises(ValueError, match="n_perturb_samples"):
        sensitivity_max(explain, x, n_perturb_samples=0, target=0)
    with pytest.raises(ValueError, match="max_examples_per_batch"):
        sensitivity_max(explain, x, max_examples_per_batch=-1, target=0)
    with pytest.raises(ValueError, match="perturb_func"):
        sensitivity_max(explain, x, lambda inp: inp[:1], target=0)
    with pytest.raises(ValueError, match="explanation_func: expected explanations with 20 rows"):
        sensitivity_max(lambda inp: inp[:2], x)
    with pytest.raises(TypeError, match="explanation_func"):
        sensitivity_max("saliency", x)


@pytest.mark.parametrize("radius", [-0.1, 0, float("nan"), float("inf"), "0.1", None, True, torch.tensor(-1.0)])
def test_sensitivity_rejects_a_bad_perturb_radius_before_any_work(radius):
    calls = []
    with pytest.raises(ValueError, match=r"perturb_radius: expected a finite number > 0 .*, got "):
        sensitivity_max(lambda inputs: calls.append(1) or inputs, torch.randn(2, 6), perturb_radius=radius)
    assert calls == []
    # a 0-dim tensor holding a good radius is one: e(x) = x moves by at most the radius, relative to |x| = 1
    moved = sensitivity_max(lambda inputs: inputs, torch.ones(2, 6), perturb_radius=torch.tensor(0.1))
    assert 0 < moved.min() and moved.max() <= 0.1
