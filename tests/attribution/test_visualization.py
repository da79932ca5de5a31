"""Tests for attribution.visualization: a render matrix, normalization oracles, Captum parity."""

import inspect
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from attribution import visualization as viz  # noqa: E402

METHODS = ["heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling"]
SIGNS = ["all", "positive", "negative", "absolute_value"]
H, W = 6, 5


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def attr() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(H, W, 3))


def _image(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "rgb":
        return rng.uniform(size=(H, W, 3))
    if kind == "gray":
        return rng.uniform(size=(H, W))
    return rng.integers(0, 256, size=(H, W, 1), dtype=np.uint8)  # "gray_uint8"


# --- every method x sign renders ----------------------------------------------------------------


@pytest.mark.parametrize("show_colorbar", [False, True])
@pytest.mark.parametrize("image_kind", ["rgb", "gray", "gray_uint8"])
@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_sign_renders(attr, method, sign, image_kind, show_colorbar):
    fig, ax = viz.visualize_image_attr(
        attr,
        _image(image_kind),
        method,
        sign,
        show_colorbar=show_colorbar,
        title="t",
        fig_size=(2, 2),
        use_pyplot=False,
    )
    fig.canvas.draw()  # the real render: catches bad image data, not just bad calls
    assert isinstance(fig, Figure) and isinstance(ax, Axes)
    assert ax.get_title() == "t" and ax.get_xticks().size == 0 and ax.get_yticks().size == 0
    assert len(ax.images) == (2 if method == "blended_heat_map" else 1)
    assert len(fig.axes) == (2 if show_colorbar else 1)


def test_enum_arguments_no_image_and_single_channel_attr(attr):
    _, ax = viz.visualize_image_attr(
        attr, None, viz.ImageVisualizationMethod.heat_map, viz.VisualizeSign.all, use_pyplot=False
    )
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    _, ax = viz.visualize_image_attr(attr.sum(axis=2), _image("gray"), "masked_image", use_pyplot=False)
    expected = _image("gray") * viz.normalize_attr(attr, "absolute_value")
    np.testing.assert_allclose(ax.images[0].get_array(), expected)


@pytest.mark.parametrize(
    "sign, cmap_name, clim",
    [("positive", "Greens", (0, 1)), ("negative", "Reds", (0, 1)), ("absolute_value", "Blues", (0, 1))],
)
def test_default_colormaps(attr, sign, cmap_name, clim):
    _, ax = viz.visualize_image_attr(attr, method="heat_map", sign=sign, use_pyplot=False)
    assert ax.images[0].get_cmap().name == cmap_name and ax.images[0].get_clim() == clim


def test_masked_and_alpha_images_use_the_normalized_magnitude(attr):
    image = _image("rgb")
    weight = np.abs(viz.normalize_attr(attr, "all"))
    _, ax = viz.visualize_image_attr(attr, image, "masked_image", "all", use_pyplot=False)
    np.testing.assert_allclose(ax.images[0].get_array(), image * weight[..., None])
    _, ax = viz.visualize_image_attr(attr, image, "alpha_scaling", "all", use_pyplot=False)
    rgba = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(rgba[..., :3], image)
    np.testing.assert_allclose(rgba[..., 3], weight)


def test_uint8_gray_image_is_scaled_and_shown_in_gray(attr):
    image = _image("gray_uint8")
    _, ax = viz.visualize_image_attr(attr, image, "original_image", use_pyplot=False)
    np.testing.assert_allclose(ax.images[0].get_array(), image[..., 0] / 255.0)
    assert ax.images[0].get_cmap().name == "gray"


def test_blended_heat_map_overlays_with_alpha(attr):
    _, ax = viz.visualize_image_attr(
        attr, _image("rgb"), "blended_heat_map", "positive", alpha_overlay=0.3, use_pyplot=False
    )
    background, heat = ax.images
    np.testing.assert_allclose(background.get_array(), _image("rgb").mean(axis=2))
    assert heat.get_alpha() == 0.3


def test_draws_into_given_axes(attr):
    fig, ax = plt.subplots()
    out = viz.visualize_image_attr(attr, _image("rgb"), "blended_heat_map", plt_fig_axis=(fig, ax))
    assert out == (fig, ax) and len(ax.images) == 2


# --- normalize_attr oracles ---------------------------------------------------------------------


def test_all_with_no_outliers_divides_by_max_magnitude():
    attr = np.array([[1.0, -4.0], [2.0, 0.5]])
    np.testing.assert_allclose(viz.normalize_attr(attr, "all", outlier_perc=0), attr / 4.0)


def test_channels_are_summed():
    attr = np.stack([np.array([[1.0, -2.0]]), np.array([[3.0, -6.0]])], axis=2)  # 1x2x2, sums [4, -8]
    np.testing.assert_allclose(viz.normalize_attr(attr, "all", outlier_perc=0), [[0.5, -1.0]])
    chw = attr.transpose(2, 0, 1)
    np.testing.assert_allclose(viz.normalize_attr(chw, "all", 0, reduction_axis=0), [[0.5, -1.0]])


def test_positive_drops_negatives_and_negative_gives_their_magnitudes():
    attr = np.array([[2.0, -1.0], [-4.0, 1.0]])
    np.testing.assert_allclose(viz.normalize_attr(attr, "positive", 0), [[1.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(viz.normalize_attr(attr, "negative", 0), [[0.0, 0.25], [1.0, 0.0]])
    np.testing.assert_allclose(viz.normalize_attr(attr, "absolute_value", 0), np.abs(attr) / 4.0)


def test_cumulative_mass_threshold_by_hand():
    # [1, 1, 1, 97]: total 100, kept share 98; cumulative sums 1, 2, 3, 100 first reach 98 at 97.
    np.testing.assert_allclose(viz.normalize_attr(np.array([[1.0, 1, 1, 97]]), "all"), [[1 / 97] * 3 + [1.0]])
    # [1, 2, 3, 4] at 50%: total 10, target 5; cumulative 1, 3, 6 reaches it at 3, so 4 clips to 1.
    norm = viz.normalize_attr(np.array([[4.0, -3.0], [2.0, 1.0]]), "all", outlier_perc=50)
    np.testing.assert_allclose(norm, [[1.0, -1.0], [2 / 3, 1 / 3]])


@pytest.mark.parametrize("sign, value", [("all", 0.0), ("positive", -1.0), ("negative", 1.0), ("absolute_value", 0.0)])
def test_map_with_nothing_kept_gives_zeros_and_warns(sign, value):
    attr = np.full((3, 3), value)
    with pytest.warns(UserWarning, match=f"zero for sign '{sign}'"):
        norm = viz.normalize_attr(attr, sign)
    assert norm.shape == (3, 3) and not norm.any()


def test_original_image_does_not_warn_about_a_zero_attr():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        viz.visualize_image_attr(np.zeros((H, W, 3)), _image("rgb"), "original_image", use_pyplot=False)


def _captum_normalize(attr: np.ndarray, sign: str, outlier_perc: float) -> np.ndarray:
    captum_viz = pytest.importorskip("captum.attr._utils.visualization")
    normalize = captum_viz._normalize_attr
    if "reduction_axis" in inspect.signature(normalize).parameters:  # captum < 0.8 reduces inside
        return normalize(attr, sign, outlier_perc, reduction_axis=2)
    return normalize(attr.sum(axis=2), sign, outlier_perc)


@pytest.mark.parametrize("outlier_perc", [0, 2, 25])
@pytest.mark.parametrize("sign", SIGNS)
def test_parity_with_captum_normalize_attr(sign, outlier_perc):
    attr = np.random.default_rng(outlier_perc).normal(size=(16, 12, 3))
    np.testing.assert_allclose(
        viz.normalize_attr(attr, sign, outlier_perc), _captum_normalize(attr, sign, outlier_perc), atol=1e-12
    )


# --- visualize_image_attr_multiple --------------------------------------------------------------


def test_multiple_with_the_article_calls(attr):
    fig, axes = viz.visualize_image_attr_multiple(
        attr,
        _image("rgb"),
        ["original_image", "heat_map", "heat_map", "masked_image"],
        ["all", "positive", "negative", "positive"],
        titles=["Original", "Positive", "Negative", "Masked"],
        fig_size=(18, 6),
        show_colorbar=True,
        use_pyplot=True,
    )
    fig.canvas.draw()
    assert len(axes) == 4 and all(isinstance(ax, Axes) for ax in axes)
    assert [ax.get_title() for ax in axes] == ["Original", "Positive", "Negative", "Masked"]
    assert tuple(fig.get_size_inches()) == (18, 6)
    assert len(fig.axes) == 8  # one colorbar slot per panel, hidden where there is no heat map


def test_multiple_single_panel_still_returns_an_array(attr):
    _, axes = viz.visualize_image_attr_multiple(attr, None, ["heat_map"], ["all"], use_pyplot=False)
    assert isinstance(axes, np.ndarray) and axes.shape == (1,)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "heatmap"}, ValueError, "heat_map.*alpha_scaling"),
        ({"sign": "both"}, ValueError, "absolute_value"),
        ({"outlier_perc": 100}, ValueError, r"outlier_perc: expected a number in \[0, 100\)"),
        ({"outlier_perc": -1}, ValueError, "outlier_perc"),
        ({"alpha_overlay": 1.5}, ValueError, "alpha_overlay"),
        ({"cmap": "not_a_cmap"}, ValueError, "not_a_cmap"),
        ({"cmap": 3}, TypeError, "cmap"),
    ],
)
def test_bad_options(attr, kwargs, error, match):
    before = plt.get_fignums()
    with pytest.raises(error, match=match):
        viz.visualize_image_attr(attr, _image("rgb"), **{"method": "blended_heat_map", **kwargs})
    assert plt.get_fignums() == before  # validation happens before any figure exists


