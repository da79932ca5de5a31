"""All benchmarks, side by side with Captum in one process.

    scripts/bench                 # everything
    scripts/bench --only occlusion

* ``integrated_gradients``, ``occlusion``, ``feature_ablation``: ResNet-18 at 224x224 (the article's settings);
* ``metrics``: infidelity and sensitivity_max (``benchmarks/metrics.py``);
* ``faithfulness``: deletion/insertion, faithfulness correlation, ROAD, sparseness and complexity against
  Quantus (``benchmarks/faithfulness.py``);
* ``surrogate``: Lime and KernelShap (``benchmarks/surrogate.py``);
* ``lrp``: LRP and LayerLRP on a VGG-style net and ResNet-18 (``benchmarks/lrp.py``);
* ``influence``: TracInCPFast and TracInCPFastRandProj against Captum's on an MLP and a CNN of about 1M parameters
  (``benchmarks/influence.py``);
* ``influence_monitor``: the InfluenceMonitor's share of fit time on scikit-learn's digits and the bound on its
  memory (``benchmarks/influence_monitor.py``);
* ``tcav``: TCAV (CAVs for two concepts and random sets, then scores) on ResNet-18 64x64 against Captum's
  (``benchmarks/tcav.py``);
* ``llm``: LLMAttribution(FeatureAblation) and LLMGradientAttribution(LayerIntegratedGradients) on a GPT-2
  from a config (64-token prompt, 8-token target) against Captum's (``benchmarks/llm.py``);
* ``robust``: FGSM and PGD (20 steps) on ResNet-18 64x64 against Captum's (``benchmarks/robust.py``);
* ``lrp_zennit``: the published LRP composites against Zennit's on VGG-11 and ResNet-18
  (``benchmarks/lrp_zennit.py``);
* ``monitor``: the AttributionMonitor's share of fit time (``benchmarks/monitor.py``);
* ``monitor_sensitivity``: what the sensitivity metric costs in a monitored fit on scikit-learn's digits;
* ``log_size``: the bytes the monitor leaves per point (event file, maps) at 64, 224 and 384 px, and after
  300 points (``benchmarks/log_size.py``);
* ``monitor_cost``: one point of the monitor at 224 px, part by part, before and after ``time_budget``, and
  its share of a 2,000-image epoch (``benchmarks/monitor_cost.py``);
* ``images_tab``: how long TensorBoard takes to show the IMAGES tab of a 300-point run at 224 px, in headless
  Chromium (``benchmarks/images_tab.py``; needs ``/usr/bin/chromium`` and playwright);
* ``compiled``: the monitor on a ``torch.compile``-d model: recompilations, the step after a point
  (``benchmarks/compiled.py``);
* ``contended``: IG and Occlusion alone and beside a competing busy process (``benchmarks/contended.py``,
  ``python -m benchmarks.contended`` for its options).

Each line prints our time and peak RSS growth, Captum's, and the ratios
(> 1 means we are faster / smaller).  Results are also checked for agreement.
"""

from __future__ import annotations

import argparse
import functools

import torch

from benchmarks._measure import max_rel_diff, measure, row
from benchmarks._models import resnet
from benchmarks.compiled import bench_compiled
from benchmarks.contended import bench_contended
from benchmarks.faithfulness import bench_faithfulness
from benchmarks.images_tab import bench_images_tab
from benchmarks.influence import bench_influence
from benchmarks.influence_monitor import bench_influence_monitor
from benchmarks.llm import bench_llm
from benchmarks.log_size import bench_log_size
from benchmarks.lrp import bench_lrp
from benchmarks.lrp_zennit import bench_lrp_zennit
from benchmarks.metrics import bench_metrics
from benchmarks.monitor import bench_monitor, bench_sensitivity
from benchmarks.monitor_cost import bench_monitor_cost
from benchmarks.robust import bench_robust
from benchmarks.surrogate import bench_surrogate
from benchmarks.tcav import bench_tcav


