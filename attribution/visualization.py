"""Matplotlib rendering of image attributions, with a Captum-compatible API.

Inputs are numpy arrays in HWC layout. They are checked and converted once, at the
public entry points; the drawing helpers only see a map normalized by
:func:`normalize_attr` and a float image in ``[0, 1]`` (HxW gray or HxWx3 RGB).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

__all__ = [
    "ImageVisualizationMethod",
    "VisualizeSign",
    "normalize_attr",
    "visualize_image_attr",
    "visualize_image_attr_multiple",
]


class ImageVisualizationMethod(Enum):
    """How an attribution is drawn; see :func:`visualize_image_attr`."""

    heat_map = "heat_map"
    blended_heat_map = "blended_heat_map"
    original_image = "original_image"
    masked_image = "masked_image"
    alpha_scaling = "alpha_scaling"


class VisualizeSign(Enum):
    """Which part of a signed attribution is kept; see :func:`normalize_attr`."""

    all = "all"
    positive = "positive"
    negative = "negative"
    absolute_value = "absolute_value"


_E = TypeVar("_E", bound=Enum)
_PANEL_OPTIONS = ("outlier_perc", "cmap", "alpha_overlay", "show_colorbar")
_UNSIGNED_CMAPS = {"positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}
# matplotlib's file backends; plt.show() under them only warns that it cannot show anything.
_NON_INTERACTIVE_BACKENDS = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})


def _parse_choice(value: Any, choices: type[_E], name: str) -> _E:
    if isinstance(value, choices):
        return value
    check_choice(value, name, choices.__members__)
    return choices[value]


def _as_numpy(array: Any, name: str) -> np.ndarray:
    # Checked by module name so that this file never has to import torch.
    if type(array).__module__.split(".")[0] == "torch":
        raise ArgumentTypeError(
            f"{name}: expected a numpy array in HWC layout, got a torch.Tensor; convert it with "
            f"`{name}.detach().cpu().numpy()` and move channels last (`.transpose(1, 2, 0)` for CHW)"
        )
    if not isinstance(array, np.ndarray):
        raise ArgumentTypeError(f"{name}: expected a numpy.ndarray, got {type(array).__name__}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ArgumentTypeError(f"{name}: expected integer or float values, got dtype {array.dtype}")
    return array


def _check_range(value: Any, name: str, high: float, high_inclusive: bool) -> None:
    """Raise unless ``value`` is a real number in ``[0, high]`` (or ``[0, high)``)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not (0 <= value and (value <= high if high_inclusive else value < high)):
        bracket = "]" if high_inclusive else ")"
        raise ArgumentError(f"{name}: expected a number in [0, {high:g}{bracket}, got {value!r}")


def _cumulative_mass_threshold(magnitudes: np.ndarray, outlier_perc: float) -> float:
    # The smallest value at which the ascending cumulative sum reaches the kept share
    # of the total mass; the few largest values above it are outliers clipped to 1.
    values = np.sort(magnitudes, axis=None)
    cumulative = np.cumsum(values)
    target = cumulative[-1] * (100.0 - outlier_perc) / 100.0
    return float(values[np.searchsorted(cumulative, target, side="left")])


def normalize_attr(
    attr: np.ndarray, sign: str | VisualizeSign, outlier_perc: float = 2, reduction_axis: int | None = 2
) -> np.ndarray:
    """Reduce an attribution to a 2-D map scaled into ``[-1, 1]`` (``[0, 1]`` unless ``sign="all"``).

    The kept values are divided by the value at which the ascending cumulative sum of
    their magnitudes reaches ``100 - outlier_perc`` percent of the total, then clipped,
    so that a few extreme pixels do not wash out the rest of the map.

    Args:
        attr: HxW map, or HxWxC attribution that is summed over ``reduction_axis``.
        sign: ``"all"`` keeps signed values, ``"positive"`` values > 0, ``"negative"``
            the magnitudes of values < 0, ``"absolute_value"`` all magnitudes.
        outlier_perc: Share of the attribution mass, in ``[0, 100)``, clipped as outliers.
        reduction_axis: Channel axis summed out of a 3-D ``attr``; ``None`` requires 2-D.

    Returns:
        A float64 HxW array; all zeros, with a warning, if the sign keeps nothing.

    Raises:
        TypeError: ``attr`` is a torch tensor or not a numeric numpy array.
        ValueError: Unknown ``sign``, ``outlier_perc`` out of range, or an empty,
            non-finite or wrongly shaped ``attr``.

    Example:
        >>> normalize_attr(np.array([[1.0, -2.0], [0.5, 4.0]]), "all", outlier_perc=0)
        array([[ 0.25 , -0.5  ],
               [ 0.125,  1.   ]])
    """
    attr = _as_numpy(attr, "attr").astype(np.float64)  # sums of ints or float16 could overflow
    sign = _parse_choice(sign, VisualizeSign, "sign")
    _check_range(outlier_perc, "outlier_perc", 100, high_inclusive=False)
    if attr.size == 0 or not np.all(np.isfinite(attr)):
        raise ArgumentError(f"attr: expected a non-empty array of finite values, got shape {attr.shape}")
    if attr.ndim == 3 and reduction_axis is not None:
        attr = attr.sum(axis=reduction_axis)
    if attr.ndim != 2:
        raise ArgumentError(f"attr: expected an HxW or HxWxC array, got shape {attr.shape}")
    if sign is VisualizeSign.all:
        kept = attr
    elif sign is VisualizeSign.positive:
        kept = np.where(attr > 0, attr, 0.0)
    elif sign is VisualizeSign.negative:
        kept = np.where(attr < 0, -attr, 0.0)
    else:
        kept = np.abs(attr)
    if not np.any(kept):
        warnings.warn(f"The attribution is zero for sign {sign.name!r}; returning an all-zero map.", stacklevel=2)
        return np.zeros_like(kept)
    # Some mass is kept and outlier_perc < 100, so the threshold is strictly positive.
    return np.clip(kept / _cumulative_mass_threshold(np.abs(kept), outlier_perc), -1.0, 1.0)


