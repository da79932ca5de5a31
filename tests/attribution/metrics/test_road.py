"""ROAD and its noisy linear imputation: exactness on linear images, RNG hygiene, MoRF vs LeRF, batch
invariance, errors, parity with Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attribution.metrics import noisy_linear_imputation, road

f64 = torch.float64


def _ramp(height: int = 7, width: int = 6) -> Tensor:
    rows = torch.arange(height, dtype=f64)[:, None]
    cols = torch.arange(width, dtype=f64)[None]
    return torch.stack([0.5 + 2.0 * rows - 0.3 * cols, -1.0 + 0.1 * rows + cols])[None]  # (1, 2, H, W)


def _pixel_model(weights: Tensor) -> nn.Module:
    """A linear model on (N, 1, H, W) images with one output: its exact attributions are ``w * x``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weights.numel(), 1, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(weights.reshape(1, -1))
    return model


def test_imputation_is_exact_on_linear_images_away_from_the_border() -> None:
    ramp = _ramp()
    removed = torch.zeros(1, 7, 6, dtype=torch.bool)
    removed[0, 1:6, 1:5] = True  # a 5x4 block, every pixel interior
    removed[0, 3, 0] = False
    filled = noisy_linear_imputation(ramp, removed)
    torch.testing.assert_close(filled, ramp, rtol=0, atol=1e-10)
    single = torch.zeros(1, 7, 6, dtype=torch.bool)
    single[0, 4, 2] = True
    torch.testing.assert_close(noisy_linear_imputation(ramp, single), ramp, rtol=0, atol=1e-12)