def test_torch_tensors_are_rejected_with_a_conversion_hint(attr):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"attr: .*torch.Tensor.*detach\(\)\.cpu\(\)\.numpy\(\)"):
        viz.visualize_image_attr(torch.from_numpy(attr), use_pyplot=False)
    with pytest.raises(TypeError, match="original_image"):
        viz.visualize_image_attr(attr, torch.rand(H, W, 3), "blended_heat_map", use_pyplot=False)
    with pytest.raises(TypeError, match="attr"):
        viz.normalize_attr(torch.from_numpy(attr), "all")


def test_mismatched_shapes_name_both(attr):
    with pytest.raises(ValueError, match=r"attr \(6, 5, 3\) and original_image \(5, 6, 3\)"):
        viz.visualize_image_attr(attr, np.zeros((W, H, 3)), "blended_heat_map", use_pyplot=False)


@pytest.mark.parametrize("method", METHODS[1:])
def test_missing_original_image(attr, method):
    with pytest.raises(ValueError, match=f"original_image: required by method '{method}'"):
        viz.visualize_image_attr(attr, None, method, use_pyplot=False)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.full((H, W, 3), 2.0), r"floats in \[0, 1\]"),
        (np.full((H, W, 3), 300), r"integers in \[0, 255\]"),
        (np.zeros((H, W, 4)), "HxWx3"),
        (np.zeros((H, W, 3), dtype=bool), "dtype bool"),
    ],
)
def test_bad_images(attr, image, match):
    with pytest.raises((ValueError, TypeError), match=match):
        viz.visualize_image_attr(attr, image, "original_image", use_pyplot=False)


