"""Comparing a model's metric on clean and attacked inputs (Captum's ``AttackComparator``).

Each call of :meth:`AttackComparator.evaluate` runs every added attack on a batch (``num_attempts`` times),
evaluates the model on the original and the attacked inputs, ``perturbations_per_eval`` of them in one
forward, and returns the metric of each: for an attack with several attempts their mean, min and max
(average, best and worst case).  :meth:`AttackComparator.summary` is the running mean of those results over
the batches since construction or :meth:`AttackComparator.reset`, tensor metrics averaged over their first
dimension first.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from attribution._internal.canonical import describe, format_additional_args
from attribution._internal.checks import ArgumentTypeError, check_int
from attribution.robust._batching import batch_size, concat, repeat_args, split_rows
from attribution.robust.perturbation import Perturbation

ORIGINAL_KEY = "Original"
"""The key of the metric on the unperturbed inputs."""

MetricResult = Any
"""A metric value: a float, a tensor, or a (named) tuple of them."""


class AttackInfo(NamedTuple):
    """An attack added to an :class:`AttackComparator` (Captum's record)."""

    attack_fn: Perturbation | Callable[..., Any]
    name: str
    num_attempts: int
    apply_before_preproc: bool
    attack_kwargs: dict[str, Any]
    additional_args: list[str]


def agg_metric(value: MetricResult) -> MetricResult:
    """A batch's metric reduced for the summary: tensors averaged over their first dimension."""
    if isinstance(value, Tensor):
        return value.mean(dim=0)
    if isinstance(value, tuple):
        return tuple(agg_metric(v) for v in value)
    return value


class _Running:
    """Running mean, min and max of a metric (a float, a tensor, or a tuple of them), element-wise.

    Values are kept as tensors, as Captum's summarizer does: floats as float32, and the mean of an integer
    tensor in float64.
    """

    def __init__(self, extremes: bool) -> None:
        self.extremes = extremes
        self.count = 0
        self.is_tuple: bool | None = None
        self.mean: list[Tensor] = []
        self.min: list[Tensor] = []
        self.max: list[Tensor] = []

    def update(self, value: MetricResult) -> None:
        is_tuple = isinstance(value, tuple)
        if self.is_tuple is None:
            self.is_tuple = is_tuple
        elif self.is_tuple != is_tuple:
            raise ArgumentTypeError(f"metric: returned a tuple for some inputs and not others, got {describe(value)}")
        parts = [_as_tensor(v) for v in (value if is_tuple else (value,))]
        self.count += 1
        if self.count == 1:
            self.mean = [p.clone() if p.is_floating_point() else p.double() for p in parts]
            if self.extremes:
                self.min, self.max = [p.clone() for p in parts], [p.clone() for p in parts]
            return
        for i, p in enumerate(parts):
            self.mean[i] = self.mean[i] + (p - self.mean[i]) / self.count
            if self.extremes:
                self.min[i] = torch.minimum(self.min[i], p)
                self.max[i] = torch.maximum(self.max[i], p)

    def summary(self, out_format: Callable[..., Any] | None) -> dict[str, MetricResult]:
        stats = {"mean": self.mean, **({"max": self.max, "min": self.min} if self.extremes else {})}
        if not self.is_tuple:
            return {name: values[0] for name, values in stats.items()}
        return {name: out_format(*values) if out_format else tuple(values) for name, values in stats.items()}


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    try:
        return torch.tensor(value, dtype=torch.float)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentTypeError(
            f"metric: expected a float, a tensor or a tuple of them, got {describe(value)}"
        ) from None


class AttackComparator:
    """A model's metric on the original inputs and under a set of attacks (Captum's class and arguments).

    Args:
        forward_func: the model, or any function of the (preprocessed) inputs and the forward's further
            arguments.
        metric: ``metric(model_out, **kwargs)`` with the keyword arguments given to :meth:`evaluate`; returns
            a float, a tensor (first dimension the batch, or 1 for the whole batch) or a (named) tuple of them.
        preproc_fn: applied to the inputs before the model; attacks run before or after it.

    Example:
        >>> import torch
        >>> from attribution.robust import AttackComparator
        >>> model = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.eye_(model.weight)
        >>> accuracy = lambda out, target: (out.argmax(dim=1) == target).float()
        >>> comparator = AttackComparator(model, accuracy)
        >>> comparator.add_attack(lambda x: x.flip(1), name="swap")
        >>> results = comparator.evaluate(torch.tensor([[1.0, 0.0], [2.0, 1.0]]), target=torch.tensor([0, 0]))
        >>> results["Original"].tolist(), results["swap"]["mean"].tolist()
        ([1.0, 1.0], [0.0, 0.0])
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        metric: Callable[..., MetricResult],
        preproc_fn: Callable[[Any], Any] | None = None,
    ) -> None:
        for value, name in ((forward_func, "forward_func"), (metric, "metric")):
            if not callable(value):
                raise ArgumentTypeError(f"{name}: expected a callable, got {describe(value)}")
        if preproc_fn is not None and not callable(preproc_fn):
            raise ArgumentTypeError(f"preproc_fn: expected None or a callable, got {describe(preproc_fn)}")
        self.forward_func = forward_func
        self.metric = metric
        self.preproc_fn = preproc_fn
        self.attacks: dict[str, AttackInfo] = {}
        self.summary_results: dict[str, _Running] = {}
        self.metric_aggregator: Callable[[MetricResult], MetricResult] = agg_metric
        self.out_format: Callable[..., Any] | None = None

    def add_attack(
        self,
        attack: Perturbation | Callable[..., Any],
        name: str | None = None,
        num_attempts: int = 1,
        apply_before_preproc: bool = True,
        attack_kwargs: dict[str, Any] | None = None,
        additional_attack_arg_names: list[str] | None = None,
    ) -> None:
        """Add an attack to run in :meth:`evaluate`.

        Args:
            attack: a :class:`Perturbation` or any function of the inputs (e.g. a torchvision transform).
            name: the key of its results; default the attack's class name. Must be unique.
            num_attempts: how often to run it per batch (for random attacks); more than 1 also reports the
                min and max over the attempts.
            apply_before_preproc: attack the raw inputs (True) or the output of ``preproc_fn``.
            attack_kwargs: keyword arguments for every call of the attack (e.g. ``{"epsilon": 0.1}``).
            additional_attack_arg_names: names of :meth:`evaluate` keyword arguments that also go to the
                attack, per batch (e.g. ``["target"]``).

        Raises:
            RuntimeError: an attack of the same name was added before (Captum's exception).
            ValueError: ``num_attempts`` is not a positive int.
            TypeError: ``attack`` is not callable.
        """
        if not callable(attack):
            raise ArgumentTypeError(f"attack: expected a Perturbation or a callable, got {describe(attack)}")
        check_int(num_attempts, "num_attempts")
        if name is None:
            name = type(attack).__name__
        if name in self.attacks or name == ORIGINAL_KEY:
            raise RuntimeError(f"name: an attack named {name!r} exists already; pass another name")
        self.attacks[name] = AttackInfo(
            attack_fn=attack,
            name=name,
            num_attempts=num_attempts,
            apply_before_preproc=apply_before_preproc,
            attack_kwargs=dict(attack_kwargs or {}),
            additional_args=list(additional_attack_arg_names or []),
        )

    def evaluate(
        self,
        inputs: Any,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        **kwargs: Any,
    ) -> dict[str, MetricResult | dict[str, MetricResult]]:
        """The metric on ``inputs`` and under every attack, for one batch; updates :meth:`summary`.

        Args:
            inputs: the batch, in any form ``preproc_fn`` (or the model) takes.
            additional_forward_args: further arguments of ``forward_func``; tensors among them are repeated
                along their first dimension when several copies go through one forward.
            perturbations_per_eval: how many copies of the batch (original and attacked) go through one
                forward; more than 1 needs a tensor or tuple of tensors after ``preproc_fn``.
            kwargs: keyword arguments of ``metric``, and of the attacks that name them.

        Returns:
            ``{"Original": metric, attack name: {"mean": ...}}``, with ``"min"`` and ``"max"`` too for an
            attack of several attempts.

        Raises:
            ValueError: ``perturbations_per_eval`` is not a positive int.
        """
        check_int(perturbations_per_eval, "perturbations_per_eval")
        args = format_additional_args(additional_forward_args)
        preprocessed = self.preproc_fn(inputs) if self.preproc_fn is not None else inputs
        batch: dict[str, _Running] = {ORIGINAL_KEY: _Running(extremes=False)}
        pending: list[tuple[str, Any]] = [(ORIGINAL_KEY, preprocessed)]

        def flush_when_full(force: bool = False) -> None:
            if pending and (force or len(pending) == perturbations_per_eval):
                self._evaluate_batch(pending, args, batch, kwargs)
                pending.clear()

        flush_when_full()
        for attack in self.attacks.values():
            batch[attack.name] = _Running(extremes=attack.num_attempts > 1)
            per_batch = {}
            for key in attack.additional_args:
                if key in kwargs:
                    per_batch[key] = kwargs[key]
                else:
                    warnings.warn(f"Additional sample arg {key} not provided for {attack.name}", stacklevel=2)
            for _ in range(attack.num_attempts):
                if attack.apply_before_preproc:
                    attacked = attack.attack_fn(inputs, **per_batch, **attack.attack_kwargs)
                    if self.preproc_fn is not None:
                        attacked = self.preproc_fn(attacked)
                else:
                    attacked = attack.attack_fn(preprocessed, **per_batch, **attack.attack_kwargs)
                pending.append((attack.name, attacked))
                flush_when_full()
        flush_when_full(force=True)
        return self._record(batch)

    def _evaluate_batch(
        self, pending: list[tuple[str, Any]], args: tuple[Any, ...], batch: dict[str, _Running], kwargs: Any
    ) -> None:
        """Run the model once on the pending copies and add each copy's metric to its attack's statistics."""
        if len(pending) == 1:
            outputs = [self.forward_func(pending[0][1], *args)]
        else:
            copies = [value for _, value in pending]
            joined = self.forward_func(concat(copies), *repeat_args(args, len(copies)))
            outputs = split_rows(joined, [batch_size(c) for c in copies])
        for (key, _), output in zip(pending, outputs):
            value = self.metric(output, **kwargs)
            if self.out_format is None and isinstance(value, tuple) and hasattr(value, "_fields"):
                self.out_format = type(value)  # summaries come back in the metric's own named tuple
            batch[key].update(value)

    def _record(self, batch: dict[str, _Running]) -> dict[str, MetricResult | dict[str, MetricResult]]:
        """This batch's results, and their aggregates added to the running summary."""
        original = batch[ORIGINAL_KEY].summary(self.out_format)["mean"]
        results: dict[str, MetricResult | dict[str, MetricResult]] = {ORIGINAL_KEY: original}
        self._summarize(ORIGINAL_KEY, original)
        for attack in self.attacks.values():
            attack_results = batch[attack.name].summary(self.out_format)
            results[attack.name] = attack_results
            if len(attack_results) == 1:
                self._summarize(attack.name, attack_results["mean"])
            else:
                for stat, value in attack_results.items():
                    self._summarize(f"{attack.name} {stat.title()} Attempt", value)
        return results

    def _summarize(self, key: str, value: MetricResult) -> None:
        self.summary_results.setdefault(key, _Running(extremes=False)).update(self.metric_aggregator(value))

    def summary(self) -> dict[str, dict[str, MetricResult]]:
        """The running mean over the batches evaluated since construction or :meth:`reset`, per key of
        :meth:`evaluate`'s results (``"<name> Mean Attempt"``, ``"... Min Attempt"``, ``"... Max Attempt"`` for
        attacks of several attempts), as ``{key: {"mean": value}}``."""
        return {key: running.summary(self.out_format) for key, running in self.summary_results.items()}

    def reset(self) -> None:
        """Forget the batches evaluated so far."""
        self.summary_results = {}