def bench_integrated_gradients() -> list[str]:
    from captum.attr import IntegratedGradients as CaptumIG

    from attribution import IntegratedGradients

    model, x, target = resnet()
    lines = []
    for n_steps in (50, 200):
        theirs = measure(lambda: CaptumIG(model).attribute(x, target=target, n_steps=n_steps))
        ours = measure(lambda: IntegratedGradients(model).attribute(x, target=target, n_steps=n_steps))
        lines.append(row(f"IntegratedGradients n_steps={n_steps}", ours, theirs))
        lines.append(f"{'':<44} max relative difference {max_rel_diff(ours.result, theirs.result):.1e}")
    return lines


def bench_occlusion() -> list[str]:
    from captum.attr import Occlusion as CaptumOcclusion

    from attribution import Occlusion

    model, x, target = resnet()
    kwargs = dict(target=target, strides=(3, 8, 8), sliding_window_shapes=(3, 15, 15), baselines=0)
    ours = measure(lambda: Occlusion(model).attribute(x, **kwargs))
    windows = 28 * 28
    floor = windows * _best_forward_seconds(model, x)
    label = "Occlusion floor (a best-batch forward/window)"
    lines = [f"{label:<44} {floor:7.2f} s; ours takes x{ours.seconds / floor:.2f} of it"]
    for per_eval in (1, 8):
        theirs = measure(lambda: CaptumOcclusion(model).attribute(x, perturbations_per_eval=per_eval, **kwargs))
        label = "default call" if per_eval == 1 else f"perturbations_per_eval={per_eval}"
        lines.append(row(f"Occlusion 15x15/8 vs captum {label}", ours, theirs))
        lines.append(f"{'':<44} max relative difference {max_rel_diff(ours.result, theirs.result):.1e}")
    return lines


def bench_feature_ablation() -> list[str]:
    """FeatureAblation with 16x16-pixel superpixels (196 features) at 224x224, the setting of issue 6."""
    from captum.attr import FeatureAblation as CaptumFeatureAblation

    from attribution import FeatureAblation

    model, x, target = resnet()
    cells = torch.arange(14 * 14).view(14, 14).repeat_interleave(16, 0).repeat_interleave(16, 1)
    mask = cells[None, None]  # one mask for the batch and the channels
    ours = measure(lambda: FeatureAblation(model).attribute(x, target=target, feature_mask=mask))
    lines = []
    for per_eval in (1, 8, 16):
        theirs = measure(
            lambda: CaptumFeatureAblation(model).attribute(
                x, target=target, feature_mask=mask, perturbations_per_eval=per_eval
            )
        )
        label = "default call" if per_eval == 1 else f"perturbations_per_eval={per_eval}"
        lines.append(row(f"FeatureAblation 196 superpixels vs {label}", ours, theirs))
    lines.append(f"{'':<44} max relative difference {max_rel_diff(ours.result, theirs.result):.1e}")
    return lines


def _best_forward_seconds(model, x) -> float:
    """Per-image forward time at the best of a few batch sizes and layouts (inference mode)."""
    best = float("inf")
    with torch.inference_mode():
        for batch in (1, 4, 8, 16):
            for layout in (torch.contiguous_format, torch.channels_last):
                xb = x.expand(batch, *x.shape[1:]).contiguous(memory_format=layout)
                model(xb)
                best = min(best, measure(lambda: model(xb), repeats=3).seconds / batch)
    return best


BENCHES = {
    "integrated_gradients": bench_integrated_gradients,
    "occlusion": bench_occlusion,
    "feature_ablation": bench_feature_ablation,
    "metrics": bench_metrics,
    "faithfulness": bench_faithfulness,
    "surrogate": bench_surrogate,
    "lrp": bench_lrp,
    "influence": bench_influence,
    "influence_monitor": bench_influence_monitor,
    "tcav": bench_tcav,
    "llm": bench_llm,
    "robust": bench_robust,
    "lrp_zennit": bench_lrp_zennit,
    "monitor": bench_monitor,
    "monitor_sensitivity": bench_sensitivity,
    "log_size": bench_log_size,
    "monitor_cost": bench_monitor_cost,
    "images_tab": bench_images_tab,
    "compiled": bench_compiled,
    "contended": functools.partial(bench_contended, ["integrated_gradients_50", "occlusion"], rounds=1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these benchmarks")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.only or BENCHES:
        for line in BENCHES[name]():
            print(line, flush=True)


if __name__ == "__main__":
    main()
