"""Our LRP with published composites vs. Zennit's, side by side in one process.

    python -m benchmarks.lrp_zennit

torchvision's VGG-11 and ResNet-18 (random weights, batch-norm statistics from two batches), batch 4 at
64x64, with the composites both libraries define: epsilon everywhere, EpsilonPlusFlat and EpsilonGammaBox
(Zennit with its canonizers, ours folds batch norms and splits residual sums by itself).  Each line prints
our time and peak RSS growth, Zennit's, the ratios (> 1 means we are faster / smaller), and the relative L2
distance between the two maps.  The two libraries' runs alternate, so a busy machine slows both alike.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torchvision

from benchmarks._measure import row, side_by_side


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, 64, 64))
    return model.eval()


def bench_lrp_zennit(repeats: int = 5) -> list[str]:
    """Time both libraries' LRP composites; returns the lines to print."""
    from zennit import composites as theirs_composites
    from zennit import rules as theirs_rules
    from zennit.attribution import Gradient
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    from zennit.types import Linear as TheirLinear

    from attribution.lrp import LRP, Composite, Epsilon, EpsilonGammaBox, EpsilonPlusFlat, Norm, Pass
    from attribution.methods.lrp_rules import AVERAGE_POOLS, BATCH_NORMS, LINEAR_LAYERS

    x = torch.randn(4, 3, 64, 64)
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 4 at 64x64"]
    for architecture, canonizer in (("vgg11", VGGCanonizer), ("resnet18", ResNetCanonizer)):
        model = _model(architecture)
        their_model = copy.deepcopy(model)  # zennit's canonizers leave attributes behind
        with torch.no_grad():
            target = model(x).argmax(1)
        start = torch.zeros(4, 10)
        start[torch.arange(4), target] = 1.0
        cases = (
            (
                "epsilon",
                Composite(layer_map=[(AVERAGE_POOLS, Norm()), (BATCH_NORMS, Pass()), (LINEAR_LAYERS, Epsilon())]),
                lambda: theirs_composites.LayerMapComposite(
                    theirs_composites.layer_map_base() + [(TheirLinear, theirs_rules.Epsilon())],
                    canonizers=[canonizer()],
                ),
            ),
            (
                "epsilon_plus_flat",
                EpsilonPlusFlat(),
                lambda: theirs_composites.EpsilonPlusFlat(canonizers=[canonizer()]),
            ),
            (
                "epsilon_gamma_box",
                EpsilonGammaBox(-3.0, 3.0),
                lambda: theirs_composites.EpsilonGammaBox(low=-3.0, high=3.0, canonizers=[canonizer()]),
            ),
        )
        for name, ours_composite, theirs_composite in cases:

            def ours(composite: Any = ours_composite) -> torch.Tensor:
                return LRP(model).attribute(x, target=target, composite=composite)

            def theirs(composite: Callable[[], Any] = theirs_composite) -> torch.Tensor:
                with Gradient(model=their_model, composite=composite()) as attributor:
                    _, relevance = attributor(x, start)
                return relevance

            ours_run, theirs_run = side_by_side(ours, theirs, repeats)
            with torch.no_grad():
                logits = model(x)[torch.arange(4), target].reshape(4, 1, 1, 1)
            theirs_scaled = theirs_run.result * logits  # zennit starts from 1, we from the logit
            distance = float((ours_run.result - theirs_scaled).norm() / theirs_scaled.norm())
            lines += [
                row(f"{architecture} {name}", ours_run, theirs_run, reference="zennit"),
                f"{'':<44} relative L2 to zennit {distance:.1e}",
            ]
    return lines


if __name__ == "__main__":
    print("\n".join(bench_lrp_zennit()))
