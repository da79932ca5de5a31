"""Base classes of the public attribution methods: configuration holders."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from attribution._autograd import resolve_layer
from attribution.functional.layer import interpolate


class Attribution:
    """An attribution method bound to a model (any callable returning a tensor).

    Args:
        forward_func: the model, or any function from input tensors to an
            output tensor with the batch in dim 0.
    """

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func: expected a callable (e.g. an nn.Module), got {type(forward_func).__name__}")
        self.forward_func = forward_func

    def has_convergence_delta(self) -> bool:
        """Whether ``attribute`` can return a convergence delta."""
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether attributions are multiplied by ``inputs - baselines`` (global attribution)."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(type(self.forward_func), '__name__', 'forward_func')})"


class LayerAttribution(Attribution):
    """An attribution to the activations of one layer of the model.

    Args:
        forward_func: the model.
        layer: the module to attribute to, or its dotted name in the model
            (``"layer3.1.conv2"``).
    """

    def __init__(self, forward_func: Callable[..., Tensor], layer: nn.Module | str) -> None:
        super().__init__(forward_func)
        self.layer = resolve_layer(forward_func, layer)

    @staticmethod
    def interpolate(
        layer_attribution: Tensor, interpolate_dims: int | Sequence[int], interpolate_mode: str = "nearest"
    ) -> Tensor:
        """Upsample a layer attribution to ``interpolate_dims`` (e.g. ``input.shape[2:]``)."""
        return interpolate(layer_attribution, interpolate_dims, interpolate_mode)
