"""Our ``LRP`` and ``LayerLRP`` vs. the reference's, side by side in one process.

    python -m benchmarks.lrp

A VGG-style conv net (every module used once, so the reference's LRP is right
there) on 8x3x64x64 with the default epsilon rule and with the gamma rule on
every convolution; LayerLRP to all of its layers at once; and ResNet-18 at
224x224, where the reference's result does not conserve relevance (its
residual additions copy relevance to both summands) but its time still
counts.  Each line prints our time and peak RSS growth, the reference's, and
the ratios (> 1 means we are faster / smaller), then our time against the
floor (one forward and backward) and the agreement.  The two libraries' runs
alternate, so a busy machine slows both alike.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks._measure import Run, max_rel_diff, measure, row, side_by_side
from benchmarks._models import resnet


class _VGG(nn.Module):
    """Conv/ReLU/max-pool stages and a linear head, flattened in ``forward`` (the reference has no rule
    for ``nn.Flatten``)."""

    def __init__(self) -> None:
        super().__init__()
        layers, channels = [], 3
        for width in (16, 32, 64, 64):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1, self.relu, self.fc2 = nn.Linear(4 * channels, 64), nn.ReLU(), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(self.pool(self.features(x)).flatten(1))))


def _vgg() -> nn.Module:
    torch.manual_seed(0)
    return _VGG().eval()


def _set_gamma(model: nn.Module, rules) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.rule = rules.GammaRule(gamma=0.25)
    return model


def _floor_line(ours: Run, floor: Callable[[], Any], repeats: int) -> str:
    """Our time against one forward and backward (gradient x input: LRP-0 of a ReLU net), the floor."""
    floor()
    seconds = measure(floor, repeats=repeats).seconds
    return f"{'':<44} floor (one forward + backward) {seconds:.2f} s; ours takes x{ours.seconds / seconds:.2f} of it"


def _delta_line(ours: torch.Tensor, theirs: torch.Tensor, attrs: tuple[torch.Tensor, torch.Tensor]) -> str:
    return (
        f"{'':<44} max relative difference {max_rel_diff(*attrs):.1e}; "
        f"|delta| max: ours {float(ours.abs().max()):.2g}, captum {float(theirs.abs().max()):.2g}"
    )


def bench_lrp(repeats: int = 7) -> list[str]:
    """Time both libraries' LRP; returns the lines to print."""
    from captum import attr as captum_attr
    from captum.attr._utils import lrp_rules

    import attribution
    from attribution import LRP, InputXGradient, LayerLRP

    x = torch.rand(8, 3, 64, 64)
    model = _vgg()
    with torch.no_grad():
        target = model(x).argmax(1).tolist()
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; VGG-style CNN on 8x3x64x64"]

    for name, ours_model, their_model in (
        ("LRP epsilon (defaults)", model, copy.deepcopy(model)),
        ("LRP gamma on every conv", _set_gamma(_vgg(), attribution), _vgg()),
    ):
        gamma = name.startswith("LRP gamma")

        def theirs_call(their_model=their_model, gamma=gamma):
            if gamma:  # the reference deletes every rule after a call
                _set_gamma(their_model, lrp_rules)
            return captum_attr.LRP(their_model).attribute(x, target=target, return_convergence_delta=True)

        ours, theirs = side_by_side(
            lambda m=ours_model: LRP(m).attribute(x, target=target, return_convergence_delta=True), theirs_call, repeats
        )
        lines += [
            row(name, ours, theirs),
            _floor_line(ours, lambda: InputXGradient(model).attribute(x, target=target), repeats),
            _delta_line(ours.result[1], theirs.result[1].detach(), (ours.result[0], theirs.result[0].detach())),
        ]

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ours, theirs = side_by_side(
        lambda: LayerLRP(model, layers).attribute(x, target=target),
        lambda: captum_attr.LayerLRP(model, layers).attribute(x, target=target),
        repeats,
    )
    worst = max(max_rel_diff(o, t.detach()) for o, t in zip(ours.result, theirs.result))
    lines += [row(f"LayerLRP to all {len(layers)} conv/linear layers", ours, theirs)]
    lines += [f"{'':<44} max relative difference {worst:.1e} (worst layer)"]

    net, image, label = resnet()
    ours, theirs = side_by_side(
        lambda: LRP(net).attribute(image, target=label, return_convergence_delta=True),
        lambda: captum_attr.LRP(net).attribute(image, target=label, return_convergence_delta=True),
        repeats,
    )
    output = _output(net, image, label)
    lines += [row("LRP ResNet-18 1x3x224x224", ours, theirs)]
    lines += [_floor_line(ours, lambda: InputXGradient(net).attribute(image, target=label), repeats)]
    lines += [
        f"{'':<44} |delta| / |output|: ours {float(ours.result[1].abs().max()) / output:.1e} (the fc bias's "
        f"share), captum {float(theirs.result[1].detach().abs().max()) / output:.1e} (it does not conserve)"
    ]
    return lines


def _output(model: nn.Module, x: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(model(x)[0, target].abs())


if __name__ == "__main__":
    print("\n".join(bench_lrp()))
