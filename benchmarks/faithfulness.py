"""Our faithfulness and complexity metrics vs. Quantus 0.6's, side by side in one process.

    python -m benchmarks.faithfulness

A 2-conv CNN on 8x3x32x32 with Saliency attributions of the predicted
classes, each metric at the settings our Quantus parity tests use:

* ``deletion_curve`` (+ ``area_under_curve``) vs. ``PixelFlipping`` (64
  features per step, baseline 0.25): the curves must agree after the first
  point (Quantus records no unperturbed score);
* ``insertion_curve`` (+ ``area_under_curve``): Quantus 0.6 has no insertion
  metric, so ours is timed alone;
* ``faithfulness_correlation`` vs. ``FaithfulnessCorrelation`` (100 subsets of
  224 features, baseline 0.25): Quantus draws subsets per example from numpy's
  global generator, ours draws subsets shared by the batch from a seeded
  generator, so the check replays Quantus's draws through our core;
* ``road`` (MoRF, accuracy, no noise) vs. ``ROAD`` on one-channel images
  (Quantus ranks channels and pixels together, so more channels differ);
* ``sparseness`` and ``complexity`` vs. ``Sparseness``/``Complexity`` on
  absolute attributions (Quantus adds 1e-7 to each value, and 1e-12 inside
  the logarithm).

Each line prints both times (best of a few alternating runs: a busy machine
slows both alike) and the ratio, Quantus's time over ours (> 1 means we
are faster), then how far the values are apart.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks._measure import Run, measure, side_by_side

FEATURES_IN_STEP = 64
BASELINE = 0.25
SUBSETS, SUBSET_SIZE = 100, 224
PERCENTAGES = list(range(5, 100, 10))


def _cnn(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    ).eval()


def _row(name: str, ours: Run, theirs: Run | None) -> str:
    if theirs is None:
        return f"{name:<44} ours {ours.seconds:8.4f} s | quantus      n/a   | (no Quantus 0.6 counterpart)"
    return (
        f"{name:<44} ours {ours.seconds:8.4f} s | quantus {theirs.seconds:8.4f} s | "
        f"quantus/ours x{theirs.seconds / ours.seconds:6.2f}"
    )


def _agreement(ours: Any, theirs: Any, note: str = "") -> str:
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    gap = float(np.nanmax(np.abs(a - b))) if a.shape == b.shape else float("nan")
    agree = a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
    return f"{'':<44} values {'agree' if agree else 'DIFFER'}: max |ours - quantus| {gap:.1e}{note}"


def _replayed_draws(n: int, features: int) -> torch.Tensor:
    """The subsets Quantus's ``FaithfulnessCorrelation`` draws after ``np.random.seed(0)``, as ``(N, S, D)``."""
    np.random.seed(0)
    subsets = torch.zeros(n, SUBSETS, features, dtype=torch.bool)
    for r in range(SUBSETS):
        for i in range(n):
            subsets[i, r, torch.from_numpy(np.random.choice(features, SUBSET_SIZE, replace=False))] = True
    return subsets


