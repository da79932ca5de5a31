"""Similarity of two sets of attribution maps, one score per example (DESIGN.md §5).

Every measure takes maps ``a`` and ``b`` of one shape ``(N, ...)`` and returns
a tensor of shape ``(N,)`` computed in one batched pass on the maps' device.
Scores are computed in float64 when either map is float64, else in float32.
An example whose maps hold a NaN or an infinity scores NaN.

Degenerate maps have defined scores, so that an unchanged explanation never
reads as a changed one (DESIGN.md §8):

- identical maps score exactly 1 under every measure, all-zero and constant
  maps included (for ``spearman`` and ``top_k`` with ``absolute=True``, maps
  equal in magnitude);
- a constant map (all-zero included) against a varied one: ``spearman`` 0 (no
  ranking to agree with); ``cosine`` 0 for an all-zero map, else the cosine
  as defined (a non-zero constant is a direction like any other); ``top_k``
  as defined, a constant map's top-k being its first ``k_count`` features (ties
  go to the lower index); ``ssim`` as defined on the min-max normalised maps,
  where a constant map becomes all zeros, so the score is low unless the other
  map is flat at its minimum almost everywhere;
- two different constants (all zeros against all ones): ``spearman`` 1 (neither
  orders the features, so they do not disagree), ``top_k`` 1 (the same first
  features), ``ssim`` 1 (both normalise to zeros), ``cosine`` 0 when one of them
  is zero, else 1 for constants of one sign and -1 for opposite signs.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice

SIMILARITY_MEASURES = ("spearman", "top_k", "cosine", "ssim")
SSIM_C1 = 0.01**2
"""SSIM's luminance constant ``(K1 * L)^2`` for data in [0, 1] (L = 1)."""
SSIM_C2 = 0.03**2
"""SSIM's contrast constant ``(K2 * L)^2`` for data in [0, 1]."""


def spearman_correlation(a: Tensor, b: Tensor, absolute: bool = True) -> Tensor:
    """Spearman rank correlation of ``a`` and ``b`` per example, over all features.

    Equal values share the average of the ranks they span (as in
    ``scipy.stats.spearmanr``), so the result is the Pearson correlation of
    the tie-averaged ranks.  A constant map has no ranking to agree with: its
    correlation with a varied map is 0, not NaN; two constant maps (all zeros
    against all ones, say) order no features differently and score 1, as do
    identical maps (exactly; with ``absolute``, maps equal in magnitude).

    Args:
        a: maps of shape ``(N, ...)``.
        b: maps of the same shape.
        absolute: rank ``|a|`` and ``|b|`` (the importance, whatever its sign);
            False ranks the signed values.

    Returns:
        A tensor of shape ``(N,)`` with values in [-1, 1].

    Raises:
        TypeError: ``a`` or ``b`` is not a real-valued tensor.
        ValueError: the shapes or devices differ, or the maps are empty.

    Example:
        >>> import torch
        >>> from attribution.metrics import spearman_correlation
        >>> saliency_epoch_1 = torch.tensor([[0.1, 0.4, 0.2, 0.9]])
        >>> spearman_correlation(saliency_epoch_1, 2 * saliency_epoch_1 + 1)  # the same ranking
        tensor([1.])
        >>> spearman_correlation(saliency_epoch_1, -saliency_epoch_1, absolute=False)  # the reverse ranking
        tensor([-1.])
    """
    x, y = _flat_pair(a, b)
    if absolute:
        x, y = x.abs(), y.abs()
    rx, ry = _average_ranks(x), _average_ranks(y)
    mean = (x.shape[1] + 1) / 2  # the mean of any tie-averaged ranks 1..F
    correlation = _pearson(rx - mean, ry - mean)
    both_constant = _constant(x) & _constant(y)  # one constant map alone already scores 0 in _pearson
    return _finite_only(_one_where(correlation, both_constant | (x == y).all(1)), x, y)