def _prepare_inputs(attr: Any, original_image: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate both arrays; return attr and the image as float HxW or HxWx3 in [0, 1]."""
    attr = _as_numpy(attr, "attr")
    if attr.ndim == 3 and attr.shape[0] in (1, 3) and attr.shape[2] not in (1, 3):
        raise ArgumentError(f"attr: expected HxWxC, got channels-first shape {attr.shape}; use attr.transpose(1, 2, 0)")
    if original_image is None:
        return attr, None
    image = _as_numpy(original_image, "original_image")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ArgumentError(f"original_image: expected shape HxW, HxWx1 or HxWx3, got {image.shape}")
    if image.shape[:2] != attr.shape[:2]:
        raise ArgumentError(
            f"attr and original_image: expected the same height and width, "
            f"got attr {attr.shape} and original_image {image.shape}"
        )
    if np.issubdtype(image.dtype, np.integer):
        scale, slack, expected = 255.0, 0.0, "integers in [0, 255]"
    else:  # a small slack absorbs rounding from upstream transforms
        scale, slack, expected = 1.0, 1e-6, "floats in [0, 1] (uint8 for 0-255 data; undo mean/std first)"
    if not np.all((image >= -slack) & (image <= scale + slack)):
        raise ArgumentError(f"original_image: expected {expected}, got range [{image.min()}, {image.max()}]")
    image = np.clip(image.astype(np.float64) / scale, 0.0, 1.0)
    return attr, image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image


@dataclass(frozen=True)
class _Panel:
    method: ImageVisualizationMethod
    norm: np.ndarray
    cmap: Colormap
    vmin: float  # vmax is always 1
    alpha_overlay: float


def _prepare_panel(
    attr: np.ndarray,
    image: np.ndarray | None,
    method: Any,
    sign: Any,
    outlier_perc: float = 2,
    cmap: str | Colormap | None = None,
    alpha_overlay: float = 0.5,
) -> _Panel:
    """Validate one panel's options and normalize its map, before any figure exists."""
    import matplotlib
    from matplotlib.colors import Colormap, LinearSegmentedColormap

    method = _parse_choice(method, ImageVisualizationMethod, "method")
    sign = _parse_choice(sign, VisualizeSign, "sign")
    _check_range(outlier_perc, "outlier_perc", 100, high_inclusive=False)
    _check_range(alpha_overlay, "alpha_overlay", 1, high_inclusive=True)
    if image is None and method is not ImageVisualizationMethod.heat_map:
        raise ArgumentError(f"original_image: required by method {method.name!r}, got None")
    if cmap is None and sign is VisualizeSign.all:
        cmap = LinearSegmentedColormap.from_list("red_white_green", ["red", "white", "green"])
    elif cmap is None:
        cmap = matplotlib.colormaps[_UNSIGNED_CMAPS[sign.name]]
    elif isinstance(cmap, str):
        if cmap not in matplotlib.colormaps:
            raise ArgumentError(f"cmap: expected a name in matplotlib.colormaps, got {cmap!r}")
        cmap = matplotlib.colormaps[cmap]
    elif not isinstance(cmap, Colormap):
        raise ArgumentTypeError(f"cmap: expected a colormap name or a Colormap, got {type(cmap).__name__}")
    if method is ImageVisualizationMethod.original_image:
        norm = np.zeros(attr.shape[:2])  # attr is not drawn, so do not warn about its sign
    else:
        norm = normalize_attr(attr, sign, outlier_perc)
    return _Panel(method, norm, cmap, -1.0 if sign is VisualizeSign.all else 0.0, float(alpha_overlay))


def _show_image(ax: Axes, image: np.ndarray) -> None:
    # Gray needs an explicit colormap and range, or matplotlib applies viridis and autoscales.
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image)


