"""The images the monitor logs: tile sizes, labels, colour scales, filmstrip frames, tag order; and a real
monitored fit read back with TensorBoard's own EventAccumulator."""

import glob

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor
from lightning_xai._compute import heat as _heat
from lightning_xai._compute.history import History, Point
from lightning_xai._config import tags as _tags
from lightning_xai._config.probe import Probe
from lightning_xai._draw import render as _render
from lightning_xai._draw.visuals import Visuals
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

CARD_WIDTH = _render.CARD_WIDTH


class _Recorder:
    """A writer that keeps the images by tag."""

    enabled = True

    def __init__(self):
        self.images = {}
        self.lossy = {}

    def image(self, tag, image, step, file_name=None, caption=None, lossy=False):
        self.images[tag] = image
        self.lossy[tag] = lossy


def _visuals(size=8, samples=3, labels=True, class_names=("cat", "dog", "owl")):
    probe = Probe(torch.rand(samples, 3, size, size), torch.arange(samples) % 3 if labels else None)
    return Visuals(probe, class_names=class_names)


def _history(visuals, steps, signed=True):
    history, count = History(), len(visuals.probe)
    side = min(visuals.probe.inputs.shape[-1], _heat.THUMBNAIL)
    for k, step in enumerate(steps):
        history.points.append(Point(step, k))
        history.targets[step] = torch.arange(count) % 3
        history.predictions[step] = torch.zeros(count, dtype=torch.long)
        maps = torch.rand(count, side, side) * (2 if signed else 1) - (1 if signed else 0)
        history.thumbnails.setdefault("saliency", {})[step] = maps.half()
    return history


def _tile(size: int) -> int:
    return _render.tile_size(size, size)[0]


@pytest.mark.parametrize("shape", [(4, 4), (8, 8), (28, 28), (32, 32), (16, 48), (100, 300), (224, 224), (600, 1000)])
def test_tiles_are_at_least_128_pixels_on_their_short_side(shape):
    height, width = _render.tile_size(*shape)
    assert _render.TILE_SIDE <= min(height, width) <= max(_render.TILE_MAX_SIDE, min(shape))
    assert abs(height / width - shape[0] / shape[1]) < 0.02  # aspect kept
    factor = -(-_render.TILE_SIDE // min(shape))
    if min(shape) < _render.TILE_SIDE and factor * min(shape) <= _render.TILE_MAX_SIDE:  # 4x4 ... 80x80
        assert (height, width) == (factor * shape[0], factor * shape[1])  # a whole-number enlargement


def test_small_inputs_are_enlarged_by_nearest_neighbour():
    images = torch.rand(2, 3, 16, 16)
    tiles = _render.display_pixels(images)  # (N, H, W, 3) uint8
    assert tiles.shape == (2, 128, 128, 3)
    blocks = torch.from_numpy(tiles).view(2, 16, 8, 16, 8, 3)
    assert (blocks == blocks[:, :, :1, :, :1]).all()  # each input pixel is an 8x8 block


@pytest.mark.parametrize("size", [8, 32, 100, 300])
def test_grids_keep_tiles_whole_and_two_a_row_for_tiny_and_large_inputs(size):
    visuals = _visuals(size=size, samples=5)
    heat = _heat.heat(torch.randn(5, 3, size, size))
    image = visuals.grid("saliency", heat, Point(3, 1), torch.arange(5) % 3, torch.zeros(5, dtype=torch.long))
    tile = _tile(size)
    assert tile >= _render.TILE_SIDE
    assert image.shape[2] == _render.PER_ROW * tile + (_render.PER_ROW + 1) * _render.PAD
    assert image.shape[1] > 3 * tile  # three rows for five samples
    assert image.shape[2] <= CARD_WIDTH  # the card shows it at (more than) its own size, text unshrunk


def test_captions_name_the_true_class_the_prediction_and_what_is_explained():
    visuals = _visuals()
    right, wrong, other = visuals.caption(1, 1, 1), visuals.caption(1, 0, 1), visuals.caption(2, 0, 1)
    assert right == ["#1  true: dog", ("pred: dog", _render.RIGHT)]
    assert wrong == ["#1  true: dog", ("pred: cat", _render.WRONG)]  # the label is explained: no third line
    assert other == ["#2  true: owl", ("pred: cat", _render.WRONG), ("explains: dog", _render.MUTED)]
    unnamed = _visuals(labels=False, class_names=None)
    assert unnamed.caption(0, 2, 2) == ["#0", ("pred: class 2", _render.INK)]
    assert visuals.caption(0, prefix="input") == ["input #0  true: cat"]
    masks = Visuals(Probe(torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)))  # not class labels
    assert masks.caption(1, 0, 0) == ["#1", ("pred: class 0", _render.INK)]


