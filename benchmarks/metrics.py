"""Our ``infidelity`` and ``sensitivity_max`` vs. the reference's, side by side in one process.

    python -m benchmarks.metrics

A 4-layer conv net on 8x3x64x64 at the reference's defaults (10 perturbation
samples, everything in one batch), and for infidelity also the small case
of the reference's documentation: a 2-conv net on 16 MNIST-sized images,
50 Gaussian perturbations each (where a fixed cost per call would show).
Each infidelity line prints the median times of alternating runs and the
median of the per-pair ratios ours/reference (< 1 means we are faster), then
each library's peak RSS growth in one call; the sensitivity lines print our
time and peak RSS growth, the reference's, and the ratios (> 1 means we are
faster / smaller).  Both draw their perturbations from the global generator
but evaluate the copies in different batches, so values are compared by
their batch mean only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks._measure import measure, row


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    layers, channels = [], 3
    for width in (16, 32, 32, 64):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)).eval()


def _mnist_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    ).eval()


def _gaussian_noise(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The perturbation of the reference's documentation example: ``(I, x - I)``, ``I ~ N(0, 0.003^2)``."""
    noise = torch.randn_like(inputs) * 0.003
    return noise, inputs - noise


def _paired(name: str, ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int) -> list[str]:
    """Median times of ``repeats`` alternating runs (a busy machine slows both alike) and the median of the
    per-pair ratios; freed memory is not handed back between runs, as in a loop of calls."""
    seconds: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, times in zip((ours, theirs), seconds):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    ratio = statistics.median(o / t for o, t in zip(*seconds))
    peaks = [measure(fn).peak_bytes / 2**20 for fn in (ours, theirs)]
    return [
        f"{name:<44} ours {statistics.median(seconds[0]) * 1e3:7.1f} ms | "
        f"captum {statistics.median(seconds[1]) * 1e3:7.1f} ms | ours/captum x{ratio:5.2f} "
        f"(median of {repeats} pairs)",
        f"{'':<44} peak RSS growth: ours {peaks[0]:.0f} MiB, captum {peaks[1]:.0f} MiB",
    ]


def _means(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> str:
    return f"{'':<44} mean {name}: ours {float(ours.mean()):.4g}, captum {float(theirs.mean()):.4g}"


def _seeded(fn):
    """``fn`` from a fixed seed, called once up front so one-time set-up (kernel selection) is not timed."""

    def run():
        torch.manual_seed(0)
        return fn()

    run()
    return run


def bench_metrics(repeats: int = 3) -> list[str]:
    """Time both libraries' metrics; returns the lines to print."""
    from captum import attr as captum_attr
    from captum import metrics as captum_metrics

    from attribution import IntegratedGradients, Saliency
    from attribution.metrics import default_infidelity_perturb_func, infidelity, sensitivity_max

    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads"]
    mnist = _mnist_net()
    digits = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = mnist(digits).argmax(1)
    saliency = Saliency(mnist).attribute(digits, target=labels, abs=False)
    model = _conv_net()
    x = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        target = model(x).argmax(1).tolist()
    attrs = Saliency(model).attribute(x, target=target, abs=False)
    workloads = [  # (name, model, inputs, attributions, perturb_func, keyword arguments)
        ("MNIST 2-conv CNN 16x1x28x28, 50 samples", mnist, digits, saliency, _gaussian_noise, {"target": labels}),
        *(
            (f"4-layer CNN 8x3x64x64 normalize={normalize}", model, x, attrs, default_infidelity_perturb_func,
             {"target": target, "normalize": normalize})
            for normalize in (False, True)
        ),
    ]  # fmt: skip
    for name, net, inputs, explained, perturb, kwargs in workloads:
        if net is mnist:
            kwargs = {**kwargs, "n_perturb_samples": 50}
        ours = _seeded(lambda: infidelity(net, perturb, inputs, explained, **kwargs))
        theirs = _seeded(lambda: captum_metrics.infidelity(net, perturb, inputs, explained, **kwargs))
        lines += _paired(f"infidelity {name}", ours, theirs, repeats=5 * repeats)
        lines.append(_means("infidelity", ours(), theirs()))

    lines.append("4-layer CNN on 8x3x64x64")

    explainers = {
        "Saliency": (Saliency(model).attribute, captum_attr.Saliency(model).attribute, {}),
        "IG n_steps=16": (
            IntegratedGradients(model).attribute,
            captum_attr.IntegratedGradients(model).attribute,
            {"n_steps": 16},
        ),
    }
    for name, (our_explain, their_explain, extra) in explainers.items():
        ours = measure(_seeded(lambda: sensitivity_max(our_explain, x, target=target, **extra)), repeats=repeats)
        theirs = measure(
            _seeded(lambda: captum_metrics.sensitivity_max(their_explain, x, target=target, **extra)), repeats=repeats
        )
        lines += [row(f"sensitivity_max {name}", ours, theirs), _means("sensitivity", ours.result, theirs.result)]
    return lines


if __name__ == "__main__":
    print("\n".join(bench_metrics()))
