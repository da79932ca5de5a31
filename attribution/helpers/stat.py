"""Streaming statistics for :class:`attribution.Summarizer`, Captum's ``Stat`` classes.

Each statistic is elementwise over observations: after observations ``x_1 .. x_n`` of one shape, ``Mean``
holds ``mean_i x_i`` with that shape.  Observations arrive one at a time (``update``) or as a batch along
dim 0 (``update_batch``); any split of the same observations into batches gives the same statistics, up to
rounding.

Mean and the sum of squared deviations (``MSE``) are kept with Welford's update, generalised to batches
(Chan et al.): the new mean is ``mean + sum_i (x_i - mean) / n`` and the squared deviations grow by
``sum_i (x_i - old_mean) * (x_i - new_mean)``, which equals ``M2_batch + delta^2 * n_old * m / n``.  Every
term is a deviation from a running mean, so data far from zero (``1e6 + noise``) keeps its variance, where
``E[x^2] - E[x]^2`` would cancel it away.

Statistics that need others declare them (:meth:`Stat.dependencies`): ``StdDev(k) -> Var(k) -> MSE, Count``,
``MSE -> Mean -> Count``.  A summarizer adds what is missing, updates dependencies first and links each
statistic to the instances it shares (``Stat._get_stat``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from attribution._internal.checks import ArgumentError, check_int

if TYPE_CHECKING:
    from attribution.helpers.summarizer import SummarizerSingleTensor


class Stat:
    """A statistic updated with observations and read at any time with :meth:`get`.

    Two statistics of the same class and parameters are equal (and hash alike), so a summarizer keeps one
    of them, whatever their names.  Subclasses implement :meth:`update_batch` (or, as in Captum, only
    :meth:`update`) and :meth:`get`, and name the statistics they read in :meth:`dependencies`.

    Args:
        name: the key of this statistic in a summary; default: the class name in lower case, followed by
            its parameters if it has any.
        **params: the parameters that distinguish two statistics of the same class (``order`` of ``Var``).
    """

    def __init__(self, name: str | None = None, **params: Any) -> None:
        self.params = params
        self._name = name
        self._other_stats: SummarizerSingleTensor | None = None

    def dependencies(self) -> tuple[Stat, ...]:
        """The statistics this one reads; a summarizer updates them before this one."""
        return ()

    def init(self) -> None:
        """Called once the summarizer has linked this statistic to its dependencies: a subclass looks up
        here the summarizer's instances of the statistics it reads."""

    def _get_stat(self, stat: Stat) -> Stat | None:
        """The summarizer's own instance equal to ``stat``, or None if it tracks no such statistic."""
        if self._other_stats is None:
            raise RuntimeError(f"{self.name}: not part of a summarizer; add it to a Summarizer first")
        return self._other_stats.get(stat)

    def update(self, x: Tensor) -> None:
        """Add one observation ``x``."""
        self.update_batch(x.unsqueeze(0))

    def update_batch(self, xs: Tensor) -> None:
        """Add the observations ``xs[0], xs[1], ...``.

        The default hands them to :meth:`update` one by one, for subclasses written against Captum that
        implement only that.
        """
        if type(self).update is Stat.update:
            raise NotImplementedError(f"{type(self).__name__} must implement update_batch or update")
        for x in xs:
            self.update(x)

    def get(self) -> Tensor | int | None:
        """The current value; None before the first observation."""
        raise NotImplementedError(f"{type(self).__name__} must implement get")

    def _key(self) -> tuple[Any, ...]:
        return (type(self), frozenset(self.params.items()))

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stat) and self._key() == other._key()

    @property
    def name(self) -> str:
        """The key of this statistic in a summary."""
        if self._name is not None:
            return self._name
        default = type(self).__name__.lower()
        return f"{default}({self.params})" if self.params else default

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _linked(stat: Stat, dependency: Stat) -> Any:
    found = stat._get_stat(dependency)
    if found is None:
        raise RuntimeError(f"{stat.name}: the summarizer does not track {dependency.name}, which it needs")
    return found