def _draw(ax: Axes, panel: _Panel, image: np.ndarray | None) -> AxesImage | None:
    """Draw one panel; return the image a colorbar should describe, if there is one."""
    method = panel.method
    if method is ImageVisualizationMethod.heat_map or image is None:
        return ax.imshow(panel.norm, cmap=panel.cmap, vmin=panel.vmin, vmax=1.0)
    if method is ImageVisualizationMethod.blended_heat_map:
        ax.imshow(image if image.ndim == 2 else image.mean(axis=2), cmap="gray", vmin=0.0, vmax=1.0)
        return ax.imshow(panel.norm, alpha=panel.alpha_overlay, cmap=panel.cmap, vmin=panel.vmin, vmax=1.0)
    weight = np.abs(panel.norm)  # masks and alphas live in [0, 1]: sign "all" uses the magnitude
    if method is ImageVisualizationMethod.original_image:
        _show_image(ax, image)
    elif method is ImageVisualizationMethod.masked_image:
        _show_image(ax, image * (weight if image.ndim == 2 else weight[..., None]))
    else:
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        ax.imshow(np.dstack([rgb, weight]))
    return None


def _render(
    fig: Figure, ax: Axes, panel: _Panel, image: np.ndarray | None, show_colorbar: bool, title: str | None
) -> None:
    mappable = _draw(ax, panel, image)
    ax.set_xticks([])
    ax.set_yticks([])
    if show_colorbar:
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        cax = make_axes_locatable(ax).append_axes("bottom", size="5%", pad=0.1)
        if mappable is None:
            cax.axis("off")  # an empty slot keeps the panels of a row the same height
        else:
            fig.colorbar(mappable, cax=cax, orientation="horizontal")
    if title:
        ax.set_title(title)


def _new_figure(fig_size: tuple[float, float], use_pyplot: bool, ncols: int) -> tuple[Figure, np.ndarray]:
    if use_pyplot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, ncols, figsize=fig_size, squeeze=False)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=fig_size)  # not registered with pyplot: no global state touched
        axes = fig.subplots(1, ncols, squeeze=False)
    return fig, axes[0]


def _show_if_interactive() -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    if matplotlib.get_backend().lower() not in _NON_INTERACTIVE_BACKENDS:
        plt.show()


def visualize_image_attr(
    attr: np.ndarray,
    original_image: np.ndarray | None = None,
    method: str | ImageVisualizationMethod = "heat_map",
    sign: str | VisualizeSign = "absolute_value",
    plt_fig_axis: tuple[Figure, Axes] | None = None,
    outlier_perc: float = 2,
    cmap: str | Colormap | None = None,
    alpha_overlay: float = 0.5,
    show_colorbar: bool = False,
    title: str | None = None,
    fig_size: tuple[float, float] = (6, 6),
    use_pyplot: bool = True,
) -> tuple[Figure, Axes]:
    """Draw an image attribution with one visualization method.

    Every method works with every sign: ``masked_image`` and ``alpha_scaling`` need a weight
    in ``[0, 1]``, so with sign ``"all"`` they use the magnitude of the normalized signed map.

    Args:
        attr: HxWxC (summed over channels) or HxW numpy attribution, channels last.
        original_image: HxW, HxWx1 or HxWx3 image, floats in ``[0, 1]`` or integers in
            ``[0, 255]``; required by every method except ``"heat_map"``.
        method: ``"heat_map"``; ``"blended_heat_map"`` (heat map at ``alpha_overlay`` over
            the grayscale image); ``"original_image"`` (attr ignored); ``"masked_image"``
            (image times the map); ``"alpha_scaling"`` (the map as the image's alpha).
        sign: ``"all"``, ``"positive"``, ``"negative"`` or ``"absolute_value"``.
        plt_fig_axis: ``(figure, axes)`` to draw into instead of a new figure.
        outlier_perc: Share of the attribution mass, in ``[0, 100)``, clipped as outliers.
        cmap: Heat map colormap; defaults to red-white-green on ``[-1, 1]`` for ``"all"``,
            else ``"Greens"``, ``"Reds"`` or ``"Blues"`` on ``[0, 1]``.
        alpha_overlay: Heat map opacity in ``[0, 1]`` for ``"blended_heat_map"``.
        show_colorbar: Add a colorbar below the panel (an empty slot without a heat map).
        title: Axes title.
        fig_size: Size in inches of a new figure.
        use_pyplot: Create the figure with pyplot and show it if the backend is interactive;
            if False, build a bare ``Figure`` and leave pyplot untouched.

    Returns:
        The ``(figure, axes)`` drawn on.

    Raises:
        TypeError: An input is a torch tensor or not a numeric numpy array; bad ``cmap`` type.
        ValueError: Unknown method, sign or colormap; ``original_image`` missing or of another
            height and width than ``attr``; an option out of range.

    Example:
        >>> import numpy as np
        >>> from attribution.visualization import visualize_image_attr
        >>> rng = np.random.default_rng(0)
        >>> attr_hwc, image_hwc = rng.normal(size=(8, 8, 3)), rng.random((8, 8, 3))  # channels last
        >>> fig, ax = visualize_image_attr(attr_hwc, image_hwc, "blended_heat_map", "all",
        ...                                show_colorbar=True, use_pyplot=False)
        >>> type(fig).__name__, type(ax).__name__
        ('Figure', 'Axes')
    """
    attr, image = _prepare_inputs(attr, original_image)
    panel = _prepare_panel(attr, image, method, sign, outlier_perc, cmap, alpha_overlay)
    if plt_fig_axis is None:
        fig, (ax,) = _new_figure(fig_size, use_pyplot, ncols=1)
    else:
        fig, ax = plt_fig_axis
    _render(fig, ax, panel, image, show_colorbar, title)
    if use_pyplot:
        _show_if_interactive()
    return fig, ax