def test_imputation_single_pixel_is_the_weighted_average() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 1, 5, 5, dtype=f64)
    removed = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    removed[..., 2, 2] = True
    direct = x[0, 0, 1, 2] + x[0, 0, 3, 2] + x[0, 0, 2, 1] + x[0, 0, 2, 3]
    diagonal = x[0, 0, 1, 1] + x[0, 0, 1, 3] + x[0, 0, 3, 1] + x[0, 0, 3, 3]
    expected = direct / 6 + diagonal / 12
    assert noisy_linear_imputation(x, removed)[0, 0, 2, 2].item() == pytest.approx(expected.item(), abs=1e-14)
    # in a corner only 3 neighbours: weights 1/6, 1/6, 1/12 renormalised
    corner = torch.zeros(1, 5, 5, dtype=torch.bool)
    corner[0, 0, 0] = True
    expected = (x[0, 0, 0, 1] / 6 + x[0, 0, 1, 0] / 6 + x[0, 0, 1, 1] / 12) / (5 / 12)
    assert noisy_linear_imputation(x, corner)[0, 0, 0, 0].item() == pytest.approx(expected.item(), abs=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_constant_images_are_recovered_and_kept_pixels_unchanged(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.full((3, 2, 9, 8), 0.25, dtype=dtype) * torch.tensor([1.0, 2.0, -4.0], dtype=dtype)[:, None, None, None]
    removed = torch.rand(3, 9, 8) < 0.8
    removed[:, 0, 0] = False
    filled = noisy_linear_imputation(x, removed)
    torch.testing.assert_close(filled, x)
    noisy = noisy_linear_imputation(x, removed, noise=0.1, seed=3)
    kept = ~removed[:, None].expand_as(x)
    assert torch.equal(noisy[kept], x[kept])
    assert (noisy[~kept] != x[~kept]).all()
    assert torch.equal(noisy, noisy_linear_imputation(x, removed, noise=0.1, seed=3))  # the seed decides
    assert not torch.equal(noisy, noisy_linear_imputation(x, removed, noise=0.1, seed=4))


def test_float32_solve_is_close_to_float64_on_a_large_hole() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 48, 48, dtype=f64, generator=generator)
    removed = torch.ones(1, 48, 48, dtype=torch.bool)
    removed[:, ::16, ::16] = False  # 9 kept pixels: one hole of 99.6 %
    exact = noisy_linear_imputation(x, removed)
    torch.testing.assert_close(noisy_linear_imputation(x.float(), removed).double(), exact, rtol=0, atol=1e-4)


def test_global_rng_untouched() -> None:
    model = _pixel_model(torch.ones(16, dtype=f64))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    x = torch.rand(2, 1, 4, 4, dtype=f64, generator=torch.Generator().manual_seed(0))
    road(model, x, x, noise=0.5, seed=7)
    noisy_linear_imputation(x, x[:, 0] > 0.5, noise=0.5)
    assert torch.equal(torch.get_rng_state(), state)


def test_morf_drops_faster_than_lerf_on_a_linear_model() -> None:
    generator = torch.Generator().manual_seed(0)
    weights = torch.rand(1, 1, 12, 12, dtype=f64, generator=generator) * 2
    x = torch.rand(4, 1, 12, 12, dtype=f64, generator=generator)
    model = _pixel_model(weights)
    exact = weights * x
    percentages = (0, 10, 30, 50, 70, 90)
    morf = road(model, x, exact, percentages=percentages, order="morf", noise=0.0)
    lerf = road(model, x, exact, percentages=percentages, order="lerf", noise=0.0)
    torch.testing.assert_close(morf[:, 0], model(x)[:, 0])  # 0 %: the model's own output
    torch.testing.assert_close(lerf[:, 0], model(x)[:, 0])
    assert (morf[:, 1:] < lerf[:, 1:]).all()
    assert (morf[:, 1:] < morf[:, :1]).all()  # removing the most relevant pixels lowers the score
    # random attributions fall in between on average
    noise_map = torch.rand(x.shape, dtype=f64, generator=generator)
    random = road(model, x, noise_map, percentages=percentages, noise=0.0)
    assert (morf[:, 1:].mean(0) < random[:, 1:].mean(0)).all()


def test_one_example_at_a_time_equals_the_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 5))
    x, attributions = torch.rand(5, 3, 8, 8), torch.randn(5, 3, 8, 8)
    target = torch.tensor([0, 4, 2, 2, 1])
    for score in ("output", "accuracy"):
        batch = road(model, x, attributions, target, percentages=(5, 40, 95), noise=0.0, score=score)
        alone = torch.cat(
            [
                road(
                    model,
                    x[i : i + 1],
                    attributions[i : i + 1],
                    target[i : i + 1],
                    percentages=(5, 40, 95),
                    noise=0.0,
                    score=score,
                )
                for i in range(5)
            ]
        )
        torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)
        assert batch.shape == (5, 3)


def test_accuracy_and_target_forms() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 3))
    x, attributions = torch.rand(4, 2, 4, 4), torch.randn(4, 4, 4)
    predicted = model(x).argmax(1)
    kept = road(model, x, attributions, predicted, percentages=(0, 50), score="accuracy", noise=0.0)
    assert torch.equal(kept[:, 0], torch.ones(4))  # nothing removed: the prediction is kept
    assert set(kept.unique().tolist()) <= {0.0, 1.0}
    as_list = road(model, x, attributions, predicted.tolist(), percentages=(0, 50), score="accuracy", noise=0.0)
    assert torch.equal(as_list, kept)
    outputs = road(model, x, attributions, 1, percentages=(0, 50), noise=0.0)
    torch.testing.assert_close(outputs[:, 0], model(x)[:, 1])
    channel_one = road(model, x, attributions[:, None], 1, percentages=(0, 50), noise=0.0)
    assert torch.equal(channel_one, outputs)