def _sum0(t: Tensor) -> Tensor:
    """``t.sum(0)``, without a reduction kernel for the common single observation."""
    return t[0] if t.shape[0] == 1 else t.sum(0)


class Count(Stat):
    """The number of observations."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.n: int | None = None

    def update_batch(self, xs: Tensor) -> None:
        self.n = (self.n or 0) + xs.shape[0]

    def update(self, x: Tensor) -> None:
        self.n = (self.n or 0) + 1

    def get(self) -> int | None:
        return self.n


class Mean(Stat):
    """The running mean; integer observations give a float64 mean."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.rolling_mean: Tensor | None = None
        self.previous: Tensor | None = None  # the mean before the last update, read by MSE

    def dependencies(self) -> tuple[Stat, ...]:
        return (Count(),)

    def init(self) -> None:
        self._count = _linked(self, Count())

    def update(self, x: Tensor) -> None:  # one observation: the same arithmetic without batch reductions
        x = x if x.is_floating_point() or x.is_complex() else x.double()
        self.previous = self.rolling_mean
        if self.rolling_mean is None:
            self.rolling_mean = x.clone()
        else:
            self.rolling_mean = self.rolling_mean + (x - self.rolling_mean) / self._count.get()

    def update_batch(self, xs: Tensor) -> None:
        xs = xs if xs.is_floating_point() or xs.is_complex() else xs.double()
        self.previous = self.rolling_mean
        if self.rolling_mean is None:
            self.rolling_mean = xs.mean(0)
        else:
            # Count has already taken this batch in: n is the new total.
            self.rolling_mean = self.rolling_mean + _sum0(xs - self.rolling_mean) / self._count.get()

    def get(self) -> Tensor | None:
        return self.rolling_mean


