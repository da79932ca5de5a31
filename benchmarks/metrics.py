"""Our ``infidelity`` and ``sensitivity_max`` vs. the reference's, side by side in one process.

    python -m benchmarks.metrics

A 4-layer conv net on 8x3x64x64 at the reference's defaults (10 perturbation
samples, everything in one batch).  Each line prints our time and peak RSS
growth, the reference's, and the ratios (> 1 means we are faster / smaller).
Both draw their perturbations from the global generator but stack the copies
differently, so values are compared by their batch mean only.
"""

from __future__ import annotations

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

    model = _conv_net()
    x = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        target = model(x).argmax(1).tolist()
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, 4-layer CNN on 8x3x64x64"]

    attrs = Saliency(model).attribute(x, target=target, abs=False)
    for normalize in (False, True):
        kwargs = dict(target=target, normalize=normalize)
        ours = measure(
            _seeded(lambda: infidelity(model, default_infidelity_perturb_func, x, attrs, **kwargs)), repeats=4 * repeats
        )
        theirs = measure(
            _seeded(lambda: captum_metrics.infidelity(model, default_infidelity_perturb_func, x, attrs, **kwargs)),
            repeats=4 * repeats,  # tens of milliseconds: more repeats against noise
        )
        lines += [
            row(f"infidelity normalize={normalize}", ours, theirs),
            _means("infidelity", ours.result, theirs.result),
        ]

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