def top_k_intersection(a: Tensor, b: Tensor, k: float = 0.1, absolute: bool = True) -> Tensor:
    """Share of the top-k features of ``a`` that are also top-k features of ``b``, per example.

    ``k_count = max(1, round(k * features))`` (Python's ``round``: halves to
    even).  Ties at the cut are broken by position (the lower flat index wins),
    so the result is deterministic: identical maps score 1 (with ``absolute``,
    maps equal in magnitude), and so do two constant maps; a constant map's
    top-k are its first ``k_count`` features, whatever the other map holds.

    Args:
        a: maps of shape ``(N, ...)``.
        b: maps of the same shape.
        k: the fraction of features to keep, in (0, 1].
        absolute: rank by ``|a|`` and ``|b|``; False keeps the largest signed values.

    Returns:
        A tensor of shape ``(N,)`` with values in [0, 1] (multiples of ``1 / k_count``).

    Raises:
        TypeError: ``a`` or ``b`` is not a real-valued tensor.
        ValueError: the shapes or devices differ, the maps are empty, or ``k``
            is not in (0, 1].

    Example:
        >>> import torch
        >>> from attribution.metrics import top_k_intersection
        >>> attr_before, attr_after = torch.tensor([[4.0, 3.0, 2.0, 1.0]]), torch.tensor([[4.0, 1.0, 2.0, 3.0]])
        >>> top_k_intersection(attr_before, attr_after, k=0.5)  # top 2: {0, 1} and {0, 3}
        tensor([0.5000])
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 < k <= 1:
        raise ArgumentError(f"k: expected a fraction of the features in (0, 1], got {k!r}")
    x, y = _flat_pair(a, b)
    if absolute:
        x, y = x.abs(), y.abs()
    count = max(1, round(k * x.shape[1]))

    def top(m: Tensor) -> Tensor:
        order = m.sort(dim=1, descending=True, stable=True).indices[:, :count]
        return torch.zeros_like(m, dtype=torch.bool).scatter_(1, order, True)

    shared = (top(x) & top(y)).sum(1).to(x.dtype) / count
    return _finite_only(shared, x, y)


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine of the angle between ``a`` and ``b`` per example, over all features.

    Identical maps score exactly 1, two all-zero maps included; an all-zero map
    against a non-zero one scores 0 (it has no direction).  A non-zero constant
    map is a direction like any other: against another constant it scores 1
    (same sign) or -1.

    Args:
        a: maps of shape ``(N, ...)``.
        b: maps of the same shape.

    Returns:
        A tensor of shape ``(N,)`` with values in [-1, 1]; 1 where both maps are all zero, 0 where
        only one is.

    Raises:
        TypeError: ``a`` or ``b`` is not a real-valued tensor.
        ValueError: the shapes or devices differ, or the maps are empty.
    """
    x, y = _flat_pair(a, b)
    norms = torch.linalg.vector_norm(x, dim=1) * torch.linalg.vector_norm(y, dim=1)
    cosine = (x * y).sum(1) / torch.where(norms > 0, norms, torch.ones_like(norms))
    return _finite_only(_one_where(cosine.clamp(-1, 1), (x == y).all(1)), x, y)