def _check_list(value: Any, name: str) -> None:
    # A bare string is a Sequence too, and would become one panel per character.
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ArgumentTypeError(f"{name}: expected a list, got {value!r}")


def visualize_image_attr_multiple(
    attr: np.ndarray,
    original_image: np.ndarray | None,
    methods: Sequence[str | ImageVisualizationMethod],
    signs: Sequence[str | VisualizeSign],
    titles: Sequence[str] | None = None,
    fig_size: tuple[float, float] = (8, 6),
    use_pyplot: bool = True,
    **kwargs: Any,
) -> tuple[Figure, np.ndarray]:
    """Draw one row of panels, one per ``(method, sign)`` pair.

    Args:
        attr, original_image, fig_size, use_pyplot: As for :func:`visualize_image_attr`.
        methods: One visualization method per panel.
        signs: One sign per panel, as many as ``methods``.
        titles: Optional panel titles, as many as ``methods``.
        **kwargs: ``outlier_perc``, ``cmap``, ``alpha_overlay``, ``show_colorbar`` for every panel.

    Returns:
        ``(figure, axes)``, ``axes`` a 1-D numpy array of one Axes per panel (even for one).

    Raises:
        TypeError: Unknown keyword argument, a list argument that is not a list, or bad
            inputs as for :func:`visualize_image_attr`.
        ValueError: Lists of different lengths, or bad options as for :func:`visualize_image_attr`.

    Example:
        >>> import numpy as np
        >>> from attribution.visualization import visualize_image_attr_multiple
        >>> rng = np.random.default_rng(0)
        >>> attr_hwc, image_hwc = rng.normal(size=(8, 8, 3)), rng.random((8, 8, 3))  # channels last
        >>> fig, axes = visualize_image_attr_multiple(
        ...     attr_hwc, image_hwc, ["original_image", "heat_map"], ["all", "positive"],
        ...     titles=["Image", "Positive"], fig_size=(12, 6), show_colorbar=True, use_pyplot=False)
        >>> [ax.get_title() for ax in axes]
        ['Image', 'Positive']
    """
    unknown = sorted(set(kwargs) - set(_PANEL_OPTIONS))
    if unknown:
        raise ArgumentTypeError(f"kwargs: expected only {list(_PANEL_OPTIONS)}, got {unknown}")
    _check_list(methods, "methods")
    _check_list(signs, "signs")
    if not methods or len(methods) != len(signs):
        raise ArgumentError(
            f"methods and signs: expected non-empty lists of equal length, "
            f"got {len(methods)} methods and {len(signs)} signs"
        )
    if titles is not None:
        _check_list(titles, "titles")
        if len(titles) != len(methods):
            raise ArgumentError(f"titles: expected one per method ({len(methods)}), got {len(titles)}")
    show_colorbar = bool(kwargs.pop("show_colorbar", False))
    attr, image = _prepare_inputs(attr, original_image)
    # Every panel is validated before the figure exists, so a bad one leaks no figure.
    panels = [_prepare_panel(attr, image, m, s, **kwargs) for m, s in zip(methods, signs)]
    fig, axes = _new_figure(fig_size, use_pyplot, ncols=len(panels))
    for i, (panel, ax) in enumerate(zip(panels, axes)):
        _render(fig, ax, panel, image, show_colorbar, None if titles is None else titles[i])
    if use_pyplot:
        _show_if_interactive()
    return fig, axes
