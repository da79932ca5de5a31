"""The monitor's time per process with the probe shared out among 1 and 2 DDP processes (CPU, gloo).

    python -m benchmarks.ddp

Fits ShapesNet for one short epoch with an AttributionMonitor (integrated gradients, occlusion, GradCAM,
infidelity) explaining a probe of 32 examples before the first step and at the epoch end, once in one
process and once in two. Each process reports the seconds spent in the monitor's hooks; with two
processes each explains half of the probe (it still runs the probe's scores and renders nothing but on
rank zero), so its time should fall towards half. On this 2-core machine the single process gets both
cores (2 threads) and each of the two processes one.
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


def _worker(devices: int, out: Path) -> None:
    import lightning as L

    from benchmarks.monitor import _timed
    from lightning_xai import AttributionMonitor
    from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    L.seed_everything(0, verbose=False)
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
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=64, n_val=64, size=32))
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"seconds": monitor.seconds}))


def _per_process(devices: int) -> list[float]:
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "benchmarks.ddp", "--worker", str(devices), root]
        subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        return [json.loads((Path(root) / f"rank{r}.json").read_text())["seconds"] for r in range(devices)]


def bench_ddp(repeats: int = 2) -> list[str]:
    best: dict[int, list[float]] = {}
    for _ in range(repeats):  # interleaved, best of the repeats per process count
        for devices in (1, 2):
            seconds = _per_process(devices)
            if devices not in best or max(seconds) < max(best[devices]):
                best[devices] = seconds
    one, two = best[1][0], max(best[2])
    return [
        f"monitor hooks per process, probe of {PROBE}: 1 process {one:.2f} s; "
        f"2 processes {' / '.join(f'{s:.2f}' for s in best[2])} s (ranks 0 / 1)",
        f"per-process time with 2 processes: {two / one:.2f}x of one process's ({one / two:.2f}x faster)",
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        print("\n".join(bench_ddp()))
