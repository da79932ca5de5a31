"""Summaries of many attributions, as Captum's ``Summarizer``, ``SummarizerSingleTensor`` and
``ClassSummarizer``: streaming, elementwise statistics (:mod:`attribution.helpers.stat`) over observations of one
shape, per input for a tuple, and per class.

    >>> import torch
    >>> from attribution import CommonStats, IntegratedGradients, Summarizer
    >>> ig = IntegratedGradients(torch.nn.Linear(3, 2))
    >>> loader = [torch.rand(4, 3), torch.rand(4, 3)]  # two batches of four examples
    >>> summarizer = Summarizer(CommonStats())
    >>> for batch in loader:
    ...     summarizer.update_batch(ig.attribute(batch, target=0))
    >>> summarizer.summary["mean"].shape  # elementwise over the eight attributions
    torch.Size([3])
    >>> sorted(summarizer.summary)
    ['max', 'mean', 'min', 'sample_std_dev', 'sample_variance']

``update(x)`` adds one observation (Captum's unit); ``update_batch(x)`` adds ``x[0], x[1], ...`` at once,
with the same result as adding them one by one.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Hashable, Sequence
from typing import Any, Union

import torch
from torch import Tensor

from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution.helpers.stat import Stat

Observation = Union[Tensor, float, int]
Summary = dict[str, Union[Tensor, int, None]]


def _update_order(stats: Sequence[Stat]) -> tuple[list[Stat], list[int]]:
    """Every statistic ``stats`` needs, dependencies first, and the positions of the requested ones.

    Equal statistics are kept once (the first given, so its name wins over a dependency's default).
    """
    if not isinstance(stats, (list, tuple)) or not all(isinstance(s, Stat) for s in stats):
        raise ArgumentTypeError(f"stats: expected a list of Stat objects such as [Mean(), Var(order=1)], got {stats!r}")
    requested: dict[Stat, Stat] = {}
    for stat in stats:
        requested.setdefault(stat, stat)
    names = [stat.name for stat in requested]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise ArgumentError(f"stats: several statistics are named {shared}; give them distinct names")

    ordered: dict[Stat, None] = {}  # an insertion-ordered set
    visiting: set[Stat] = set()

    def visit(stat: Stat) -> None:
        stat = requested.get(stat, stat)
        if stat in ordered:
            return
        if stat in visiting:
            raise ArgumentError(f"stats: {stat.name} depends on itself through its dependencies")
        visiting.add(stat)
        for dependency in stat.dependencies():
            visit(dependency)
        ordered[stat] = None

    for stat in requested:
        visit(stat)
    order = list(ordered)
    position = {stat: i for i, stat in enumerate(order)}
    return order, [position[stat] for stat in requested]


class SummarizerSingleTensor:
    """The statistics of one stream of tensors of one shape; :class:`Summarizer` keeps one per input.

    Args:
        stats: every statistic to update, dependencies before the statistics that read them (as
            :class:`Summarizer` orders them).
        summary_stats_indices: positions in ``stats`` of the statistics shown in :attr:`summary`, in the
            order shown.
    """

    def __init__(self, stats: list[Stat], summary_stats_indices: list[int]) -> None:
        self._stats = stats
        self._stat_to_stat = {stat: stat for stat in stats}
        self._summary_stats = [stats[i] for i in summary_stats_indices]
        self._shape: tuple[int, ...] | None = None
        for stat in stats:
            stat._other_stats = self
        for stat in stats:
            stat.init()

    def check(self, xs: Tensor, name: str = "x") -> None:
        """Raise unless the observations ``xs[0], xs[1], ...`` have the shape of those seen so far.

        Raises:
            ValueError: another shape.
        """
        if self._shape is not None and tuple(xs.shape[1:]) != self._shape:
            raise ArgumentError(
                f"{name}: expected observations of shape {self._shape}, as in the first update, "
                f"got {tuple(xs.shape[1:])}"
            )

    def update(self, x: Tensor) -> None:
        """Add one observation ``x``."""
        self.update_batch(x.unsqueeze(0))

    def update_batch(self, xs: Tensor) -> None:
        """Add the observations ``xs[0], xs[1], ...``; detached, so no autograd graph is kept alive."""
        self.check(xs)
        self._shape = tuple(xs.shape[1:])
        if xs.shape[0] == 0:
            return
        self._add(xs.detach())

    def _add(self, xs: Tensor) -> None:
        """Update every statistic with checked, detached observations."""
        for stat in self._stats:
            stat.update_batch(xs)

    def _add_one(self, x: Tensor) -> None:
        """Update every statistic with one checked, detached observation."""
        for stat in self._stats:
            stat.update(x)

    def get(self, stat: Stat) -> Stat | None:
        """This summarizer's instance equal to ``stat`` (same class and parameters), or None."""
        return self._stat_to_stat.get(stat)

    @property
    def summary(self) -> Summary:
        """Name -> value of each requested statistic."""
        return {stat.name: stat.get() for stat in self._summary_stats}


class Summarizer:
    """Streaming statistics of a tensor, or of each tensor of a tuple, over many updates.

    Args:
        stats: the statistics to report, e.g. ``[Mean(), Var(order=1)]`` or :func:`CommonStats`; those they
            depend on are tracked too, and duplicates (same class and parameters) are kept once.

    Raises:
        TypeError: ``stats`` is not a list of :class:`~attribution.helpers.stat.Stat`.
        ValueError: two statistics share a name.

    Example:
        >>> from attribution import Mean, Summarizer, Var
        >>> summarizer = Summarizer([Mean(), Var()])
        >>> summarizer.update_batch(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
        >>> summarizer.summary["variance"]
        tensor([1., 4.])
    """

    def __init__(self, stats: list[Stat]) -> None:
        self._stats, self._summary_stats_indices = _update_order(stats)
        self._summarizers: list[SummarizerSingleTensor] = []
        self._is_inputs_tuple: bool | None = None

    def update(self, x: Observation | tuple[Observation, ...]) -> None:
        """Add one observation: a tensor (or number), or a tuple with one per input.

        Raises:
            ValueError: a tuple after a single tensor or the reverse, another number of tensors, or
                another shape than in the first update.
            TypeError: something other than tensors and numbers.
        """
        if self._is_inputs_tuple is False and isinstance(x, Tensor) and x.shape == self._summarizers[0]._shape:
            self._summarizers[0]._add_one(x.detach())  # the common case, already checked: no overhead
            return
        self._apply(*self._prepare(x, batched=False), batched=False)

    def update_batch(self, x: Tensor | tuple[Tensor, ...]) -> None:
        """Add the observations ``x[0], x[1], ...`` (per input for a tuple, with one batch size): the same
        summary as calling :meth:`update` on each, in fewer, batched operations.

        Raises:
            ValueError: as :meth:`update`, or tensors without a batch dimension or with different ones.
            TypeError: something other than tensors.
        """
        self._apply(*self._prepare(x, batched=True), batched=True)

    def _prepare(self, x: Any, batched: bool) -> tuple[tuple[Tensor, ...], bool]:
        """The update's tensors and whether they came as a tuple, checked against the earlier updates;
        nothing is changed yet."""
        is_tuple = isinstance(x, tuple)
        if self._is_inputs_tuple is not None and is_tuple != self._is_inputs_tuple:
            expected = "a tuple of tensors" if self._is_inputs_tuple else "a single tensor"
            raise ArgumentError(f"x: expected {expected}, as in the first update, got {type(x).__name__}")
        values = x if is_tuple else (x,)
        if not values:
            raise ArgumentError("x: expected at least one tensor, got an empty tuple")
        names = [f"x[{i}]" if is_tuple else "x" for i in range(len(values))]
        tensors = tuple(_as_tensor(v, name, batched) for v, name in zip(values, names))
        if self._summarizers and len(tensors) != len(self._summarizers):
            raise ArgumentError(
                f"x: expected {len(self._summarizers)} tensors, as in the first update, got {len(tensors)}"
            )
        if batched and len({t.shape[0] for t in tensors}) > 1:
            raise ArgumentError(f"x: expected one batch size for all tensors, got {[t.shape[0] for t in tensors]}")
        for summarizer, t, name in zip(self._summarizers, tensors, names):
            summarizer.check(t if batched else t.unsqueeze(0), name)
        return tensors, is_tuple

    def _apply(self, tensors: tuple[Tensor, ...], is_tuple: bool, batched: bool) -> None:
        self._is_inputs_tuple = is_tuple
        if not self._summarizers:
            # Each input gets its own copies: the statistics hold that input's running values.
            self._summarizers = [
                SummarizerSingleTensor(copy.deepcopy(self._stats), self._summary_stats_indices) for _ in tensors
            ]
        for summarizer, t in zip(self._summarizers, tensors):
            if batched:
                summarizer.update_batch(t)
            else:
                summarizer.update(t)

    @property
    def summary(self) -> Summary | list[Summary] | None:
        """Statistic name -> value, a list of those (one per input) for tuples, None before any update."""
        if not self._summarizers:
            return None
        summaries = [summarizer.summary for summarizer in self._summarizers]
        return summaries if self._is_inputs_tuple else summaries[0]


class ClassSummarizer(Summarizer):
    """A :class:`Summarizer` of all updates, plus one per class label (any hashable value).

    As in Captum, ``update(x)`` without labels adds ``x`` as one observation; with labels, ``x`` (a tensor
    or a tuple) is a batch along dim 0 and its summaries, total and per class, are lists with one entry
    per input, also for a single tensor.

    Args:
        stats: the statistics to report, as for :class:`Summarizer`.

    Example:
        >>> from attribution import ClassSummarizer, Mean
        >>> summarizer = ClassSummarizer([Mean()])
        >>> summarizer.update(torch.tensor([[1.0], [2.0], [4.0]]), labels=["a", "b", "a"])
        >>> summarizer.class_summaries["a"][0]["mean"]
        tensor([2.5000])
    """

    def __init__(self, stats: list[Stat]) -> None:
        super().__init__(stats)
        self._stat_list = list(stats)
        self.summaries: dict[Any, Summarizer] = {}

    def update(  # type: ignore[override]
        self, x: Tensor | tuple[Tensor, ...], labels: Hashable | list[Any] | Tensor | None = None
    ) -> None:
        """Add ``x``: one observation without labels; with labels, a batch whose examples go to their class.

        Args:
            x: a tensor or a tuple of tensors; with labels, the examples along dim 0.
            labels: None; one label for the whole batch (a number, a string, a tuple, a 0-d tensor, a list
                of one); or a list or 1-D tensor with one label per example.

        Raises:
            ValueError: as :meth:`Summarizer.update_batch`, or a number of labels that is neither 1 nor
                the batch size.
            TypeError: a label that cannot be a dict key.
        """
        if labels is None:
            super().update(x)
            return
        tensors, _ = self._prepare(x if isinstance(x, tuple) else (x,), batched=True)
        groups = _group_rows(_per_example(labels, tensors[0].shape[0]))
        for label, rows in groups.items():
            part = tensors if rows is None else tuple(t.index_select(0, rows.to(t.device)) for t in tensors)
            if label not in self.summaries:
                self.summaries[label] = Summarizer(self._stat_list)
            self.summaries[label].update_batch(part)
        self._apply(tensors, is_tuple=True, batched=True)

    @property
    def class_summaries(self) -> dict[Any, Summary | list[Summary] | None]:
        """Label -> that class's summary, in the order the labels first appeared."""
        return {label: summarizer.summary for label, summarizer in self.summaries.items()}


def _per_example(labels: Any, batch_size: int) -> list[Any]:
    """One label per example: a single label is repeated; a tensor becomes Python values, so that
    ``tensor([0, 1])`` and ``[0, 1]`` give the same classes."""
    if isinstance(labels, Tensor):
        labels = labels.item() if labels.dim() == 0 else labels.tolist()
    per_example: list[Any]
    if isinstance(labels, list):
        if len(labels) not in (1, batch_size):
            raise ArgumentError(
                f"labels: expected one label, or one per example ({batch_size}), got {len(labels)} labels"
            )
        per_example = labels * batch_size if len(labels) == 1 else labels
    else:
        per_example = [labels] * batch_size
    unhashable = [label for label in per_example if not isinstance(label, Hashable)]
    if unhashable:
        raise ArgumentTypeError(f"labels: expected hashable labels (numbers, strings), got {unhashable[0]!r}")
    return per_example


def _group_rows(labels: list[Any]) -> dict[Any, Tensor | None]:
    """Label -> the rows of the batch that carry it (None: all rows), in order of first appearance."""
    rows: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):  # over label values, not tensors: no compute here
        rows.setdefault(label, []).append(i)
    if len(rows) == 1:
        return dict.fromkeys(rows)
    return {label: torch.tensor(indices) for label, indices in rows.items()}


def _as_tensor(value: Any, name: str, batched: bool) -> Tensor:
    if isinstance(value, Tensor):
        if batched and value.dim() == 0:
            raise ArgumentError(f"{name}: expected a batch of observations along dim 0, got a 0-d tensor")
        return value
    if not batched and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.tensor(float(value))
    expected = "a tensor" if batched else "a tensor or a number"
    raise ArgumentTypeError(f"{name}: expected {expected}, got {type(value).__name__}")
