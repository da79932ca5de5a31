"""DataLoaderAttribution: feature ablation of a metric computed over a whole data loader."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any

from torch import Tensor

from attribution import registry
from attribution._internal.canonical import BaselineType, TensorOrTuple, describe, format_baselines, restore_structure
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution._internal.features import format_feature_mask
from attribution._internal.progress import progress_bar
from attribution.functional import dataloader as core
from attribution.methods.base import Attribution


class InputRole(enum.IntEnum):
    """What an element of a batch is for (Captum's names and values; plain ints work too)."""

    need_attr = core.NEED_ATTR
    """Passed to the forward and attributed (a tensor)."""
    need_forward = core.NEED_FORWARD
    """Passed to the forward, not attributed (an attention mask, say)."""
    no_forward = core.NO_FORWARD
    """Neither: only ``reduce`` sees it (a label)."""


def _format_roles(input_roles: Sequence[int] | None, size: int) -> tuple[int, ...]:
    """Validated roles, one per element of a batch (None: every element is attributed)."""
    if input_roles is None:
        return (core.NEED_ATTR,) * size
    if not isinstance(input_roles, (tuple, list)):
        raise ArgumentTypeError(f"input_roles: expected a tuple of roles (0, 1 or 2), got {describe(input_roles)}")
    if len(input_roles) != size:
        raise ArgumentError(
            f"input_roles: expected one role per element of a batch ({size}), got {len(input_roles)}: {input_roles!r}"
        )
    valid = [int(role) for role in InputRole]
    if any(isinstance(r, bool) or r not in valid for r in input_roles):
        raise ArgumentError(
            f"input_roles: each role must be one of {valid} (InputRole.need_attr, need_forward, no_forward), "
            f"got {input_roles!r}"
        )
    if core.NEED_ATTR not in input_roles:
        raise ArgumentError(f"input_roles: at least one element must be attributed (role 0), got {input_roles!r}")
    return tuple(int(r) for r in input_roles)


def _shared_by_batches(values: tuple[Tensor, ...], name: str) -> None:
    """Raise unless every tensor has a first dimension of 1: batches differ in size, so it must broadcast."""
    for i, value in enumerate(values):
        if value.shape[0] != 1:
            label = name if len(values) == 1 else f"{name}[{i}]"
            raise ArgumentError(
                f"{label}: one {name} serves every batch of the loader, so its first dimension must be 1 "
                f"(or absent), got shape {tuple(value.shape)}"
            )


def _length(dataloader: Iterable[Any]) -> int:
    """Batches per traversal, or 0 when the loader cannot tell (an unsized iterable dataset)."""
    if not isinstance(dataloader, Sized):
        return 0
    try:
        return len(dataloader)  # a DataLoader of an iterable dataset has __len__ and raises TypeError
    except TypeError:
        return 0


def _check_callable(value: Any, name: str) -> None:
    if value is not None and not callable(value):
        raise ArgumentTypeError(f"{name}: expected None or a callable, got {describe(value)}")


class DataLoaderAttribution(Attribution):
    """Feature ablation of a metric computed over a whole data loader.

    The forward runs over every batch; ``reduce`` accumulates its outputs
    (by default they are concatenated) and ``to_metric`` turns the result
    into the tensor to explain: a corpus-level accuracy, precision or loss.
    Each feature (an id of a ``feature_mask`` shared by every batch) is set
    to its baseline in every example, and gets the metric's drop.

    Several features are ablated per traversal of the loader
    (``perturbations_per_pass``), their copies stacked into one forward when
    the forward returns one row per example (it must then treat rows
    independently: no BatchNorm in training mode).  Every traversal starts
    from the caller's random state, so a shuffling loader yields the same
    order each time, and that state is restored afterwards.

    Args:
        attr_method: a :class:`FeatureAblation` of the model (the only method supported, as in Captum).

    Raises:
        ArgumentTypeError: ``attr_method`` is not a :class:`FeatureAblation`.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from attribution import DataLoaderAttribution, FeatureAblation
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(6, 3)
        >>> features, labels = torch.rand(100, 6), torch.randint(3, (100,))
        >>> loader = DataLoader(TensorDataset(features, labels), batch_size=64)
        >>> def correct(total, logits, batch):  # the number of correct predictions over the loader
        ...     hits = (logits.argmax(1) == batch[1]).sum()
        ...     return hits if total is None else total + hits
        >>> dl = DataLoaderAttribution(FeatureAblation(model))
        >>> (drops,) = dl.attribute(loader, input_roles=(0, 2), reduce=correct, perturbations_per_pass=3)
        >>> drops.shape  # per feature, the drop in correct predictions when it is set to 0
        torch.Size([1, 6])
    """

    takes_target = False
    perturbs_feature_groups = True
    _multiply_by_inputs = True

    def __init__(self, attr_method: Attribution) -> None:
        supported = registry.get("feature_ablation")
        if type(attr_method) is not supported:
            raise ArgumentTypeError(
                f"attr_method: DataLoaderAttribution supports only {supported.__name__} (as in Captum), got "
                f"{describe(attr_method)}"
            )
        super().__init__(attr_method.forward_func)
        self.attr_method = attr_method

    def attribute(
        self,
        dataloader: Iterable[Any],
        input_roles: Sequence[int] | None = None,
        baselines: BaselineType = None,
        feature_mask: TensorOrTuple | None = None,
        reduce: Callable[[Any, Any, tuple[Any, ...]], Any] | None = None,
        to_metric: Callable[[Any], Tensor] | None = None,
        perturbations_per_pass: int = 1,
        show_progress: bool = False,
        return_input_shape: bool = True,
    ) -> TensorOrTuple:
        """Ablate each feature in every example of the loader and record the metric's drop.

        Args:
            dataloader: a ``DataLoader`` or any iterable that can be traversed several times, yielding
                the same batches each time: tensors, or tuples / lists of elements.
            input_roles: per element of a batch, its role (an int, or an ``InputRole`` of
                ``attribution.methods.dataloader``): 0 (attributed), 1 (passed to the
                forward only) or 2 (not passed: a label for ``reduce``); default: all 0.  The forward
                gets the elements of roles 0 and 1 in batch order.
            baselines: what ablated features are set to, per attributed element: a number or a tensor
                broadcastable to one example (a leading 1 allowed); default 0.
            feature_mask: feature ids per attributed element, shared by every batch (no batch
                dimension, or 1); an id in several elements is one feature.  Default: every element
                of an example is its own feature.
            reduce: ``reduce(accumulated, output, batch) -> accumulated``, called for every batch and copy
                (``accumulated`` is None at first, ``batch`` the tuple of the batch's elements, the
                attributed ones perturbed).  Default: concatenate the outputs along dim 0.
            to_metric: turns the accumulated state into the metric tensor; default: it is the metric.
            perturbations_per_pass: features ablated per traversal of the loader: ``ceil(F / this)``
                traversals in all (the unperturbed metric is computed in the first).  Each feature
                holds one accumulated state until its traversal ends.
            show_progress: show a progress bar over the batches of every traversal.
            return_input_shape: True: attributions shaped ``(M, *element.shape[1:])`` per attributed
                element (each element gets its feature's drop); False: one tensor ``(M, F)``.  ``M`` is
                the number of the metric's values, in row-major order (as in Captum): ``N`` for the
                default metric of a model with ``(N,)`` or ``(N, 1)`` outputs, ``N * C`` for ``(N, C)``
                (``.view(N, C, ...)`` separates them), 1 for a 0-dim metric.

        Returns:
            The attributions: a tensor for a loader of tensors, else a tuple with one tensor per
            attributed element (when ``return_input_shape``).

        Raises:
            ArgumentTypeError: an iterator (it can be traversed only once), batches that are neither
                tensors nor tuples, a non-tensor attributed element, a metric that is not a tensor.
            ArgumentError: bad roles, masks or baselines; batches that do not match the first one;
                an empty loader; outputs the default ``reduce`` cannot concatenate.
        """
        check_int(perturbations_per_pass, "perturbations_per_pass")
        _check_callable(reduce, "reduce")
        _check_callable(to_metric, "to_metric")
        if isinstance(dataloader, Iterator) or not isinstance(dataloader, Iterable):
            raise ArgumentTypeError(
                f"dataloader: expected a DataLoader or another iterable that can be traversed several times "
                f"(a list of batches, say), got {describe(dataloader)}"
            )
        with core.DataPasses(dataloader) as passes:
            elements, given_as_tensor = core.batch_elements(passes.first_batch())
            roles = _format_roles(input_roles, len(elements))
            core.check_batch(elements, roles, None, 0)
            inputs = core.attributed(elements, roles)
            shapes = [tuple(x.shape[1:]) for x in inputs]
            formatted = format_baselines(baselines, inputs)
            _shared_by_batches(formatted, "baselines")
            features = format_feature_mask(feature_mask, inputs)
            _shared_by_batches(features.masks, "feature_mask")
            n_passes = math.ceil(features.count / perturbations_per_pass)
            total = n_passes * _length(dataloader)
            with progress_bar(show_progress, total, "DataLoaderAttribution") as progress:
                drops = core.dataloader_ablation(
                    self.forward_func,
                    passes,
                    roles,
                    formatted,
                    features,
                    shapes,
                    reduce=reduce,
                    to_metric=to_metric,
                    perturbations_per_pass=perturbations_per_pass,
                    progress=progress,
                )
        if not return_input_shape:
            return drops
        return restore_structure(core.spread_to_inputs(drops, features, inputs), given_as_tensor)