def test_model_and_inputs_unchanged() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 2)).eval()
    x = torch.rand(2, 1, 4, 4)
    before = x.clone()
    road(model, x, x, 0, noise=0.2)
    assert torch.equal(x, before) and not model.training


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inputs": torch.rand(2, 16)}, TypeError, "inputs: expected one floating-point tensor of images"),
        ({"inputs": (torch.rand(2, 1, 4, 4),)}, TypeError, "inputs: expected one"),
        ({"attributions": torch.rand(2, 1, 4, 5)}, ValueError, "attributions: expected one of the shapes"),
        ({"attributions": [0.0]}, TypeError, "attributions: expected a real-valued tensor"),
        ({"percentages": (10, 100)}, ValueError, r"percentages: expected .* \[0, 100\)"),
        ({"percentages": ()}, ValueError, "percentages"),
        ({"percentages": 10}, ValueError, "percentages"),
        ({"order": "most"}, ValueError, "order: unknown value 'most'.*morf"),
        ({"score": "acc"}, ValueError, "score: unknown value 'acc'.*accuracy"),
        ({"noise": -1.0}, ValueError, "noise: expected"),
        ({"seed": 1.5}, ValueError, "seed: expected an int"),
        ({"score": "accuracy", "target": None}, ValueError, "target: score='accuracy' needs class indices"),
        (
            {"score": "accuracy", "target": torch.tensor([0, 1, 1])},
            ValueError,
            "target: expected one entry per example",
        ),
        ({"score": "accuracy", "target": lambda out: out[:, 0]}, ValueError, "target: score='accuracy'"),
        ({"forward_func": "model"}, TypeError, "forward_func"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    arguments = {
        "forward_func": model,
        "inputs": torch.rand(2, 1, 4, 4),
        "attributions": torch.rand(2, 4, 4),
        "target": 0,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        road(**arguments)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.zeros(1, 1, 3, 3, dtype=torch.long), torch.zeros(1, 3, 3)), TypeError, "images: expected a floating"),
        ((torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 4)), ValueError, "removed: expected shape"),
        ((torch.zeros(1, 1, 3, 3), torch.ones(1, 3, 3)), ValueError, "removed: every pixel"),
        ((torch.zeros(1, 1, 3, 3), "mask"), TypeError, "removed: expected"),
        ((torch.zeros(1, 3, 3), torch.zeros(1, 3, 3)), ValueError, r"images: expected non-empty images \(N, C, H, W\)"),
    ],
)
def test_imputation_bad_arguments(args, error, match) -> None:
    with pytest.raises(error, match=match):
        noisy_linear_imputation(*args)


def test_imputation_agrees_with_quantus() -> None:
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    rng = np.random.default_rng(0)
    x = rng.random((3, 9, 7))
    for fraction in (0.1, 0.5, 0.95):
        indices = rng.permutation(63)[: int(63 * fraction)]
        expected = perturb.noisy_linear_imputation(arr=x.copy(), indices=indices, noise=0.0)
        removed = torch.zeros(63, dtype=torch.bool)
        removed[torch.from_numpy(indices)] = True
        ours = noisy_linear_imputation(torch.from_numpy(x)[None], removed.view(1, 9, 7))[0]
        np.testing.assert_allclose(ours.numpy(), expected, atol=1e-10)


def test_road_agrees_with_quantus() -> None:
    """Quantus's ROAD (MoRF, accuracy against ``y_batch``, averaged over the batch) with ``noise=0``.  Its
    ``ROAD`` ranks the attributions flattened with the channels, so it is compared on one-channel images."""
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 100, 3)).eval()
    x = torch.rand(16, 1, 10, 10)
    attributions = torch.randn(16, 1, 10, 10)
    labels = model(x).argmax(1)
    percentages = [5, 25, 50, 75, 95]
    metric = quantus.ROAD(
        noise=0.0,
        percentages=percentages,
        normalise=False,
        abs=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    expected = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=labels.numpy(),
        a_batch=attributions.numpy(),
        device="cpu",
        softmax=False,
    )
    ours = road(model, x, attributions, labels, percentages=percentages, score="accuracy", noise=0.0).mean(0)
    np.testing.assert_allclose(ours.numpy(), [expected[p] for p in percentages], atol=1e-12)
