"""Neuron selection: which unit of a hidden layer a neuron method explains, and the objective "value of
that unit".

Neuron gradient, integrated gradients, GradientSHAP, DeepLift, DeepLift SHAP,
guided backprop and deconvolution need no core of their own: they are the
input methods applied to the model *cut at the layer*
(:func:`attribution._internal.autograd.layer_output_forward`), with the neuron
selector as the target.  :func:`neuron_objective` builds that objective; pass
it to :func:`~attribution.functional.saliency` (with ``abs=False``),
:func:`~attribution.functional.integrated_gradients` and so on.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, TypeGuard, Union

from torch import Tensor, nn

from attribution._internal.autograd import layer_output_forward
from attribution._internal.canonical import Objective, Target, describe, format_target
from attribution._internal.checks import ArgumentError, ArgumentTypeError

NeuronSelector = Union[int, tuple[Union[int, slice], ...], Callable[[Tensor], Tensor]]


def neuron_target(neuron_selector: NeuronSelector, n: int) -> Target:
    """The unit (one value per row of the layer's output) that ``neuron_selector`` picks.

    Accepted: an int (a layer with one dimension per example), a tuple with
    one int per dimension of the layer's output after the batch, a tuple
    holding slices (the selected units are summed, as in Captum), or a
    callable from the layer's output to one value per row.

    Raises:
        TypeError: for any other kind of selector.
    """
    if isinstance(neuron_selector, tuple) and not _without_slices(neuron_selector):
        return Target(n, fn=SliceSum(neuron_selector), name="neuron_selector")
    is_int = isinstance(neuron_selector, numbers.Integral) and not isinstance(neuron_selector, bool)
    if not (is_int or isinstance(neuron_selector, tuple) or callable(neuron_selector)):
        raise ArgumentTypeError(
            "neuron_selector: expected an int, a tuple of ints (one per layer dimension after the batch) "
            f"or a callable from the layer output to one value per row, got {describe(neuron_selector)}"
        )
    return format_target(neuron_selector, n, name="neuron_selector")


def _without_slices(selector: tuple[int | slice, ...]) -> TypeGuard[tuple[int, ...]]:
    return not any(isinstance(s, slice) for s in selector)


class SliceSum:
    """A selector with slices, as in Captum: the sum of the units it covers, per row."""

    def __init__(self, selector: tuple[int | slice, ...]) -> None:
        for s in selector:
            if not isinstance(s, slice) and (isinstance(s, bool) or not isinstance(s, numbers.Integral)):
                raise ArgumentTypeError(f"neuron_selector: entries must be ints or slices, got {describe(s)}")
        self.selector = selector

    def __call__(self, output: Tensor) -> Tensor:
        if len(self.selector) > output.dim() - 1:
            raise ArgumentError(
                f"neuron_selector: {len(self.selector)} indices for a layer output of shape {tuple(output.shape)}"
            )
        index = (slice(None), *self.selector)  # (not inline: mypy reads x[(a, *b)] as 3.11's x[a, *b])
        try:
            picked = output[index]
        except IndexError as error:
            raise ArgumentError(
                f"neuron_selector: {self.selector} does not fit the layer output of shape {tuple(output.shape)} "
                f"({error})"
            ) from None
        return picked.reshape(output.shape[0], -1).sum(1)


class _UpToLayer(nn.Module):
    """The model cut at a layer, as a module, so that model-wide context (DeepLift puts batch
    norm in eval mode) still finds the model's modules.  The model is not modified."""

    def __init__(self, model: nn.Module, cut: Callable[..., Tensor]) -> None:
        super().__init__()
        self.model = model
        self._cut = cut

    def forward(self, *args: Any) -> Tensor:
        return self._cut(*args)


def neuron_objective(
    forward_func: Callable[..., Tensor],
    layer: nn.Module,
    neuron_selector: NeuronSelector | Target,
    n: int,
    additional_args: tuple[Any, ...] = (),
    *,
    attribute_to_neuron_input: bool = False,
) -> Objective:
    """The objective "value of the selected unit of ``layer``" for a batch of ``n``.

    The forward stops as soon as the layer has run.  Input methods applied to
    this objective are the neuron methods.

    Args:
        forward_func: the model.
        layer: the module whose output (or input) holds the unit.
        neuron_selector: see :func:`neuron_target`, or a ready :class:`~attribution.Target`.
        n: the batch size.
        additional_args: extra forward arguments, already a tuple.
        attribute_to_neuron_input: select from the layer's input instead.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution.functional import neuron_objective, saliency
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> x = torch.rand(2, 3, 8, 8)
        >>> objective = neuron_objective(model, model[0], (1, 2, 3), len(x))  # unit (channel, row, col) of model[0]
        >>> (grads,) = saliency(objective, (x,), abs=False)
        >>> torch.allclose(grads[:, :, 1:4, 2:5], model[0].weight[1].expand(2, 3, 3, 3))  # the unit's 3 x 3 kernel
        True
    """
    cut = layer_output_forward(forward_func, layer, attribute_to_neuron_input)
    if isinstance(forward_func, nn.Module):
        cut = _UpToLayer(forward_func, cut)
    target = neuron_selector if isinstance(neuron_selector, Target) else neuron_target(neuron_selector, n)
    return Objective(cut, target, additional_args)
