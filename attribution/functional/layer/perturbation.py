"""Layer perturbation methods' core: ablate or shuffle a hidden layer's units.

Layer feature ablation and permutation treat the layer's values as the
inputs of :func:`~attribution.functional.feature_ablation` and
:func:`~attribution.functional.feature_permutation`: the objective built by
:func:`through_layer` runs the model on the original inputs with the
layer's output (or input) replaced by the perturbed values.  The shared
evaluator then stacks many perturbed copies per forward, as for input
features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.canonical import Objective
from attribution._internal.checks import ArgumentError
from attribution._internal.features import FeatureMasks
from attribution.functional.perturbation import feature_ablation, feature_permutation


class _LayerReached(Exception):
    """Raised by the capturing hook: nothing after the layer is needed to read its values."""


@contextmanager
def _capture(layer: nn.Module, use_input: bool, found: list[Any]) -> Iterator[None]:
    """Record the layer's output (or the tensors its input starts with) in ``found``, then stop the forward."""

    def on_input(module: nn.Module, args: tuple[Any, ...]) -> None:
        found.append(args)
        raise _LayerReached

    def on_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        found.append(output)
        raise _LayerReached

    handle = layer.register_forward_pre_hook(on_input) if use_input else layer.register_forward_hook(on_output)
    try:
        yield
    except _LayerReached:
        pass
    finally:
        handle.remove()


def layer_values(
    objective: Objective, inputs: tuple[Tensor, ...], layer: nn.Module, *, use_input: bool = False
) -> tuple[tuple[Tensor, ...], bool]:
    """The layer's output (or input) for ``inputs``, from a forward that stops once the layer has run.

    A layer input is the run of tensors its positional arguments start with
    (what the substitution replaces); an output is a tensor or a
    tuple of tensors.  Values of any dtype are kept (an integer output can be
    ablated too).

    Returns:
        ``(values, as_tuple)``: detached copies, and whether attributions go back as a tuple (the layer
        returned a tuple, or takes several tensors).

    Raises:
        ValueError: the layer does not run, or its output (input) holds no tensor or non-tensors.
    """
    found: list[Any] = []
    with torch.inference_mode(), _capture(layer, use_input, found):
        objective.forward(inputs)
    what = "input" if use_input else "output"
    if not found:
        raise ArgumentError(f"layer: {type(layer).__name__} did not run in the model's forward")
    value = found[0]
    if use_input:
        count = next((i for i, v in enumerate(value) if not isinstance(v, Tensor)), len(value))
        values, as_tuple = tuple(value[:count]), count > 1
    else:
        values, as_tuple = (value,) if isinstance(value, Tensor) else value, isinstance(value, tuple)
    if not values or not isinstance(values, tuple) or not all(isinstance(v, Tensor) for v in values):
        raise ArgumentError(
            f"layer: expected the {what} of {type(layer).__name__} to be a tensor or a tuple of tensors "
            f"with the batch first, got {type(value).__name__}"
        )
    n = inputs[0].shape[0]
    if any(v.dim() == 0 or v.shape[0] != n for v in values):
        raise ArgumentError(
            f"layer: the {what} of {type(layer).__name__} must have the batch ({n}) first, "
            f"got shapes {[tuple(v.shape) for v in values]}"
        )
    # Cloned outside inference mode: ordinary tensors, and none aliases the caller's inputs.
    return tuple(v.clone() for v in values), as_tuple


@contextmanager
def _substituted(layer: nn.Module, values: tuple[Tensor, ...], use_input: bool) -> Iterator[None]:
    """Within the block, ``layer`` outputs (or receives, as its leading arguments) ``values``.

    A second run in the same forward is refused at once: the values of the
    first would otherwise reach a place whose shape they need not fit.
    """
    calls: list[int] = []

    def check(module: nn.Module) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise ArgumentError(
                f"layer: {type(module).__name__} ran {len(calls)} times in one forward; layer perturbation "
                f"needs a module that runs exactly once (use a separate module instance per use)"
            )

    def replace_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        check(module)
        return values + tuple(args[len(values) :])

    def replace_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        check(module)
        return values if isinstance(output, tuple) else values[0]

    hook = layer.register_forward_pre_hook(replace_input) if use_input else layer.register_forward_hook(replace_output)
    try:
        yield
    finally:
        hook.remove()
    if not calls:
        raise ArgumentError(f"layer: {type(layer).__name__} did not run in the model's forward")


class _ThroughLayer:
    """The model with ``layer``'s output (or input) taken from its first ``count`` arguments.

    The remaining arguments are the model's own.  The values are cloned
    before they go downstream, so in-place ops there never change them.
    """

    def __init__(self, forward_func: Callable[..., Any], layer: nn.Module, count: int, use_input: bool) -> None:
        self.forward_func, self.layer, self.count, self.use_input = forward_func, layer, count, use_input

    def __call__(self, *args: Any) -> Any:
        values = tuple(v.clone() for v in args[: self.count])
        with _substituted(self.layer, values, self.use_input):
            return self.forward_func(*args[self.count :])


def through_layer(
    objective: Objective, inputs: tuple[Tensor, ...], layer: nn.Module, count: int, *, use_input: bool = False
) -> Objective:
    """An objective over ``count`` layer values: the model's target with the layer's output (input) replaced.

    The original ``inputs`` travel as extra forward arguments, so they are
    repeated with every stacked copy of the layer values (and split with
    them for a forward that returns one value per batch).
    """
    forward = _ThroughLayer(objective.forward_func, layer, count, use_input)
    return Objective(forward, objective.target, tuple(inputs) + objective.additional_args)


def layer_feature_ablation(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    values: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    features: FeatureMasks,
    layer: nn.Module,
    *,
    attribute_to_layer_input: bool = False,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, ...]:
    """Each group of layer units gets the target's drop when the group is set to its baseline.

    Args:
        objective: the model's target for the batch ``inputs``.
        values: the layer's values for ``inputs`` (its output, or input, from a forward that stops there).
        baselines, features: per layer tensor, broadcastable to ``values``; group ids shared across them.
        layer: the module whose output (input) ``values`` are.

    Returns:
        Attributions shaped like ``values``.
    """
    through = through_layer(objective, inputs, layer, len(values), use_input=attribute_to_layer_input)
    return feature_ablation(
        through, values, baselines, features, perturbations_per_eval=perturbations_per_eval, progress=progress
    )


def layer_feature_permutation(
    objective: Objective,
    inputs: tuple[Tensor, ...],
    values: tuple[Tensor, ...],
    features: FeatureMasks,
    layer: nn.Module,
    *,
    attribute_to_layer_input: bool = False,
    perturbations_per_eval: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, ...]:
    """Each group of layer units gets the target's change when the group is shuffled across the batch
    (torch's global generator draws the permutations); arguments as in :func:`layer_feature_ablation`."""
    through = through_layer(objective, inputs, layer, len(values), use_input=attribute_to_layer_input)
    return feature_permutation(
        through, values, features, perturbations_per_eval=perturbations_per_eval, progress=progress
    )
