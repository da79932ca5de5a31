"""The monitor's byte budget per point: filmstrips every few points, small maps files, thinned old maps."""

import glob
import io
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor
from lightning_xai._compute.history import kept_points
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow

POINTS = 14  # the untrained model and 13 one-batch epochs


def _fit(tmp_path, monitor, epochs=POINTS - 1, size=16):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="logs", version=0),
        callbacks=[monitor],
        max_epochs=epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = ShapesDataModule(n_train=32, n_val=16, size=size, batch_size=16)
    trainer.fit(ShapesNet(), datamodule=data)
    return trainer


def _events(tmp_path):
    (path,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def _manifest(tmp_path):
    return json.loads((tmp_path / "logs" / "version_0" / "xai" / "manifest.json").read_text())


def _monitor(**kwargs):
    return AttributionMonitor(["saliency"], num_probe_samples=4, gradcam=False, on_error="raise", **kwargs)


def test_filmstrips_every_n_points_and_at_the_end_grids_at_every_point(tmp_path):
    _fit(tmp_path, _monitor(filmstrip_every=5))
    events = _events(tmp_path)
    steps = [s.step for s in events.Scalars("xai/saliency/infidelity")]
    assert steps == list(range(POINTS))  # one optimizer step per epoch
    for i in range(4):
        strips = [image.step for image in events.Images(f"xai_per_sample/saliency/sample_{i}")]
        assert strips == [0, 5, 10, 13]  # the 1st, 6th and 11th point, and the last
    assert [image.step for image in events.Images("xai_per_step/saliency")] == steps


def test_event_bytes_per_point_do_not_grow_with_the_run(tmp_path):
    """Runs of 11, 21 and 31 points: the 10 points from 21 to 31 cost what the 10 from 11 to 21 did."""
    sizes = {}
    for points in (11, 21, 31):  # each 10 more points and one more filmstrip write (at the 21st, the 31st)
        _fit(tmp_path / str(points), _monitor(filmstrip_every=10), epochs=points - 1)
        (path,) = glob.glob(str(tmp_path / str(points) / "logs" / "version_0" / "events.out.tfevents.*"))
        xai = tmp_path / str(points) / "logs" / "version_0" / "xai"
        sizes[points] = (Path(path).stat().st_size, sum(p.stat().st_size for p in xai.glob("maps_step_*.pt")))
    earlier, later = (sizes[21][0] - sizes[11][0]), (sizes[31][0] - sizes[21][0])
    assert abs(later - earlier) < 0.1 * earlier, sizes
    # Maps: a kept file more (the 16th point) from 11 to 21, none from 21 to 31 (the 32nd comes later).
    assert sizes[21][1] - sizes[11][1] > 0 and sizes[31][1] == sizes[21][1], sizes


def test_maps_are_thinned_log_spaced_and_the_manifest_says_so(tmp_path):
    _fit(tmp_path, _monitor())
    manifest = _manifest(tmp_path)
    assert [r["step"] for r in manifest] == list(range(POINTS))  # every point's metrics stay
    assert all("infidelity" in r["metrics"] for r in manifest)
    kept = [r["step"] for r in manifest if r["maps"] is not None]
    assert kept == [0, 1, 3, 7, 11, 12, 13] == kept_points(POINTS)
    xai = tmp_path / "logs" / "version_0" / "xai"
    assert sorted(p.name for p in xai.glob("maps_step_*.pt")) == [f"maps_step_{s:07d}.pt" for s in kept]
    for record in manifest:
        if record["maps"] is None:
            assert "maps_thinned" in record and "1st, 2nd, 4th" in record["maps_thinned"]


def test_reference_step_keeps_its_maps_and_thin_maps_false_keeps_all(tmp_path):
    _fit(tmp_path / "pinned", _monitor(reference=5))
    assert [r["step"] for r in _manifest(tmp_path / "pinned") if r["maps"]] == [0, 1, 3, 5, 7, 11, 12, 13]
    _fit(tmp_path / "all", _monitor(thin_maps=False), epochs=4)
    assert [r["step"] for r in _manifest(tmp_path / "all") if r["maps"]] == [0, 1, 2, 3, 4]


def test_maps_are_channel_summed_at_display_size_unless_full_resolution(tmp_path):
    """A 200 px probe: the stored maps are the overlays' 160 px, one channel, the same total attribution."""
    monitor = _monitor()
    _fit(tmp_path / "small", monitor, epochs=1, size=200)
    full = _monitor(full_resolution_maps=True)
    _fit(tmp_path / "full", full, epochs=1, size=200)
    small = torch.load(tmp_path / "small" / "logs" / "version_0" / "xai" / "maps_step_0000001.pt", weights_only=True)
    large = torch.load(tmp_path / "full" / "logs" / "version_0" / "xai" / "maps_step_0000001.pt", weights_only=True)
    assert small["saliency"].shape == (4, 1, 160, 160) and small["saliency"].dtype == torch.bfloat16
    assert large["saliency"].shape == (4, 3, 200, 200)
    summed = large["saliency"].float().sum(dim=(1, 2, 3))
    torch.testing.assert_close(small["saliency"].float().sum(dim=(1, 2, 3)), summed, rtol=0.02, atol=1e-6)
    # A probe at display size is only summed over channels.
    _fit(tmp_path / "16", _monitor(full_resolution_maps=False), epochs=1)
    maps = torch.load(tmp_path / "16" / "logs" / "version_0" / "xai" / "maps_step_0000001.pt", weights_only=True)
    assert maps["saliency"].shape == (4, 1, 16, 16)


def _seen(data):
    """The image as the eye takes it in: the mean of each 4x4 block (JPEG drops the pixel noise of a
    photograph, which is most of what a PNG of one stores)."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    height, width = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    return pixels[:height, :width].reshape(height // 4, 4, width // 4, 4, 3).mean(axis=(1, 3))


def test_photographs_are_jpeg_in_tensorboard_looking_as_the_png_does(tmp_path):
    """A 128 px probe: by default every image is JPEG, within a few grey levels of the PNG that
    ``image_format="png"`` writes for the same fit, in a fraction of its bytes; a 16 px probe stays PNG."""
    _fit(tmp_path / "auto", _monitor(), epochs=1, size=128)
    _fit(tmp_path / "png", _monitor(image_format="png"), epochs=1, size=128)
    jpeg, png = _events(tmp_path / "auto"), _events(tmp_path / "png")
    tags = jpeg.Tags()["images"]
    assert tags == png.Tags()["images"] and "xai_per_step/saliency" in tags and "xai_overview/saliency" in tags
    jpeg_bytes = png_bytes = 0
    for tag in tags:
        for lossy, exact in zip(jpeg.Images(tag), png.Images(tag)):
            assert lossy.encoded_image_string[:2] == b"\xff\xd8", tag  # JPEG's start-of-image marker
            assert exact.encoded_image_string[:4] == b"\x89PNG", tag
            difference = np.abs(_seen(lossy.encoded_image_string) - _seen(exact.encoded_image_string))
            assert difference.mean() < 1.0 and np.percentile(difference, 99) < 6, (tag, difference.mean())
            jpeg_bytes += len(lossy.encoded_image_string)
            png_bytes += len(exact.encoded_image_string)
    assert jpeg_bytes < png_bytes / 2, (jpeg_bytes, png_bytes)
    _fit(tmp_path / "16", _monitor(), epochs=1)
    small = _events(tmp_path / "16").Images("xai_per_step/saliency")
    assert all(image.encoded_image_string[:4] == b"\x89PNG" for image in small)


def test_a_tight_time_budget_lowers_the_options_logs_the_cost_and_a_resume_keeps_them(tmp_path):
    methods = ["integrated_gradients", "occlusion"]
    monitor = AttributionMonitor(methods, num_probe_samples=4, gradcam=False, time_budget=1e-6)
    with pytest.warns(UserWarning, match="over time_budget=1e-06 s even with the fewest steps"):
        trainer = _fit(tmp_path / "tight", monitor, epochs=3)
    floor = {
        "integrated_gradients": {"n_steps": 4},
        "occlusion": {"sliding_window_shapes": (3, 4, 4), "strides": (3, 4, 4)},  # 16 px // 4 windows per side
    }
    assert monitor.state_dict()["budgeted_options"] == floor
    events = _events(tmp_path / "tight")
    seconds, shares = events.Scalars("xai/seconds"), events.Scalars("xai/share_of_time")
    assert [s.step for s in seconds] == [0, 1, 2, 3] and all(s.value > 0 for s in seconds)
    assert [s.step for s in shares] == [1, 2, 3] and all(0 < s.value <= 1 for s in shares)
    # A resumed run explains with the options it started with, whatever its own budget.
    checkpoint = tmp_path / "tight.ckpt"
    trainer.save_checkpoint(checkpoint)
    resumed = AttributionMonitor(methods, num_probe_samples=4, gradcam=False, time_budget=1000.0)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="resumed", version=0),
        callbacks=[resumed],
        max_epochs=4,
        limit_train_batches=1,
        limit_val_batches=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = ShapesDataModule(n_train=32, n_val=16, size=16, batch_size=16)
    trainer.fit(ShapesNet(), datamodule=data, ckpt_path=checkpoint)
    assert resumed.state_dict()["budgeted_options"] == floor
    # An ample budget keeps the registry's probe options: nothing to scale.
    roomy = AttributionMonitor(methods, num_probe_samples=4, gradcam=False, time_budget=1000.0)
    _fit(tmp_path / "roomy", roomy, epochs=1)
    assert roomy.state_dict()["budgeted_options"] == {
        "integrated_gradients": {"n_steps": 16},
        "occlusion": {"sliding_window_shapes": (3, 2, 2), "strides": (3, 2, 2)},
    }


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("filmstrip_every", 0),
        ("filmstrip_every", 2.5),
        ("thin_maps", "yes"),
        ("full_resolution_maps", 1),
        ("image_format", "webp"),
        ("time_budget", 0),
        ("time_budget", float("inf")),
        ("time_budget", "10s"),
    ],
)
def test_budget_arguments_are_checked(argument, value):
    with pytest.raises(MisconfigurationException, match=argument):
        AttributionMonitor(**{argument: value})