class MSE(Stat):
    """The sum of squared deviations from the mean, ``sum_i (x_i - mean)^2`` (Captum's name for it)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.mse: Tensor | None = None

    def dependencies(self) -> tuple[Stat, ...]:
        return (Mean(),)

    def init(self) -> None:
        self._mean = _linked(self, Mean())

    def update(self, x: Tensor) -> None:
        new, old = self._mean.get(), self._mean.previous
        self.mse = torch.zeros_like(new) if old is None else self.mse + (x - old) * (x - new)

    def update_batch(self, xs: Tensor) -> None:
        # Mean has already taken this batch in: get() is the new mean, previous the old one.
        new, old = self._mean.get(), self._mean.previous
        if old is None:
            self.mse = _sum0((xs - new) ** 2)
        else:
            assert self.mse is not None  # set with the first batch, before Mean had a previous value
            self.mse = self.mse + _sum0((xs - old) * (xs - new))

    def get(self) -> Tensor | None:
        return self.mse


def _order_name(order: int, population: str, sample: str, stem: str) -> str:
    return {0: population, 1: sample}.get(order, f"{stem}({order})")


class Var(Stat):
    """The variance ``MSE / (n - order)``: ``order=0`` the population variance (name ``"variance"``),
    ``order=1`` the sample variance (``"sample_variance"``), ``order=k`` ``"variance(k)"``.

    Zero while there are no more than ``order`` observations (as in Captum; ``torch.var`` gives NaN).

    Raises:
        ValueError: ``order`` is not an int >= 0.
    """

    def __init__(self, name: str | None = None, order: int = 0) -> None:
        check_int(order, "order", minimum=0)
        default = _order_name(order, "variance", "sample_variance", "variance")
        super().__init__(name=default if name is None else name, order=order)
        self.order = order

    def dependencies(self) -> tuple[Stat, ...]:
        return (MSE(), Count())

    def init(self) -> None:
        self._mse = _linked(self, MSE())
        self._count = _linked(self, Count())

    def update_batch(self, xs: Tensor) -> None:
        pass  # read from MSE and Count

    def update(self, x: Tensor) -> None:
        pass  # read from MSE and Count

    def get(self) -> Tensor | None:
        mse, n = self._mse.get(), self._count.get()
        if mse is None:
            return None
        return mse / (n - self.order) if n > self.order else torch.zeros_like(mse)


class StdDev(Stat):
    """The square root of ``Var(order)``: names ``"std_dev"``, ``"sample_std_dev"``, ``"std_dev(k)"``.

    Raises:
        ValueError: ``order`` is not an int >= 0.
    """

    def __init__(self, name: str | None = None, order: int = 0) -> None:
        check_int(order, "order", minimum=0)
        default = _order_name(order, "std_dev", "sample_std_dev", "std_dev")
        super().__init__(name=default if name is None else name, order=order)
        self.order = order

    def dependencies(self) -> tuple[Stat, ...]:
        return (Var(order=self.order),)

    def init(self) -> None:
        self._var = _linked(self, Var(order=self.order))

    def update_batch(self, xs: Tensor) -> None:
        pass  # read from Var

    def update(self, x: Tensor) -> None:
        pass  # read from Var

    def get(self) -> Tensor | None:
        var = self._var.get()
        return None if var is None else var.sqrt()


def _fold(fn: Callable[[Tensor, Tensor], Tensor], xs: Tensor) -> Tensor:
    """``fn`` applied across dim 0 in a pairwise tree: log2(m) batched calls instead of m - 1.

    Needs an elementwise, associative and commutative ``fn`` (min, max, add), as the order of
    combination differs from a left-to-right fold.
    """
    while xs.shape[0] > 1:
        half = xs.shape[0] // 2
        combined = fn(xs[:half], xs[half : 2 * half])
        xs = torch.cat([combined, xs[2 * half :]]) if xs.shape[0] % 2 else combined
    return xs[0]


class GeneralAccumFn(Stat):
    """``result = fn(result, x)`` over the observations, for an elementwise, associative and commutative
    ``fn`` (batches are combined pairwise, see :func:`_fold`).

    Args:
        fn: the binary function, e.g. ``torch.maximum``.
        name: the key in a summary.

    Raises:
        ValueError: ``fn`` is not callable.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], name: str | None = None) -> None:
        if not callable(fn):
            raise ArgumentError(f"fn: expected a function of two tensors, got {fn!r}")
        super().__init__(name=name)
        self.result: Tensor | None = None
        self.fn = fn

    def _key(self) -> tuple[Any, ...]:
        return (*super()._key(), self.fn)

    def update(self, x: Tensor) -> None:
        self.result = x.clone() if self.result is None else self.fn(self.result, x)

    def update_batch(self, xs: Tensor) -> None:
        folded = _fold(self.fn, xs)
        # The first value may be a view of the caller's tensor: keep a copy of our own.
        self.result = folded.clone() if self.result is None else self.fn(self.result, folded)

    def get(self) -> Tensor | None:
        return self.result


class Min(GeneralAccumFn):
    """The elementwise minimum (``min_fn``, default ``torch.min``)."""

    def __init__(self, name: str | None = None, min_fn: Callable[[Tensor, Tensor], Tensor] = torch.min) -> None:
        super().__init__(fn=min_fn, name=name)


class Max(GeneralAccumFn):
    """The elementwise maximum (``max_fn``, default ``torch.max``)."""

    def __init__(self, name: str | None = None, max_fn: Callable[[Tensor, Tensor], Tensor] = torch.max) -> None:
        super().__init__(fn=max_fn, name=name)


class Sum(GeneralAccumFn):
    """The elementwise sum (``add_fn``, default ``torch.add``)."""

    def __init__(self, name: str | None = None, add_fn: Callable[[Tensor, Tensor], Tensor] = torch.add) -> None:
        super().__init__(fn=add_fn, name=name)


def CommonStats() -> list[Stat]:  # noqa: N802 (Captum's name)
    """Mean, sample variance, sample standard deviation, min and max, in that order."""
    return [Mean(), Var(order=1), StdDev(order=1), Min(), Max()]