def ssim(a: Tensor, b: Tensor, window_size: int = 7, sigma: float | None = None) -> Tensor:
    """Mean structural similarity (Wang et al., 2004) of two 2-D maps per example.

    Maps ``(N, C, H, W)`` are first reduced to ``(N, H, W)`` by summing the
    absolute values over channels; ``(N, H, W)`` maps are used as they are.
    Each 2-D map is min-max normalised to [0, 1] (a constant map becomes all
    zeros), then local means, variances (population, not sample, statistics)
    and covariance are taken over every position where the window fits
    entirely inside the map (no padding), with ``C1 = 0.01^2`` and
    ``C2 = 0.03^2``.  The window is uniform by default; give ``sigma`` for a
    Gaussian one.  This matches ``skimage.metrics.structural_similarity(...,
    data_range=1, use_sample_covariance=False)`` with ``win_size=window_size``
    (uniform), or with ``gaussian_weights=True, sigma=1.5`` for
    ``window_size=11, sigma=1.5`` (Wang et al.'s setting).  Maps that are equal
    after this reduction and normalisation score exactly 1: identical maps, two
    constant maps (any constants: both become all zeros), ``a`` and ``-a`` for
    ``(N, C, H, W)`` maps.  A constant map against a varied one scores the mean
    over windows of ``C1 * C2 / ((mu^2 + C1) * (var + C2))`` (``mu``, ``var``:
    the varied map's normalised local mean and variance): 1 where that map is
    flat at its minimum, near 0 where it holds mass.

    Args:
        a: maps of shape ``(N, C, H, W)`` or ``(N, H, W)``.
        b: maps of the same shape.
        window_size: side of the square window, an odd int >= 3, at most ``H`` and ``W``.
        sigma: standard deviation of a Gaussian window in pixels; None for a uniform window.

    Returns:
        A tensor of shape ``(N,)`` with values in [-1, 1].

    Raises:
        TypeError: ``a`` or ``b`` is not a real-valued tensor.
        ValueError: the shapes or devices differ, the maps are not 2-D images,
            or the window is malformed or larger than the maps.
    """
    x, y = _flat_pair(a, b)  # checks only; the images are taken from the originals
    if a.dim() not in (3, 4):
        raise ArgumentError(f"a: expected image maps of shape (N, C, H, W) or (N, H, W), got shape {tuple(a.shape)}")
    height, width = a.shape[-2:]
    if (
        isinstance(window_size, bool)
        or not isinstance(window_size, numbers.Integral)
        or window_size < 3
        or window_size % 2 == 0
    ):
        raise ArgumentError(f"window_size: expected an odd int >= 3, got {window_size!r}")
    if window_size > min(height, width):
        raise ArgumentError(f"window_size: {window_size} does not fit in maps of size {height}x{width}")
    if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma > 0):
        raise ArgumentError(f"sigma: expected a positive number (Gaussian window) or None (uniform), got {sigma!r}")
    images = [_normalised_image(m.to(x.dtype)) for m in (a, b)]
    offsets = torch.arange(window_size, dtype=x.dtype, device=x.device) - (window_size - 1) / 2
    weights = torch.ones_like(offsets) if sigma is None else torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = weights / weights.sum()
    window = (weights[:, None] * weights[None, :]).expand(5, 1, window_size, window_size)
    u, v = images
    local = F.conv2d(torch.stack([u, v, u * u, v * v, u * v], dim=1), window, groups=5)  # (N, 5, H', W')
    mu_u, mu_v, uu, vv, uv = local.unbind(1)
    var_u, var_v, cov = uu - mu_u * mu_u, vv - mu_v * mu_v, uv - mu_u * mu_v
    numerator = (2 * mu_u * mu_v + SSIM_C1) * (2 * cov + SSIM_C2)
    denominator = (mu_u * mu_u + mu_v * mu_v + SSIM_C1) * (var_u + var_v + SSIM_C2)
    same = (u == v).flatten(1).all(1)
    return _finite_only(_one_where((numerator / denominator).mean(dim=(1, 2)), same), x, y)


