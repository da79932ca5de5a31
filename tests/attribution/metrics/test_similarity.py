"""Similarity, localization and sanity-check metrics: closed forms, reference parity, batching, state, errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attribution import Saliency
from attribution.metrics import (
    SIMILARITY_MEASURES,
    cosine_similarity,
    mass_in_mask,
    model_randomization_check,
    pointing_game,
    similarity,
    spearman_correlation,
    ssim,
    top_k_intersection,
)

f64 = torch.float64


def _blob(cy: float, cx: float, size: int = 32, sigma: float = 4.0) -> Tensor:
    y, x = torch.meshgrid(torch.arange(size, dtype=f64), torch.arange(size, dtype=f64), indexing="ij")
    return torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


def _normalised(x: Tensor) -> Tensor:
    return (x - x.min()) / (x.max() - x.min())


@pytest.mark.parametrize("measure", SIMILARITY_MEASURES)
def test_identical_maps_score_one(measure):
    a = torch.randn(3, 2, 12, 12, dtype=f64)
    torch.testing.assert_close(similarity(a, a.clone(), measure), torch.ones(3, dtype=f64))


def test_negated_map():
    a = torch.randn(4, 30, dtype=f64)
    ones = torch.ones(4, dtype=f64)
    torch.testing.assert_close(spearman_correlation(a, -a, absolute=False), -ones)
    torch.testing.assert_close(spearman_correlation(a, -a), ones)
    torch.testing.assert_close(cosine_similarity(a, -a), -ones)
    torch.testing.assert_close(cosine_similarity(a.abs(), (-a).abs()), ones)


@pytest.mark.parametrize("measure", SIMILARITY_MEASURES)
def test_similarity_decreases_as_a_blob_moves_away(measure):
    reference = _blob(16, 16)[None, None]
    shifted = torch.stack([_blob(16 + s, 16 + s) for s in range(0, 6)])[:, None]
    scores = similarity(reference.expand_as(shifted), shifted, measure)
    assert scores[0] == pytest.approx(1.0)
    assert (scores[1:] < scores[:-1]).all(), scores


def test_top_k_by_hand():
    a = torch.tensor([[9.0, 8, 7, 0, 0, 0, 0, 0, 0, 1]])
    b = torch.tensor([[9.0, 0, 7, -10, 0, 8, 0, 0, 0, 0]])
    assert top_k_intersection(a, b, k=0.3).tolist() == pytest.approx([1 / 3])  # {0, 1, 2} vs {3, 0, 5}
    assert top_k_intersection(a, b, k=0.3, absolute=False).tolist() == pytest.approx([2 / 3])  # vs {0, 5, 2}
    assert top_k_intersection(a, b, k=0.01).tolist() == [0.0]  # k_count = max(1, round(0.1)) = 1: {0} vs {3}
    c = torch.tensor([[9.0, 0, 7, 0, 0, 0, 0, 0, 0, 0]])  # ties at the cut: the lower index wins
    assert top_k_intersection(a, c, k=0.3, absolute=False).tolist() == [1.0]
    assert top_k_intersection(a, c, k=1.0).tolist() == [1.0]


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    a = torch.randint(0, 4, (5, 3, 7), dtype=torch.int64).to(f64)  # many ties
    b = torch.randn(5, 3, 7, dtype=f64).round(decimals=1)
    for absolute in (False, True):
        ours = spearman_correlation(a - 1.5, b, absolute=absolute)
        x, y = ((a - 1.5).abs(), b.abs()) if absolute else (a - 1.5, b)
        theirs = [stats.spearmanr(x[i].flatten(), y[i].flatten()).statistic for i in range(5)]
        torch.testing.assert_close(ours, torch.tensor(theirs, dtype=f64))


def test_constant_and_non_finite_maps():
    a = torch.randn(2, 9)
    constant = torch.ones(2, 9)
    assert spearman_correlation(a, constant).tolist() == [0.0, 0.0]
    assert cosine_similarity(a, torch.zeros(2, 9)).tolist() == [0.0, 0.0]
    bad = a.clone()
    bad[1, 3] = float("nan")
    for measure in ("spearman", "top_k", "cosine"):
        scores = similarity(a, bad, measure)
        assert scores[0] == pytest.approx(1.0) and scores[1].isnan()


def _degenerate(kind: str) -> Tensor:
    """Maps (3, 2, 12, 12) of one kind: the cases where a naive score divides 0 by 0."""
    torch.manual_seed(0)
    maps = torch.randn(3, 2, 12, 12)
    if kind == "zeros":
        return torch.zeros_like(maps)
    if kind == "constant":
        return torch.full_like(maps, 0.7)
    if kind == "negative_constant":
        return torch.full_like(maps, -2.0)
    if kind == "sparse":  # one non-zero feature per example, the rest tied at 0
        return torch.zeros_like(maps).index_put_(
            (torch.arange(3), torch.tensor([0, 1, 1]), torch.tensor([3, 0, 11]), torch.tensor([5, 0, 11])),
            torch.tensor([1.0, -3.0, 0.5]),
        )
    if kind == "float64":
        return maps.double()
    return maps


@pytest.mark.parametrize("kind", ["random", "zeros", "constant", "negative_constant", "sparse", "float64"])
@pytest.mark.parametrize("measure", SIMILARITY_MEASURES)
def test_identical_maps_score_exactly_one_also_when_degenerate(measure, kind):
    a = _degenerate(kind)
    assert torch.equal(similarity(a, a.clone(), measure), torch.ones(3, dtype=a.dtype))
    if measure != "cosine":  # with absolute=True (the default) only magnitudes count; ssim sums |channels|
        assert torch.equal(similarity(a, -a, measure), torch.ones(3, dtype=a.dtype))


def test_constant_against_varied_maps_scores_as_documented():
    varied = torch.arange(1.0, 11.0).flip(0)[None].repeat(2, 1)  # the largest values come first
    varied[1] = varied[1].flip(0)  # ... and last
    for constant in (torch.zeros(2, 10), torch.full((2, 10), 3.0)):
        assert spearman_correlation(constant, varied).tolist() == [0.0, 0.0]
        assert spearman_correlation(varied, constant, absolute=False).tolist() == [0.0, 0.0]
        # a constant map's top-k are its first k features (ties go to the lower index)
        assert top_k_intersection(constant, varied, k=0.2).tolist() == [1.0, 0.0]
    assert cosine_similarity(torch.zeros(2, 10), varied).tolist() == [0.0, 0.0]
    torch.testing.assert_close(
        cosine_similarity(torch.full((2, 10), 3.0), varied), varied.sum(1) / (10**0.5 * varied.norm(dim=1))
    )
    image = torch.rand(2, 12, 12, dtype=f64)
    flat = torch.zeros(2, 12, 12, dtype=f64)
    expected = ssim(flat, image)  # any constant normalises to zeros
    assert (expected < 0.5).all()
    torch.testing.assert_close(ssim(torch.full_like(image, 5.0), image), expected)
    peak = torch.zeros(2, 12, 12, dtype=f64)
    peak[:, 0, 0] = 1.0  # flat at its minimum in every window but those over the corner
    assert (ssim(flat, peak) > 0.9).all()


def test_two_different_constant_maps():
    zeros, ones = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    for measure in ("spearman", "top_k", "ssim"):
        assert similarity(zeros, ones, measure).tolist() == [1.0, 1.0]
    assert spearman_correlation(-ones, ones, absolute=False).tolist() == [1.0, 1.0]  # neither orders anything
    assert cosine_similarity(zeros, ones).tolist() == [0.0, 0.0]
    torch.testing.assert_close(cosine_similarity(ones, 2 * ones), torch.ones(2))
    torch.testing.assert_close(cosine_similarity(ones, -ones), -torch.ones(2))


@pytest.mark.parametrize("measure", SIMILARITY_MEASURES)
def test_identical_non_finite_maps_still_score_nan(measure):
    a = torch.zeros(2, 8, 8)
    a[0, 1, 1] = float("nan")
    a[1, 2, 2] = float("inf")
    assert similarity(a, a.clone(), measure).isnan().all()


@pytest.mark.parametrize("sigma, window", [(None, 7), (None, 5), (1.5, 11)])
def test_ssim_matches_skimage(sigma, window):
    metrics = pytest.importorskip("skimage.metrics")
    a, b = torch.rand(3, 16, 20, dtype=f64), torch.rand(3, 16, 20, dtype=f64)
    b[2] = a[2] + 0.3 * b[2]
    kwargs = {"gaussian_weights": True, "sigma": sigma} if sigma else {"win_size": window}
    theirs = [
        metrics.structural_similarity(
            _normalised(a[i]).numpy(), _normalised(b[i]).numpy(), data_range=1, use_sample_covariance=False, **kwargs
        )
        for i in range(3)
    ]
    torch.testing.assert_close(ssim(a, b, window_size=window, sigma=sigma), torch.tensor(theirs, dtype=f64))


def test_ssim_sums_channels_in_absolute_value_and_penalises_constant_maps():
    a = torch.randn(2, 3, 10, 10, dtype=f64)
    torch.testing.assert_close(ssim(a, -a), torch.ones(2, dtype=f64))
    torch.testing.assert_close(ssim(a, a.abs()), ssim(a.abs().sum(1), a.abs().sum(1) + 5))
    assert (ssim(a, torch.ones_like(a)) < 0.5).all()


@pytest.mark.parametrize("measure", SIMILARITY_MEASURES)
def test_batched_equals_one_at_a_time(measure):
    a, b = torch.randn(5, 2, 9, 9), torch.randn(5, 2, 9, 9)
    b[1] = a[1] + 0.1 * b[1]
    alone = torch.cat([similarity(a[i : i + 1], b[i : i + 1], measure) for i in range(5)])
    torch.testing.assert_close(similarity(a, b, measure), alone)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: similarity(torch.ones(2, 3), torch.ones(2, 4)), ValueError, "b: expected maps of the shape of a"),
        (lambda: similarity(torch.ones(2, 0), torch.ones(2, 0)), ValueError, "a: expected maps of shape"),
        (lambda: similarity(torch.ones(3), torch.ones(3)), ValueError, "at least one example and one feature"),
        (lambda: similarity([1.0], torch.ones(1, 1)), TypeError, "a: expected a real-valued tensor"),
        (lambda: similarity(torch.ones(1, 3), torch.ones(1, 3), "pearson"), ValueError, "spearman.*ssim"),
        (lambda: similarity(torch.ones(1, 3), torch.ones(1, 3), "top_k", k=0), ValueError, r"k: .*\(0, 1\]"),
        (lambda: top_k_intersection(torch.ones(1, 3), torch.ones(1, 3), k=1.5), ValueError, "k:"),
        (lambda: top_k_intersection(torch.ones(1, 3), torch.ones(1, 3), k=True), ValueError, "k:"),
        (lambda: ssim(torch.ones(1, 5, 5), torch.ones(1, 5, 5)), ValueError, "window_size: 7 does not fit"),
        (lambda: ssim(torch.ones(1, 9, 9), torch.ones(1, 9, 9), window_size=4), ValueError, "window_size"),
        (lambda: ssim(torch.ones(2, 81), torch.ones(2, 81)), ValueError, "a: expected image maps"),
        (lambda: similarity(torch.ones(1, 3), torch.ones(1, 3), "cosine", k=0.1), TypeError, "k"),
    ],
)
def test_similarity_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_mass_in_mask_closed_forms():
    masks = torch.zeros(4, 1, 6, 6, dtype=torch.bool)
    masks[:, :, :, :3] = True  # left half
    maps = torch.zeros(4, 2, 6, 6)
    maps[0, 0, 1, 1] = 2.0  # entirely inside
    maps[1, 1, :, :] = 1.0  # half in
    maps[2, 0, 2, 2], maps[2, 0, 2, 5] = 1.0, -4.0  # negative mass outside is ignored
    maps[3, 0, 0, 5] = -1.0  # no positive mass at all
    assert mass_in_mask(maps, masks).tolist() == [1.0, 0.5, 1.0, 0.0]
    assert mass_in_mask(maps.sum(1), masks[:, 0].float()).tolist() == [1.0, 0.5, 1.0, 0.0]
    cancel = torch.stack([maps[1, 1], -maps[1, 1]])[None]  # channels are summed with their signs
    assert mass_in_mask(cancel, masks[:1]).tolist() == [0.0]


def test_pointing_game_hits_and_misses():
    masks = torch.zeros(3, 5, 5, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True
    maps = torch.zeros(3, 1, 5, 5)
    maps[0, 0, 2, 2] = 1.0  # hit
    maps[1, 0, 4, 4], maps[1, 0, 2, 2] = 1.0, -3.0  # signed arg-max is outside
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0, 0.0]  # the last map is constant: no hit


def test_low_resolution_maps_are_upsampled_bilinearly():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :4, :4] = True
    maps = torch.zeros(2, 4, 4)
    maps[0] = 1.0  # constant: the share is the mask's area
    maps[1, :2, :2] = 1.0  # a block whose upsampled edge blurs over: (3.75 / 4)^2 inside
    assert mass_in_mask(maps, masks).tolist() == pytest.approx([0.25, (3.75 / 4) ** 2])
    assert pointing_game(maps[None, 1], masks[:1]).tolist() == [1.0]


def test_empty_masks_give_nan_and_are_left_out_of_the_nanmean():
    torch.manual_seed(0)
    maps = torch.randn(6, 2, 8, 8)
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    masks[::2, 2:5, 1:6] = True  # examples 1, 3 and 5 have no object
    for func in (mass_in_mask, pointing_game):
        scores = func(maps, masks)
        assert scores.isnan().tolist() == [False, True] * 3
        kept = func(maps[::2], masks[::2])
        assert not kept.isnan().any()
        torch.testing.assert_close(scores.nanmean(), kept.mean())
        torch.testing.assert_close(scores[::2], kept)
    assert mass_in_mask(torch.zeros(1, 8, 8), masks[1:2]).isnan().all()  # no attribution and no mask: still NaN
    assert pointing_game(torch.ones(1, 8, 8), masks[1:2]).isnan().all()


@pytest.mark.parametrize(
    "maps, masks, match",
    [
        (torch.ones(2, 4, 4), torch.ones(2, 2, 4, 4), r"masks: expected shape \(N, H, W\)"),
        (torch.ones(2, 4, 4), torch.ones(3, 4, 4), "masks: expected one mask per map"),
        (torch.ones(2, 8, 8), torch.ones(2, 4, 4), "masks at the maps' resolution or finer"),
        (torch.ones(2, 16), torch.ones(2, 4, 4), "attributions: expected maps"),
        (torch.ones(0, 4, 4), torch.ones(0, 4, 4), "non-empty"),
    ],
)
def test_localization_errors(maps, masks, match):
    for func in (mass_in_mask, pointing_game):
        with pytest.raises(ValueError, match=match):
            func(maps, masks)


class Scaled(nn.Module):
    """A parameter held directly (no ``reset_parameters``), then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, 6))
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x * self.scale)


