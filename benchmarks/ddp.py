"""The monitor's time per process with the probe shared out among 1 and 2 DDP processes (CPU, gloo).

    python -m benchmarks.ddp

Fits ShapesNet for one short epoch with an AttributionMonitor (integrated gradients, occlusion, GradCAM,
infidelity) explaining a probe of 32 images of 64x64 before the first step and at the epoch end, once in one
process and once in two. Each process reports the seconds spent in the monitor's hooks; with two
processes each explains half of the probe (it still runs the probe's scores and renders nothing but on
rank zero), so its time should fall towards half. On this 2-core machine the single process runs with
both cores (2 threads) and with one; each of the two processes has one.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

PROBE = 32
SIZE = 64


def _worker(devices: int, threads: int, out: Path) -> None:
    import lightning as L
    import torch

    from benchmarks.monitor import _timed
    from lightning_xai import AttributionMonitor
    from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    L.seed_everything(0, verbose=False)
    torch.set_num_threads(threads)  # (DDP on CPU sets each process's share again at setup)
    monitor = _timed(
        AttributionMonitor(["integrated_gradients", "occlusion"], num_probe_samples=PROBE, on_error="raise")
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        default_root_dir=out,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=64, n_val=64, size=SIZE))
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"seconds": monitor.seconds}))


def _per_process(devices: int, threads: int) -> list[float]:
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "benchmarks.ddp", "--worker", str(devices), str(threads), root]
        subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        return [json.loads((Path(root) / f"rank{r}.json").read_text())["seconds"] for r in range(devices)]


RUNS = {"1 process, 2 threads": (1, 2), "1 process, 1 thread": (1, 1), "2 processes, 1 thread each": (2, 1)}


def bench_ddp(repeats: int = 2) -> list[str]:
    best: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleaved, best of the repeats per configuration
        for name, (devices, threads) in RUNS.items():
            seconds = _per_process(devices, threads)
            if name not in best or max(seconds) < max(best[name]):
                best[name] = seconds
    lines = [f"monitor hooks per process, probe of {PROBE} (2 points):"]
    lines += [f"  {name}: {' / '.join(f'{s:.2f}' for s in best[name])} s" for name in RUNS]
    two = max(best["2 processes, 1 thread each"])
    for name in list(RUNS)[:2]:
        one = best[name][0]
        lines.append(f"2 processes against {name}: {one / two:.2f}x faster per process (slowest rank)")
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        print("\n".join(bench_ddp()))