def bench_faithfulness(repeats: int = 3) -> list[str]:
    """Time our faithfulness metrics against Quantus's; returns the lines to print."""
    import quantus

    from attribution import Saliency
    from attribution.metrics import (
        area_under_curve,
        complexity,
        deletion_curve,
        faithfulness_correlation,
        insertion_curve,
        road,
        sparseness,
    )
    from attribution.metrics.faithfulness import _prepare, correlation_of

    warnings.filterwarnings("ignore", module="quantus")
    model = _cnn(3)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(x).argmax(1)
    attrs = Saliency(model).attribute(x, target=labels, abs=False)
    batch = {"x_batch": x.numpy(), "y_batch": labels.numpy(), "a_batch": attrs.numpy(), "device": "cpu"}
    quiet = {"normalise": False, "disable_warnings": True, "display_progressbar": False}
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; 2-conv CNN on 8x3x32x32, Saliency"]

    pixel_flipping = quantus.PixelFlipping(
        features_in_step=FEATURES_IN_STEP, perturb_baseline=BASELINE, abs=False, **quiet
    )

    def deletion() -> tuple[torch.Tensor, torch.Tensor]:
        curve = deletion_curve(model, x, attrs, target=labels, baselines=BASELINE, step_size=FEATURES_IN_STEP)
        return curve.values, area_under_curve(curve)

    ours, theirs = side_by_side(
        deletion, lambda: pixel_flipping(model=model, softmax=False, channel_first=True, **batch), repeats
    )
    lines += [
        _row(f"deletion_curve+AUC vs PixelFlipping ({FEATURES_IN_STEP}/step)", ours, theirs),
        _agreement(ours.result[0][:, 1:], theirs.result, " (curves after the first point)"),
    ]

    def insertion() -> torch.Tensor:
        curve = insertion_curve(model, x, attrs, target=labels, baselines=BASELINE, step_size=FEATURES_IN_STEP)
        return area_under_curve(curve)

    insertion()
    lines.append(_row(f"insertion_curve+AUC ({FEATURES_IN_STEP}/step)", measure(insertion, repeats=repeats), None))

    correlation = quantus.FaithfulnessCorrelation(
        nr_runs=SUBSETS, subset_size=SUBSET_SIZE, perturb_baseline=BASELINE, abs=False, return_aggregate=False, **quiet
    )

    def ours_correlation() -> torch.Tensor:
        return faithfulness_correlation(
            model, x, attrs, labels, BASELINE, n_perturb_samples=SUBSETS, subset_size=SUBSET_SIZE, seed=0
        )

    def quantus_correlation() -> list[float]:
        np.random.seed(0)  # Quantus draws its subsets from numpy's global generator
        result: list[float] = correlation(model=model, softmax=False, channel_first=True, **batch)
        return result

    state = np.random.get_state()
    try:
        ours, theirs = side_by_side(ours_correlation, quantus_correlation, repeats)
        objective, x_, baseline, features = _prepare(model, x, attrs, labels, BASELINE, None, None)
        replayed = correlation_of(objective, x_, baseline, features, _replayed_draws(len(x), features.count), 16)
    finally:
        np.random.set_state(state)
    lines += [
        _row(f"faithfulness_correlation ({SUBSETS}x{SUBSET_SIZE})", ours, theirs),
        _agreement(replayed, theirs.result, " (on Quantus's own subsets)"),
        f"{'':<44} batch means on each library's own draws: ours {float(ours.result.mean()):.3f}, "
        f"quantus {float(np.mean(theirs.result)):.3f}",
    ]

    gray_model, gray = _cnn(1), x.mean(1, keepdim=True)
    with torch.no_grad():
        gray_labels = gray_model(gray).argmax(1)
    gray_attrs = Saliency(gray_model).attribute(gray, target=gray_labels, abs=False)
    road_metric = quantus.ROAD(noise=0.0, percentages=PERCENTAGES, abs=False, **quiet)
    gray_batch = {"x_batch": gray.numpy(), "y_batch": gray_labels.numpy(), "a_batch": gray_attrs.numpy()}
    ours, theirs = side_by_side(
        lambda: road(gray_model, gray, gray_attrs, gray_labels, percentages=PERCENTAGES, score="accuracy", noise=0.0),
        lambda: road_metric(model=gray_model, device="cpu", softmax=False, **gray_batch),
        repeats,
    )
    lines += [
        _row(f"road vs ROAD (8x1x32x32, {len(PERCENTAGES)} percentages)", ours, theirs),
        _agreement(ours.result.mean(0), [theirs.result[p] for p in PERCENTAGES], " (accuracy per percentage)"),
    ]

    absolute = {"abs": True, **quiet, "x_batch": x.numpy(), "y_batch": labels.numpy(), "device": "cpu"}
    for name, ours_fn, their_cls in (
        ("sparseness vs Sparseness", sparseness, quantus.Sparseness),
        ("complexity vs Complexity", complexity, quantus.Complexity),
    ):
        options = {k: absolute[k] for k in ("abs", *quiet)}
        data = {k: absolute[k] for k in ("x_batch", "y_batch", "device")}
        ours, theirs = side_by_side(
            lambda fn=ours_fn: fn(attrs),
            lambda cls=their_cls: cls(**options)(model=None, a_batch=attrs.numpy().copy(), **data),
            repeats,
        )
        lines += [_row(name, ours, theirs), _agreement(ours.result, theirs.result)]
    return lines


if __name__ == "__main__":
    print("\n".join(bench_faithfulness()))