def similarity(a: Tensor, b: Tensor, measure: str = "spearman", **kwargs: Any) -> Tensor:
    """One of :data:`SIMILARITY_MEASURES` by name, with its keyword arguments.

    ``"spearman"`` is :func:`spearman_correlation`, ``"top_k"``
    :func:`top_k_intersection`, ``"cosine"`` :func:`cosine_similarity` and
    ``"ssim"`` :func:`ssim`.  Every measure scores identical maps exactly 1,
    constant and all-zero maps included (see the module docstring for constant
    maps against others).

    Args:
        a: maps of shape ``(N, ...)``.
        b: maps of the same shape.
        measure: the name of the measure.
        **kwargs: passed to the measure (e.g. ``k=0.05`` for ``"top_k"``).

    Returns:
        A tensor of shape ``(N,)``.

    Raises:
        ValueError: an unknown ``measure``, or the measure's own errors.
        TypeError: a keyword the measure does not take, or the measure's own errors.

    Example:
        >>> import torch
        >>> from attribution.metrics import similarity
        >>> reference, current = torch.tensor([[4.0, 3.0, 2.0, 1.0]]), torch.tensor([[4.0, 1.0, 2.0, 3.0]])
        >>> similarity(reference, current, measure="top_k", k=0.5)
        tensor([0.5000])
        >>> similarity(reference, reference, measure="cosine")  # every measure scores identical maps 1
        tensor([1.])
    """
    check_choice(measure, "measure", SIMILARITY_MEASURES)
    return _MEASURES[measure](a, b, **kwargs)


_MEASURES: dict[str, Callable[..., Tensor]] = {
    "spearman": spearman_correlation,
    "top_k": top_k_intersection,
    "cosine": cosine_similarity,
    "ssim": ssim,
}


def _flat_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``a`` and ``b`` checked and flattened to ``(N, features)`` in the working float dtype."""
    for name, maps in (("a", a), ("b", b)):
        if not isinstance(maps, Tensor) or maps.is_complex():
            raise ArgumentTypeError(f"{name}: expected a real-valued tensor of maps (N, ...), got {describe(maps)}")
        if maps.dim() < 2 or maps.numel() == 0:
            raise ArgumentError(
                f"{name}: expected maps of shape (N, ...) with at least one example and one feature, "
                f"got shape {tuple(maps.shape)}"
            )
    if a.shape != b.shape:
        raise ArgumentError(f"b: expected maps of the shape of a, {tuple(a.shape)}, got {tuple(b.shape)}")
    if a.device != b.device:
        raise ArgumentError(f"b: expected maps on the device of a ({a.device}), got {b.device}")
    dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    return a.flatten(1).to(dtype), b.flatten(1).to(dtype)


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 1..F along dim 1, equal values sharing the average of the ranks they span."""
    values, order = x.sort(dim=1)
    n, features = x.shape
    position = torch.arange(features, device=x.device).expand(n, features)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(dim=1).values  # where each run of ties begins
    last = torch.where(ends, position, features - 1).flip(1).cummin(dim=1).values.flip(1)  # and ends
    return torch.empty_like(x).scatter_(1, order, (first + last).to(x.dtype) / 2 + 1)


def _pearson(x: Tensor, y: Tensor) -> Tensor:
    """Correlation of centred rows; 0 where either row is constant."""
    denominator = torch.sqrt((x * x).sum(1) * (y * y).sum(1))
    r = (x * y).sum(1) / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return r.clamp(-1, 1)


def _constant(x: Tensor) -> Tensor:
    """Per row of ``(N, F)``: whether every feature holds the first one's value."""
    return (x == x[:, :1]).all(1)


def _one_where(scores: Tensor, agree: Tensor) -> Tensor:
    """``scores`` with exactly 1 where ``agree``: identical maps are not "almost" similar (rounding in
    the norms and means would leave 0.9999999) and degenerate ones do not fall through to 0."""
    return torch.where(agree, torch.ones_like(scores), scores)


def _normalised_image(maps: Tensor) -> Tensor:
    """``(N, H, W)`` maps (channels summed in absolute value) min-max scaled to [0, 1]; constant maps become 0."""
    image = maps.abs().sum(1) if maps.dim() == 4 else maps
    low = image.amin(dim=(1, 2), keepdim=True)
    span = image.amax(dim=(1, 2), keepdim=True) - low
    return (image - low) / torch.where(span > 0, span, torch.ones_like(span))


def _finite_only(scores: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """NaN for the examples whose maps are not all finite (sorting and min-max make them meaningless)."""
    finite = torch.isfinite(x).all(1) & torch.isfinite(y).all(1)
    return torch.where(finite, scores, torch.full_like(scores, float("nan")))
