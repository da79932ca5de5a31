"""The probe in chunks and, under DDP, shared out among processes: the same maps and metrics as one process."""

import glob
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor
from lightning_xai._compute.shards import Shards, chunk_size
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("ddp_monitor_script.py")


def _one_epoch(root, callbacks, n_val=16, **options):
    """A one-batch epoch of ShapesNet with ``callbacks`` under ``root``."""
    settings = {"logger": False, "enable_progress_bar": False, "limit_val_batches": 1, **options}
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        default_root_dir=root,
        callbacks=callbacks,
        enable_model_summary=False,
        enable_checkpointing=False,
        **settings,
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=16, n_val=n_val, size=16))
    return trainer


def _fit(root, **options):
    warnings.filterwarnings("ignore")
    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(num_probe_samples=7, every_n_epochs=None, **options)
    _one_epoch(root, [monitor])
    return monitor, torch.load(root / "xai" / "maps_step_0000000.pt")


def _metrics(monitor):
    return {r["method"]: r["metrics"] for r in monitor.history}


def test_shares_cover_the_probe_once_in_order_and_differ_by_one_chunk_at_most():
    for total, size, world in [(7, 2, 2), (8, 3, 3), (5, 1, 4), (3, 2, 4), (200, 16, 3)]:
        shares = [Shards(total, size, rank, world).local for rank in range(world)]
        covered = [i for share in shares for chunk in share for i in range(chunk.start, chunk.stop)]
        assert covered == list(range(total))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        assert all(chunk.stop - chunk.start <= size for share in shares for chunk in share)


def test_default_chunk_is_a_share_per_process_cut_to_the_memory_budget():
    assert chunk_size(None, 8, 1, per_example_bytes=10, budget=1000) == 8
    assert chunk_size(None, 9, 2, per_example_bytes=10, budget=1000) == 5
    assert chunk_size(None, 300, 1, per_example_bytes=10, budget=1000) == 100  # a large probe: memory decides
    assert chunk_size(None, 300, 1, per_example_bytes=10**9, budget=1000) == 1
    assert chunk_size(4, 300, 2, per_example_bytes=10**9, budget=1000) == 4  # asked for: as asked
    assert chunk_size(40, 6, 1, per_example_bytes=10, budget=1000) == 6


def test_deterministic_maps_and_metrics_do_not_depend_on_the_chunks(tmp_path):
    methods = ["integrated_gradients", "occlusion", "saliency"]
    whole, whole_maps = _fit(tmp_path / "whole", methods=methods, metrics=())
    chunked, chunked_maps = _fit(tmp_path / "chunked", methods=methods, metrics=(), probe_chunk_size=3)
    assert chunked._chunk_size == 3 and whole._chunk_size == 7
    assert set(whole_maps) == set(methods) | {"layer_gradcam"}
    for name, maps in whole_maps.items():
        assert maps.shape[0] == 7
        torch.testing.assert_close(chunked_maps[name].float(), maps.float(), rtol=0.01, atol=1e-6)
    for name, values in _metrics(whole).items():
        assert _metrics(chunked)[name] == pytest.approx(values, rel=1e-4, abs=1e-7)


def test_noisy_maps_and_metrics_are_the_same_for_the_same_chunks(tmp_path):
    options = {"methods": ["gradient_shap", "integrated_gradients"], "metrics": ("infidelity", "sensitivity")}
    first, first_maps = _fit(tmp_path / "a", probe_chunk_size=2, **options)
    second, second_maps = _fit(tmp_path / "b", probe_chunk_size=2, **options)
    other, other_maps = _fit(tmp_path / "c", probe_chunk_size=4, **options)
    for name in first_maps:
        assert torch.equal(first_maps[name], second_maps[name])
    assert _metrics(first) == _metrics(second)
    assert not torch.equal(first_maps["gradient_shap"], other_maps["gradient_shap"])  # noise is drawn per chunk
    assert set(_metrics(first)["integrated_gradients"]) >= {"infidelity", "sensitivity", "convergence_delta"}