def _saliency(model: nn.Module, x: Tensor) -> Tensor:
    return Saliency(model).attribute(x, target=0)


def test_randomization_check_top_down_and_leaves_the_model_alone(cnn):
    cnn.conv1.train()  # mixed modes must survive
    cnn.fc.weight.grad = torch.ones_like(cnn.fc.weight)
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    modes = [m.training for m in cnn.modules()]
    x = torch.randn(4, 3, 8, 8)
    rng = torch.get_rng_state()
    steps = model_randomization_check(cnn, _saliency, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [name for name, _ in steps] == ["fc", "conv2", "conv1"]
    assert all(s.shape == (4,) for _, s in steps)
    assert (steps[-1][1] < 0.5).all(), steps
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert [m.training for m in cnn.modules()] == modes
    assert torch.equal(cnn.fc.weight.grad, torch.ones_like(cnn.fc.weight))
    assert all(p.grad is None for n, p in cnn.named_parameters() if n != "fc.weight")
    again = model_randomization_check(cnn, _saliency, x)
    assert all(torch.equal(s, t) for (_, s), (_, t) in zip(steps, again))


def test_randomization_check_layers_measures_and_fallback_init():
    model = Scaled()
    x = torch.randn(5, 6)
    steps = model_randomization_check(model, lambda m, x: m.scale.detach().expand(len(x), -1), x)
    assert [name for name, _ in steps] == ["fc", ""]  # the root holds `scale` directly
    assert steps[0][1].tolist() == [1.0] * 5  # only fc's own parameters changed
    assert (steps[1][1] < 1).all()  # no reset_parameters: drawn from a normal distribution
    steps = model_randomization_check(model, _saliency, x, layers=[""], measure="top_k", k=0.5)
    assert [name for name, _ in steps] == [""] and (steps[0][1] < 1).all()  # everything under the root


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"model": lambda x: x}, TypeError, "model: expected a torch.nn.Module"),
        ({"explain": "saliency"}, TypeError, "explain: expected a callable"),
        ({"explain": lambda m, x: (x,)}, TypeError, "explain: expected it to return a tensor"),
        ({"measure": "kendall"}, ValueError, "measure: unknown value 'kendall'"),
        ({"layers": ["fc", "conv3"]}, ValueError, "layers: unknown value 'conv3'"),
        ({"layers": "fc"}, TypeError, "layers: expected a sequence"),
        ({"layers": []}, ValueError, "layers: expected at least one"),
        ({"seed": -1}, ValueError, "seed: expected an int >= 0"),
        ({"measure": "top_k", "k": 2.0}, ValueError, "k:"),
        ({"model": nn.ReLU()}, ValueError, "no parameters"),
    ],
)
def test_randomization_check_errors(cnn, kwargs, error, match):
    args = {"model": cnn, "explain": _saliency, **kwargs}
    with pytest.raises(error, match=match):
        model_randomization_check(args.pop("model"), args.pop("explain"), torch.randn(2, 3, 8, 8), **args)
