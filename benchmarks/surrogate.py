"""Our Lime and KernelShap vs. the reference's, side by side in one process.

    python -m benchmarks.surrogate [cpu|cuda]

A 4-layer conv net on 4x3x64x64 images with 8x8 superpixels (64 features), 200 coalitions per example.
The reference runs at its defaults (one perturbed copy per forward, one example at a time, scikit-learn
fits); ours at its defaults (many copies per forward, all examples' fits batched).  The net's last layer
is scaled up 100x: at random initialisation the target moves by only 0.01 when superpixels are removed,
and the lasso zeroes every coefficient.  Both libraries draw their coalitions independently, so results
agree only statistically; the line below each timing gives the mean |coefficient| of each, the
correlation of the two coefficient matrices (low for KernelShap at 200 samples of 64 features: sampling
noise dominates), and for KernelShap how far the coefficients' sum is from f(x) - f(0) (efficiency).
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
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)).eval()
    with torch.no_grad():
        model[-1].weight.mul_(100)
        model[-1].bias.mul_(100)
    return model


def _seeded(fn, device: torch.device):
    """``fn`` from a fixed seed, called once up front so one-time set-up (kernel selection) is not timed."""

    def run():
        torch.manual_seed(0)
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    run()
    return run


def _agreement(ours: torch.Tensor, theirs: torch.Tensor, gain: torch.Tensor | None) -> str:
    ours, theirs = ours.cpu(), theirs.cpu()
    correlation = float(torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]).double())[0, 1])
    line = (
        f"{'':<44} mean |coef|: ours {float(ours.abs().mean()):.3g}, captum {float(theirs.abs().mean()):.3g}; "
        f"correlation {correlation:.2f}"
    )
    if gain is not None:
        gaps = [float((coefs.sum(1) - gain.cpu()).abs().max()) for coefs in (ours, theirs)]
        line += f"; |sum - (f(x) - f(0))|: ours {gaps[0]:.1e}, captum {gaps[1]:.1e}"
    return line


def bench_surrogate(n_samples: int = 200, repeats: int = 2, device: str = "cpu") -> list[str]:
    """Time both libraries' Lime and KernelShap on ``device``; returns the lines to print."""
    from captum import attr as captum_attr

    from attribution import KernelShap, Lime

    device = torch.device(device)
    model = _conv_net().to(device)
    x = torch.rand(4, 3, 64, 64, device=device)
    cells = torch.arange(64, device=device).view(8, 8).repeat_interleave(8, 0).repeat_interleave(8, 1)[None, None]
    with torch.no_grad():
        target = model(x).argmax(1).tolist()
        gain = (model(x) - model(torch.zeros_like(x)))[torch.arange(4, device=device), target]
    kwargs = dict(target=target, feature_mask=cells, n_samples=n_samples, return_input_shape=False)
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, 4-layer CNN on 4x3x64x64, "
        f"8x8 superpixels, n_samples={n_samples}"
    ]
    for ours_cls, theirs_cls in ((Lime, captum_attr.Lime), (KernelShap, captum_attr.KernelShap)):
        ours = measure(_seeded(lambda: ours_cls(model).attribute(x, **kwargs), device), repeats=repeats)
        theirs = measure(_seeded(lambda: theirs_cls(model).attribute(x, **kwargs), device), repeats=repeats)
        lines += [row(f"{ours_cls.__name__} n_samples={n_samples}", ours, theirs)]
        lines += [_agreement(ours.result, theirs.result, gain if ours_cls is KernelShap else None)]
    return lines


if __name__ == "__main__":
    import sys

    print("\n".join(bench_surrogate(device=sys.argv[1] if len(sys.argv) > 1 else "cpu")))
