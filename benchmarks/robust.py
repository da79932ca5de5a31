"""Our ``PGD`` and ``FGSM`` vs. Captum's, side by side in one process.

    python -m benchmarks.robust

A torchvision ResNet-18 with random weights (10 classes, eval mode, softmax output for the default loss
``-log p_target``) on a batch of 8 random 64x64 images in [0, 1]: FGSM with epsilon 8/255, and PGD of 20
steps of 2/255 in the L-inf ball of 8/255 (and in the L2 ball of 0.5), bounds [0, 1].  On the GPU when
there is one.  Each line prints our time and peak RSS growth, Captum's, the ratios (> 1 means we are
faster / smaller), and how far the adversarial images are apart.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmarks._measure import max_rel_diff, row, side_by_side


def _model(device: torch.device) -> nn.Module:
    import torchvision  # type: ignore[import-untyped]

    torch.manual_seed(0)
    return nn.Sequential(torchvision.models.resnet18(num_classes=10), nn.Softmax(dim=1)).eval().to(device)


def bench_robust(repeats: int = 5) -> list[str]:
    """Time both libraries' FGSM and PGD; returns the lines to print.

    Denormal floats are flushed to zero while it runs: on CPU, the random-weight ResNet's backward otherwise
    takes 0.05 to 1.5 s per call for the same input, depending on the state of the heap, which swamps the
    difference between the libraries.
    """
    torch.set_flush_denormal(True)
    try:
        return _bench(repeats)
    finally:
        torch.set_flush_denormal(False)  # torch's default; it has no getter to restore another


def _bench(repeats: int) -> list[str]:
    from captum import robust as theirs  # type: ignore[import-untyped]

    from attribution import robust as ours

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _model(device)
    torch.manual_seed(1)
    images = torch.rand(8, 3, 64, 64, device=device)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [f"torch {torch.__version__}, {where}; ResNet-18 (10 classes), batch 8 x 3 x 64 x 64"]

    def timed(fn: Any) -> Any:
        def call() -> Any:
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return result

        return call

    bounds: dict[str, Any] = {"lower_bound": 0.0, "upper_bound": 1.0}
    fgsm_ours, fgsm_theirs = ours.FGSM(model, **bounds), theirs.FGSM(model, **bounds)
    run_ours, run_theirs = side_by_side(
        timed(lambda: fgsm_ours.perturb(images, 8 / 255, labels)),
        timed(lambda: fgsm_theirs.perturb(images, 8 / 255, labels)),
        repeats,
    )
    lines += [row("FGSM, epsilon 8/255", run_ours, run_theirs), _apart(run_ours.result, run_theirs.result)]

    pgd_ours, pgd_theirs = ours.PGD(model, **bounds), theirs.PGD(model, **bounds)
    for norm, radius in (("Linf", 8 / 255), ("L2", 0.5)):
        arguments = {"radius": radius, "step_size": 2 / 255, "step_num": 20, "target": labels, "norm": norm}
        run_ours, run_theirs = side_by_side(
            timed(lambda: pgd_ours.perturb(images, **arguments)),
            timed(lambda: pgd_theirs.perturb(images, **arguments)),
            repeats,
        )
        lines += [row(f"PGD {norm}, 20 steps", run_ours, run_theirs), _apart(run_ours.result, run_theirs.result)]
    with torch.no_grad():
        p_clean = model(images).gather(1, labels[:, None]).mean()
        p_attacked = model(run_ours.result).gather(1, labels[:, None]).mean()
    lines.append(f"{'':<44} mean p(label): clean {float(p_clean):.3f}, after our PGD L2 {float(p_attacked):.3f}")

    # a small MLP, where the per-step work around the forward and backward (formatting, the sign step, the
    # projection, the clamps) is a visible share of the time
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10), nn.Softmax(dim=1)).to(device)
    digits = torch.rand(64, 784, device=device)
    pgd_ours, pgd_theirs = ours.PGD(mlp, **bounds), theirs.PGD(mlp, **bounds)
    arguments = {"radius": 0.1, "step_size": 0.01, "step_num": 20, "target": 0}
    run_ours, run_theirs = side_by_side(
        timed(lambda: pgd_ours.perturb(digits, **arguments)),
        timed(lambda: pgd_theirs.perturb(digits, **arguments)),
        repeats * 5,
    )
    lines += [row("PGD Linf, 20 steps, MLP 784-256-10, batch 64", run_ours, run_theirs)]
    lines.append(_apart(run_ours.result, run_theirs.result))
    return lines


def _apart(ours: torch.Tensor, theirs: torch.Tensor) -> str:
    changed = float((ours != theirs).float().mean())
    return f"{'':<44} max relative difference {max_rel_diff(ours, theirs):.1e}, elements that differ {changed:.1%}"


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message="Input Tensor")  # Captum's note that it set requires_grad
    print("\n".join(bench_robust()))