def test_bad_attrs():
    with pytest.raises(ValueError, match="channels-first"):
        viz.visualize_image_attr(np.zeros((3, 32, 32)), use_pyplot=False)
    with pytest.raises(ValueError, match="finite"):
        viz.normalize_attr(np.full((2, 2), np.nan), "all")
    with pytest.raises(ValueError, match="HxW or HxWxC"):
        viz.normalize_attr(np.zeros((2, 2, 2, 2)), "all")


def test_multiple_bad_arguments(attr):
    image = _image("rgb")
    with pytest.raises(ValueError, match="methods and signs.*2 methods and 1 signs"):
        viz.visualize_image_attr_multiple(attr, image, ["heat_map", "heat_map"], ["all"])
    with pytest.raises(ValueError, match="titles"):
        viz.visualize_image_attr_multiple(attr, image, ["heat_map"], ["all"], titles=["a", "b"])
    with pytest.raises(TypeError, match="methods: expected a list"):
        viz.visualize_image_attr_multiple(attr, image, "heat_map", ["all"])
    with pytest.raises(TypeError, match="colour"):
        viz.visualize_image_attr_multiple(attr, image, ["heat_map"], ["all"], colour="red")
    with pytest.raises(ValueError, match="sign"):
        viz.visualize_image_attr_multiple(attr, image, ["heat_map", "heat_map"], ["all", "bad"])
    assert plt.get_fignums() == []


# --- pyplot state --------------------------------------------------------------------------------


def test_use_pyplot_false_registers_no_figure(attr):
    before = plt.get_fignums()
    viz.visualize_image_attr(attr, _image("rgb"), "blended_heat_map", use_pyplot=False)
    viz.visualize_image_attr_multiple(attr, _image("rgb"), METHODS, SIGNS + ["all"], use_pyplot=False)
    assert plt.get_fignums() == before


def test_use_pyplot_true_under_agg_registers_a_figure_without_warnings(attr):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plt.show() under Agg would warn
        fig, _ = viz.visualize_image_attr(attr, _image("rgb"), "heat_map", "all")
    assert plt.get_fignums() == [fig.number]