def test_labels_are_drawn_below_the_tiles():
    images = torch.zeros(2, 3, 32, 32)  # black tiles: every non-white pixel below them is text
    bare = _render.sheet(images)
    labelled = _render.sheet(images, [["#0  true: cat", ("pred: dog", _render.WRONG)], ["#1"]]).float() / 255
    assert bare.dtype == torch.uint8  # bytes straight to the PNG encoder
    tile = _tile(32)
    assert labelled.shape[1] == bare.shape[1] + 2 * _render.LINE
    band = labelled[:, _render.PAD + tile : _render.PAD + tile + 2 * _render.LINE]
    left, right = band[..., : _render.PAD + tile], band[..., _render.PAD + tile :]
    assert (left < 0.5).any(dim=0).sum() > 100 and (right < 0.5).any(dim=0).sum() > 10  # dark ink
    red = (band[0] > 0.6) & (band[1] < 0.3)
    assert red[_render.LINE :].any() and not red[: _render.LINE].any()  # the wrong prediction, in red, second line


def test_signed_maps_keep_their_sign_on_one_scale_unsigned_maps_use_a_sequential_map():
    attributions = torch.zeros(2, 3, 10, 10)
    attributions[0, :, :5] = 1.0
    attributions[1, :, 5:] = -2.0
    signed = _heat.heat(attributions)
    assert signed.signed and signed.scale == pytest.approx(6.0)  # channels summed with their sign; one scale
    assert signed.maps[0, 0, 0] == pytest.approx(0.5) and signed.maps[1, 9, 9] == pytest.approx(-1.0)
    unsigned = _heat.heat(attributions.abs(), size=(20, 20))
    assert not unsigned.signed and unsigned.maps.shape == (2, 20, 20) and unsigned.maps.min() >= 0
    assert _render.Legend(True, "6", "").ends == ("-6", "+6") and _render.Legend(False, "6", "").ends == ("0", "6")
    low, zero, high = _render.colorize(torch.tensor([[[-1.0, 0.0, 1.0]]]), signed=True)[0, :, 0].T  # RGB each
    assert low[2] > low[0] + 0.2 and high[0] > high[2] + 0.2 and zero.min() > 0.9  # blue, white, red
    dark, bright = _render.colorize(torch.tensor([[[0.0, 1.0]]]), signed=False)[0, :, 0].T
    assert dark.max() < 0.1 and bright.min() > 0.5  # black to light yellow


def test_the_legend_bar_matches_the_sign():
    tiles = torch.ones(1, 3, 32, 32)
    for signed in (True, False):
        image = _render.sheet(tiles, legend=_render.Legend(signed, "0.5", "meaning")).float() / 255
        bar = image[:, _render.PAD + 2, _render.PAD : -_render.PAD]  # the bar's middle row
        low, high = bar[:, 0], bar[:, -1]
        assert high[0] > high[2] + 0.2  # the top end: red (signed) or light yellow
        assert low[2] > low[0] + 0.2 if signed else low.max() < 0.1  # the bottom end: blue, or black


def test_sparse_and_empty_maps_get_a_finite_scale():
    sparse = torch.zeros(1, 1, 20, 20)
    sparse[0, 0, 3, 4] = 5.0  # one pixel in 400: the 99th percentile is zero
    heat = _heat.heat(sparse)
    assert heat.scale == 5.0 and heat.maps.max() == 1.0
    empty = _heat.heat(torch.zeros(2, 1, 8, 8))
    assert empty.scale == 1.0 and not empty.signed and torch.isfinite(empty.maps).all()


def test_thumbnails_stay_small():
    heat = _heat.heat(torch.randn(3, 3, 224, 224))
    thumbnail = _heat.thumbnail(heat)
    assert thumbnail.dtype == torch.float16 and max(thumbnail.shape[-2:]) <= _heat.THUMBNAIL