def _script(root, devices, chunk=None):
    command = [sys.executable, str(SCRIPT), str(root), str(devices)] + ([str(chunk)] if chunk else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((root / "logs" / "version_0" / "xai" / "manifest.json").read_text())
    return manifest, [int((root / f"rank{r}_examples.txt").read_text()) for r in range(devices)]


def _image_steps(root, tag):
    steps = []
    for path in sorted(glob.glob(str(root / "logs" / "version_0" / "events.out.tfevents.*"))):
        events = EventAccumulator(path, size_guidance={"images": 0})
        events.Reload()
        steps += [e.step for e in events.Images(tag)] if tag in events.Tags()["images"] else []
    return steps


@pytest.mark.skipif(os.environ.get("LIGHTNING_XAI_SKIP_DDP") == "1", reason="DDP test disabled")
def test_ddp_processes_share_the_probe_log_once_resume_and_match_one_process(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp_manifest, seen = _script(ddp, 2)  # by default the 6 examples are cut in two chunks of 3, one a process
    single_manifest, (seen_alone,) = _script(single, 1, 3)
    assert seen[0] == seen[1] < 0.6 * seen_alone  # each process ran the model on its half of the probe only

    maps = torch.load(ddp / "logs" / "version_0" / "xai" / "maps_step_0000000.pt")
    alone = torch.load(single / "logs" / "version_0" / "xai" / "maps_step_0000000.pt")
    assert set(maps) == {"integrated_gradients", "gradient_shap", "occlusion", "layer_gradcam"}
    for name in maps:  # the untrained model: the same weights in both runs
        assert maps[name].shape[0] == 6
        torch.testing.assert_close(maps[name].float(), alone[name].float(), rtol=0.01, atol=1e-6)
    at_start = lambda manifest: {r["method"]: r["metrics"] for r in manifest if r["step"] == 0}  # noqa: E731
    for name, values in at_start(single_manifest).items():
        assert at_start(ddp_manifest)[name] == pytest.approx(values, rel=1e-3, abs=1e-6)

    steps = sorted({r["step"] for r in ddp_manifest})
    assert len(steps) == 3 and steps[0] == 0  # the start, the first epoch and the resumed second: nothing twice
    assert len(ddp_manifest) == 3 * 4
    assert _image_steps(ddp, "xai_per_step/integrated_gradients") == steps  # logged by one process only


def test_a_long_explanation_shows_a_bar_of_the_trainers_progress_bar(tmp_path, monkeypatch, capsys):
    from lightning_xai._compute import progress as _progress

    monkeypatch.setattr(_progress, "SHOW_AFTER", 0.0)  # every explanation counts as long
    monkeypatch.setattr(_progress, "_is_terminal", lambda stream: True)  # captured output stands for a terminal
    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(["saliency", "occlusion"], num_probe_samples=4, probe_chunk_size=1, metrics=())
    _one_epoch(tmp_path, [monitor, TQDMProgressBar()], enable_progress_bar=True)
    shown = capsys.readouterr().out
    assert "Explaining the probe at step 0 (epoch 0)" in shown  # drawn by Lightning's tqdm bar, on stdout
    assert "12/12" in shown  # 3 methods (GradCAM too) x 4 chunks


def test_the_bar_is_a_task_of_lightnings_rich_progress_bar_while_it_runs(tmp_path, monkeypatch):
    pytest.importorskip("rich")
    from lightning_xai._compute import progress as _progress

    monkeypatch.setattr(_progress, "SHOW_AFTER", 0.0)
    seen = []

    class During(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            progress = _progress.TrainerProgress(trainer, "Explaining the probe")
            progress.start(3)
            progress.advance()
            tasks = trainer.progress_bar_callback.progress.tasks
            seen.append([(t.description, t.completed, t.total) for t in tasks if t.description.startswith("Expl")])
            progress.close()
            seen.append([t.description for t in trainer.progress_bar_callback.progress.tasks])

    _one_epoch(tmp_path, [During(), RichProgressBar()], enable_progress_bar=True, limit_val_batches=0)
    assert seen[0] == [("Explaining the probe", 1, 3)]
    assert "Explaining the probe" not in seen[1]  # removed when done


def test_a_large_probe_is_chunked_to_the_memory_budget(tmp_path, monkeypatch):
    from lightning_xai._compute import shards as _shards

    monkeypatch.setattr(_shards, "memory_budget", lambda device: 1)  # nothing fits: one example a chunk
    monitor, maps = _fit(tmp_path, methods=["saliency"], metrics=())
    assert monitor._chunk_size == 1
    assert maps["saliency"].shape[0] == 7


def test_a_large_probe_shows_a_fixed_subset_and_measures_all_of_it(tmp_path):
    from attribution.metrics import mass_in_mask

    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(
        ["saliency"], gradcam=False, num_probe_samples=40, display_samples=6, metrics=(), probe_chunk_size=16
    )
    _one_epoch(tmp_path, [monitor], n_val=64, logger=TensorBoardLogger(tmp_path, name="logs", version=0))
    probe, shown = monitor.probe, monitor._visuals.shown
    assert len(probe) == 40 and len(shown) == 6
    assert sorted(probe.labels[shown].tolist()) == [0, 0, 1, 1, 2, 2]  # every class, in turn
    events = EventAccumulator(glob.glob(str(tmp_path / "logs" / "version_0" / "events.*"))[0], {"images": 0})
    events.Reload()
    strips = {tag for tag in events.Tags()["images"] if tag.startswith("xai_per_sample/")}
    assert strips == {f"xai_per_sample/saliency/sample_{i}" for i in shown}
    assert all(t.shape[0] == 6 for t in monitor._history.thumbnails["saliency"].values())

    xai = tmp_path / "logs" / "version_0" / "xai"
    maps = torch.load(xai / "maps_step_0000000.pt")["saliency"].float()
    assert maps.shape[0] == 40  # every example explained and saved
    logged = monitor.value("saliency", "mass_in_mask", 0)
    assert logged == pytest.approx(float(mass_in_mask(maps, probe.masks).mean()), rel=0.01)
