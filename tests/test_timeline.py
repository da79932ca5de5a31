"""Tests for lightning_xai._timeline: layout, epoch subsampling, missing metric values, pyplot untouched."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lightning_xai._render import figure_to_tensor  # noqa: E402
from lightning_xai._timeline import save_timeline, timeline_figure  # noqa: E402


def _inputs(samples: int, epochs: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(samples, 3, 32, 32)
    thumbnails = torch.rand(epochs, samples, 16, 16).half()
    return images, thumbnails


def _image_axes(figure):
    return [axes for axes in figure.axes if axes.images]


def _curve_axes(figure):
    return [axes for axes in figure.axes if axes.lines]


def _epoch_titles(figure) -> list[str]:
    """Column labels of the mosaic (one image axes for the whole grid)."""
    (mosaic,) = _image_axes(figure)
    return [label.get_text() for label in mosaic.get_xticklabels() if label.get_text().startswith("epoch")]


def _rows(figure) -> int:
    (mosaic,) = _image_axes(figure)
    return len(mosaic.get_yticks())


def test_layout_titles_tensor_and_png(tmp_path):
    images, thumbnails = _inputs(3, 4)
    curves = {"infidelity": [0.4, 0.3, 0.2, 0.1], "sensitivity": [0.1, 0.2, 0.2, 0.3]}
    figure = timeline_figure("saliency", images, thumbnails, [0, 2, 4, 6], curves)
    assert _rows(figure) == 3
    assert sorted(axes.get_title() for axes in _curve_axes(figure)) == ["infidelity", "sensitivity"]
    assert len(figure.axes) == 1 + 2
    assert _epoch_titles(figure) == ["epoch 0", "epoch 2", "epoch 4", "epoch 6"]
    assert figure.get_suptitle() == "saliency"

    rendered = figure_to_tensor(figure)
    assert rendered.dim() == 3 and rendered.shape[0] == 3 and min(rendered.shape[1:]) > 100
    assert rendered.dtype == torch.float32 and 0 <= rendered.min() and rendered.max() <= 1

    path = save_timeline(figure, tmp_path / "nested" / "timeline.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1024


def test_many_epochs_are_subsampled_keeping_first_and_last():
    images, thumbnails = _inputs(2, 30)
    epochs = list(range(1, 60, 2))
    figure = timeline_figure("occlusion", images, thumbnails, epochs, {}, max_columns=12)
    titles = _epoch_titles(figure)
    shown = [int(title.split()[1]) for title in titles]
    assert len(shown) == 12 and len(set(shown)) == 12
    assert shown[0] == epochs[0] and shown[-1] == epochs[-1] and shown == sorted(shown)
    assert _rows(figure) == 2 and len(_epoch_titles(figure)) == 12 and not _curve_axes(figure)
    width, height = figure.get_size_inches()
    assert width <= 20 and height <= 24


def test_large_grid_stays_within_size_cap():
    images, thumbnails = _inputs(16, 2)
    figure = timeline_figure("ig", images, thumbnails, [0, 1], {"infidelity": [0.2, 0.1]})
    width, height = figure.get_size_inches()
    assert width <= 20 and height <= 24


def test_missing_values_and_all_none_curves():
    images, thumbnails = _inputs(2, 3)
    curves = {"infidelity": [None, 0.2, None], "mass": [None, None, None], "delta": [0.1, None, 0.3]}
    figure = timeline_figure("ig", images, thumbnails, [0, 1, 2], curves)
    assert sorted(axes.get_title() for axes in _curve_axes(figure)) == ["delta", "infidelity"]
    assert figure_to_tensor(figure).shape[0] == 3


def test_single_epoch_renders():
    images, thumbnails = _inputs(1, 1)
    figure = timeline_figure("ig", images, thumbnails, [5], {"infidelity": [0.2]})
    assert _epoch_titles(figure) == ["epoch 5"]
    assert figure_to_tensor(figure).shape[0] == 3


def test_pyplot_registry_untouched(tmp_path):
    before = plt.get_fignums()
    images, thumbnails = _inputs(2, 3)
    figure = timeline_figure("ig", images, thumbnails, [0, 1, 2], {"infidelity": [0.3, 0.2, 0.1]})
    figure_to_tensor(figure)
    save_timeline(figure, tmp_path / "t.png")
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": torch.rand(2, 1, 32, 32)}, "images"),
        ({"thumbnails": torch.rand(3, 5, 16, 16)}, "thumbnails"),
        ({"epochs": [0, 1]}, "epochs"),
        ({"curves": {"infidelity": [0.1]}}, "infidelity"),
        ({"max_columns": 1}, "max_columns"),
    ],
)
def test_inconsistent_arguments_raise(change, message):
    images, thumbnails = _inputs(2, 3)
    arguments = {"images": images, "thumbnails": thumbnails, "epochs": [0, 1, 2], "curves": {}} | change
    with pytest.raises(ValueError, match=message):
        timeline_figure("ig", **arguments)