def test_filmstrips_show_at_most_max_frames_evenly_spaced_with_the_first_and_the_latest():
    picked = _render.pick(40, _render.MAX_FRAMES)
    assert len(picked) == _render.MAX_FRAMES and picked[0] == 0 and picked[-1] == 39 and picked == sorted(set(picked))
    heights = {}
    for points in (3, _render.MAX_FRAMES, 40):
        visuals = _visuals(size=32, samples=2)
        writer = _Recorder()
        visuals.filmstrips(writer, _history(visuals, list(range(0, 7 * points, 7))), step=7 * points)
        image = writer.images[_tags.filmstrip_tag("saliency", 1)]
        assert image.shape[2] <= CARD_WIDTH
        heights[points] = image.shape[1]
    rows = lambda frames: -(-(frames + 1) // _render.PER_ROW)  # the input, then the frames
    cell = _tile(32) + 2 * _render.LINE + _render.PAD  # a frame says its step and epoch, then the prediction
    assert heights[40] == heights[_render.MAX_FRAMES]  # capped
    assert heights[40] - heights[3] == (rows(_render.MAX_FRAMES) - rows(3)) * cell


def test_filmstrip_frames_drawn_once_equal_frames_drawn_afresh_and_only_shown_frames_are_kept():
    visuals = _visuals(size=32, samples=2)
    full = _history(visuals, list(range(0, 7 * 12, 7)))
    for count in range(1, 13):
        history = History()
        history.points = full.points[:count]
        steps = [p.step for p in history.points]
        history.targets = {s: full.targets[s] for s in steps}
        history.predictions = {s: full.predictions[s] for s in steps}
        history.thumbnails = {"saliency": {s: full.thumbnails["saliency"][s] for s in steps}}
        kept, fresh = _Recorder(), _Recorder()
        visuals.filmstrips(kept, history, steps[-1])
        Visuals(visuals.probe, class_names=("cat", "dog", "owl")).filmstrips(fresh, history, steps[-1])
        assert kept.images.keys() == fresh.images.keys()
        assert all(torch.equal(kept.images[tag], fresh.images[tag]) for tag in kept.images)
        assert len(visuals._frames._drawn) == min(count, _render.MAX_FRAMES)


def test_image_groups_sort_overview_first_and_apart_from_the_scalars():
    tags = [
        _tags.text_tag("layer_integrated_gradients"),
        _tags.PROBE_IMAGE,
        _tags.grid_tag("integrated_gradients"),
        _tags.filmstrip_tag("integrated_gradients", 10),
        _tags.filmstrip_tag("integrated_gradients", 2),
        _tags.timeline_tag("occlusion"),
    ]
    groups = [tag.split("/")[0] for tag in sorted(tags)]  # TensorBoard orders groups by their sorted tags
    assert list(dict.fromkeys(groups)) == list(_tags.IMAGE_GROUPS)
    assert _tags.PREFIX not in _tags.IMAGE_GROUPS


@pytest.mark.slow
def test_a_monitored_fit_logs_readable_images_at_the_global_step(tmp_path):
    size = 16
    monitor = AttributionMonitor(["saliency"], num_probe_samples=3, class_names=["square", "circle", "triangle"])
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=2,
        logger=TensorBoardLogger(tmp_path, name="logs", version=0),
        callbacks=[monitor],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=128, n_val=32, size=size, batch_size=64))
    (path,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    steps = [p.step for p in monitor.points]
    tile = _tile(size)
    for method in ("saliency", "layer_gradcam"):
        grids = events.Images(_tags.grid_tag(method))
        assert [e.step for e in grids] == steps
        assert grids[-1].width == _render.PER_ROW * tile + (_render.PER_ROW + 1) * _render.PAD <= CARD_WIDTH
        strips = events.Images(_tags.filmstrip_tag(method, 2))
        assert [e.step for e in strips] == [steps[0], steps[-1]]  # every 10th point (the 1st) and the last
        assert strips[-1].height > strips[0].height
        (timeline,) = events.Images(_tags.timeline_tag(method))
        assert timeline.step == steps[-1] and timeline.width <= CARD_WIDTH
    assert _tags.PROBE_IMAGE in tags
    assert {tag.split("/")[0] for tag in tags} == {_tags.OVERVIEW, _tags.PER_SAMPLE, _tags.PER_STEP}


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("kind", ["noise", "enlarged", "one_pixel_wide"])
def test_png_encoding_round_trips(dtype, kind):
    import io

    import numpy as np
    from PIL import Image

    from lightning_xai._write.picture import _encode_png

    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8)
    if kind == "enlarged":  # repeated rows and pixels: the filters' zero runs
        image = image[:, :9, :13].repeat_interleave(4, 1).repeat_interleave(4, 2)
        image[:, :5] = 255  # a white band, as under the captions
    elif kind == "one_pixel_wide":
        image = image[:, :, :1]
    given = image if dtype == torch.uint8 else image.float() / 255
    decoded = np.asarray(Image.open(io.BytesIO(_encode_png(given))).convert("RGB"))
    assert decoded.shape == image.permute(1, 2, 0).shape and (decoded == image.permute(1, 2, 0).numpy()).all()


def _centroid(maps):
    rows = torch.arange(maps.shape[-2]).float().view(-1, 1)
    cols = torch.arange(maps.shape[-1]).float().view(1, -1)
    total = maps.sum((-2, -1))
    return torch.stack([(maps * rows).sum((-2, -1)) / total, (maps * cols).sum((-2, -1)) / total], -1)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_a_coarse_layer_map_is_drawn_where_its_units_look(factor):
    """GradCAM's map of a stride-``factor`` layer, upsampled to the image, keeps the object's centre: a unit
    covering input pixels [f*i, f*i + f) is drawn around their centre, not shifted by half a unit."""
    mask = torch.zeros(1, 32, 32)
    mask[0, 5:13, 18:26] = 1.0  # an object on the unit grid of every factor
    units = torch.nn.functional.avg_pool2d(mask[:, None], factor)  # what a stride-f layer's units see of it
    drawn = _heat.heat(units, size=(32, 32)).maps
    torch.testing.assert_close(_centroid(drawn), _centroid(mask), atol=0.3, rtol=0)
