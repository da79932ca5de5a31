"""Tests for lightning_xai._draw.timeline: size for TensorBoard's card, steps and epochs over the columns, point
subsampling, missing metric values, pyplot untouched, argument checks."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lightning_xai._compute import heat as _heat  # noqa: E402
from lightning_xai._compute.history import Point  # noqa: E402
from lightning_xai._draw import curves as _curves  # noqa: E402
from lightning_xai._draw import render as _render  # noqa: E402
from lightning_xai._draw.timeline import COLUMNS, column_heads, timeline_image  # noqa: E402

CARD_WIDTH = 350
"""TensorBoard's default image card, CSS pixels (measured in Chromium with scripts/screenshots)."""


def _inputs(samples: int, points: int, signed: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[Point]]:
    images = torch.rand(samples, 3, 32, 32)
    thumbnails = (torch.rand(points, samples, 32, 32) * (2 if signed else 1) - (1 if signed else 0)).half()
    return images, thumbnails, [Point(step=5 * i, epoch=i // 2) for i in range(points)]


def _texts(lines) -> list[str]:
    return [line if isinstance(line, str) else line[0] for line in lines]


def test_image_fits_the_card_and_grows_with_samples_and_curves():
    images, thumbnails, points = _inputs(3, 4)
    curves = {"infidelity": [0.4, 0.3, 0.2, 0.1], "sensitivity": [0.1, 0.2, 0.2, 0.3]}
    image = timeline_image("saliency", images, thumbnails, points, curves)
    assert image.dim() == 3 and image.shape[0] == 3 and image.dtype == torch.uint8
    assert image.min() < 64 and image.max() == 255  # bytes: dark ink on white
    assert 4 * _heat.THUMBNAIL < image.shape[2] <= CARD_WIDTH  # input + 4 points of 64 pixels, shown unshrunk
    bare = timeline_image("saliency", images, thumbnails, points, {})
    more = timeline_image("saliency", torch.rand(5, 3, 32, 32), torch.rand(4, 5, 16, 16).half(), points, {})
    assert bare.shape[2] == image.shape[2] and bare.shape[1] < image.shape[1] < 10 * image.shape[2]
    assert more.shape[1] - bare.shape[1] == 2 * (_heat.THUMBNAIL + _render.LINE + _render.PAD)  # a row a sample


def test_columns_show_steps_and_epochs_and_many_points_are_subsampled_keeping_first_and_last():
    images, thumbnails, points = _inputs(2, 30)
    steps, epochs = column_heads(points[:3])
    assert _texts(steps) == ["input", "step 0", "step 5", "step 10"]
    assert _texts(epochs) == ["", "epoch 0", "epoch 0", "epoch 1"]
    picked = _render.pick(len(points), COLUMNS)
    assert len(picked) == COLUMNS and picked[0] == 0 and picked[-1] == 29 and picked == sorted(set(picked))
    wide = timeline_image("occlusion", images, thumbnails, points, {})
    few = timeline_image("occlusion", images, thumbnails[:4], points[:4], {})
    assert wide.shape == few.shape  # at most COLUMNS points, however many were logged


def test_missing_values_are_bridged_and_all_none_curves_skipped():
    images, thumbnails, points = _inputs(2, 3)
    curves = {"infidelity": [None, 0.2, None], "mass": [None, None, None], "delta": [0.1, None, 0.3]}
    image = timeline_image("ig", images, thumbnails, points, curves)
    two = timeline_image("ig", images, thumbnails, points, {"infidelity": curves["infidelity"], "delta": [0, 1, 2]})
    assert image.shape == two.shape  # the all-None curve took no room


def _line_columns(panel) -> set[int]:
    """The columns of a curve panel where the line's colour is."""
    return set(
        torch.from_numpy(panel).eq(torch.tensor(_curves.LINE_COLOUR)).all(-1).any(0).nonzero().flatten().tolist()
    )


def test_curves_bridge_missing_values_and_span_every_logged_step():
    steps = [0, 100, 200]
    lone = _line_columns(_curves.curve_plot("infidelity", steps, [None, 0.2, None], 172))
    bridged = _line_columns(_curves.curve_plot("delta", steps, [0.1, None, 0.3], 172))
    empty = _line_columns(_curves.curve_plot("mass", steps, [None, None, None], 172))
    assert empty == set() and 1 <= len(lone) <= 4  # one dot
    middle = (_curves.LEFT + 172 - 16) // 2  # the x of step 100: the axis spans all logged steps
    assert min(lone) <= middle <= max(lone)
    assert set(range(min(bridged) + 2, max(bridged) - 2)) <= bridged  # a line through the missing middle
    image = _curves.curves_image(steps, {"a": [0.1, 0.2, 0.3], "b": [1, 2, 3], "c": [3, 2, 1]}, 344)
    assert image.shape == (3, 2 * _curves.HEIGHT, 344) and image.dtype == torch.uint8  # two plots a row


def test_round_axis_values():
    assert _curves._round_values(0.35, 0.58) == pytest.approx([0.4, 0.5])
    assert _curves._round_values(-0.5, 1880.5) == pytest.approx([0, 1000])
    assert _curves._round_values(0.0, 0.02) == pytest.approx([0, 0.01, 0.02])


def test_single_point_and_unsigned_maps_render():
    images, thumbnails, points = _inputs(1, 1, signed=False)
    image = timeline_image("layer_gradcam", images, thumbnails, points, {"infidelity": [0.2]})
    assert image.shape[0] == 3 and image.shape[2] <= CARD_WIDTH


def test_pyplot_registry_untouched():
    before = plt.get_fignums()
    images, thumbnails, points = _inputs(2, 3)
    timeline_image("ig", images, thumbnails, points, {"infidelity": [0.3, 0.2, 0.1]})
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": torch.rand(2, 1, 32, 32)}, "images"),
        ({"thumbnails": torch.rand(3, 5, 16, 16)}, "thumbnails"),
        ({"points": [Point(0, 0), Point(1, 0)]}, "points"),
        ({"curves": {"infidelity": [0.1]}}, "infidelity"),
        ({"max_columns": 1}, "max_columns"),
        ({"row_labels": ["only one"]}, "row_labels"),
    ],
)
def test_inconsistent_arguments_raise(change, message):
    images, thumbnails, points = _inputs(2, 3)
    arguments = {"images": images, "thumbnails": thumbnails, "points": points, "curves": {}} | change
    with pytest.raises(ValueError, match=message):
        timeline_image("ig", **arguments)
