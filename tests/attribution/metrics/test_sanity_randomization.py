"""``randomization_similarity``: the randomisation check as one number per example, the first steps of
``model_randomization_check``, on a copy that leaves the model alone."""

import pytest
import torch
from torch import Tensor, nn

from attribution import IntegratedGradients, Saliency
from attribution.metrics import model_randomization_check, randomization_similarity
from tests.models import SmallCNN, seeded

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
TARGETS = torch.tensor([0, 1, 2, 3])


def _saliency(model: nn.Module, x: Tensor) -> Tensor:
    return Saliency(model).attribute(x, target=TARGETS)


def _edges(model: nn.Module, x: Tensor) -> Tensor:
    """An "explanation" that never looks at the model: horizontal differences of the image."""
    return torch.nn.functional.pad(x.diff(dim=-1).abs(), (0, 1))


@pytest.mark.parametrize("measure", ["spearman", "top_k", "cosine", "ssim"])
def test_a_map_that_ignores_the_model_scores_one_and_a_gradient_less(measure):
    model = seeded(SmallCNN)
    assert torch.equal(randomization_similarity(model, _edges, X, measure=measure), torch.ones(4))
    similar = randomization_similarity(model, _saliency, X, measure=measure)
    assert similar.shape == (4,) and torch.isfinite(similar).all()
    assert (similar < 1).all() and (similar >= -1).all()
    assert similar.unique().numel() > 1  # per example, not one number broadcast


def test_it_is_the_cascade_cut_after_top_layers_and_reproducible():
    model = seeded(SmallCNN)
    steps = model_randomization_check(model, _saliency, X, seed=3)
    for k in (1, 2, 3):
        torch.testing.assert_close(randomization_similarity(model, _saliency, X, top_layers=k, seed=3), steps[k - 1][1])
    once = randomization_similarity(model, _saliency, X, seed=3)
    assert torch.equal(once, randomization_similarity(model, _saliency, X, seed=3))
    assert not torch.equal(once, randomization_similarity(model, _saliency, X, seed=4))


def test_given_explanations_are_used_as_the_intact_models():
    model = seeded(SmallCNN)
    intact = _saliency(model, X)
    torch.testing.assert_close(
        randomization_similarity(model, _saliency, X, explanations=intact),
        randomization_similarity(model, _saliency, X),
    )
    calls = []
    randomization_similarity(model, lambda m, x: calls.append(1) or _saliency(m, x), X, explanations=intact)
    assert len(calls) == 1  # only the randomized copy is explained


def test_the_model_its_modes_gradients_requires_grad_and_the_rng_are_left_alone():
    model = seeded(SmallCNN)
    model.conv1.train()
    model.conv2.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()

    def noisy(m: nn.Module, x: Tensor) -> Tensor:  # draws from the global generator, as SmoothGrad would
        return IntegratedGradients(m).attribute(x + 0.01 * torch.randn_like(x), target=TARGETS, n_steps=4)

    randomization_similarity(model, noisy, X, top_layers=2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"model": lambda x: x}, TypeError, "model: expected a torch.nn.Module"),
        ({"explain": "saliency"}, TypeError, "explain: expected a callable"),
        ({"explain": lambda m, x: (x,)}, TypeError, "explain: expected it to return a tensor"),
        ({"measure": "pearson"}, ValueError, "measure"),
        ({"seed": -1}, ValueError, "seed: expected an int >= 0"),
        ({"top_layers": 0}, ValueError, "top_layers: expected an int >= 1"),
        ({"top_layers": True}, ValueError, "top_layers: expected an int >= 1"),
        ({"top_layers": 4}, ValueError, r"top_layers: expected at most 3, the model's layers with parameters"),
        ({"explanations": [1.0]}, TypeError, "explanations: expected a tensor"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, error, match):
    arguments = {"model": seeded(SmallCNN), "explain": _saliency, "inputs": X, **kwargs}
    with pytest.raises(error, match=match):
        randomization_similarity(arguments.pop("model"), arguments.pop("explain"), arguments.pop("inputs"), **arguments)
