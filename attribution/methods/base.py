"""Base classes of the public attribution methods: configuration holders whose traits are data.

What differs between methods (which argument picks what is explained, whether
a layer is needed and whether it must give a spatial map, whether attributions
are multiplied by the inputs, whether a convergence delta is returned, whether
features are perturbed in groups, whether the global random generator is drawn
from) is declared as class attributes here and overridden per family; the registry's
records read them (:func:`attribution.registry.record`), so callers ask a
record instead of testing method names.  Small helpers that several family
modules share live here too, so no family module imports another.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, Union

import torch
from torch import Tensor, nn

from attribution import functional
from attribution._internal.autograd import resolve_layer
from attribution._internal.canonical import (
    BaselineType,
    CanonicalCall,
    TargetType,
    TensorOrTuple,
    canonical_call,
    describe,
    format_additional_args,
    format_baselines,
    format_inputs,
)
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice, check_int
from attribution.functional.layer.maps import interpolate
from attribution.functional.neuron.selection import neuron_objective
from attribution.functional.path import convergence_delta, endpoint_outputs

WithDelta = Union[TensorOrTuple, tuple[TensorOrTuple, Tensor]]
"""What ``attribute`` returns: the attributions, or ``(attributions, delta)`` with ``return_convergence_delta=True``."""
_A = TypeVar("_A")
_D = TypeVar("_D")


class Attribution:
    """An attribution method bound to a model (any callable returning a tensor).

    Args:
        forward_func: the model, or any function from input tensors to an
            output tensor with the batch in dim 0.

    Raises:
        TypeError: ``forward_func`` is not callable.
        ValueError: the model's parameters are on the meta device (no data yet).
    """

    takes_target: ClassVar[bool] = True
    """``attribute`` takes ``target``: the model output (class) to explain."""
    takes_neuron_selector: ClassVar[bool] = False
    """``attribute`` takes ``neuron_selector``: the hidden unit to explain."""
    returns_delta: ClassVar[bool] = False
    """``attribute`` accepts ``return_convergence_delta=True``."""
    perturbs_feature_groups: ClassVar[bool] = False
    """A coalition method: it switches groups of features (``feature_mask``) on and off."""
    needs_float_inputs: ClassVar[bool] = False
    """Gradients are taken with respect to the inputs, so they must be floating point (not token ids)."""
    draws_random_numbers: ClassVar[bool] = False
    """``attribute`` draws from torch's global random generator (samples, permutations, noise): seed it for
    reproducible results; the generator's state changes with every call."""
    _multiply_by_inputs: bool = False
    """Whether attributions are multiplied by ``inputs - baselines``: a class trait, set per instance by the
    constructors that take ``multiply_by_inputs``."""
    registry_name: ClassVar[str]  # set by attribution.registry.register on the classes it registers
    attribute: Callable[..., Any]  # every method defines its own attribute(inputs, ...), as in Captum

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        if not callable(forward_func):
            raise ArgumentTypeError(
                f"forward_func: expected a callable (e.g. an nn.Module), got {type(forward_func).__name__}"
            )
        _check_materialized(forward_func)
        self.forward_func = forward_func

    def attribute_future(self, *args: Any, **kwargs: Any) -> torch.futures.Future[Any]:
        """Captum's ``attribute`` for forwards that return a ``torch.futures.Future``: only
        :class:`~attribution.FeatureAblation`, :class:`~attribution.FeaturePermutation`,
        :class:`~attribution.ShapleyValueSampling` and :class:`~attribution.ShapleyValues` have it, as in
        Captum; the others raise ``NotImplementedError``."""
        raise NotImplementedError(
            f"attribute_future is not implemented for {type(self).__name__} (FeatureAblation, "
            f"FeaturePermutation and the Shapley classes take a forward that returns a torch.futures.Future)"
        )

    def has_convergence_delta(self) -> bool:
        """Whether ``attribute`` can return a convergence delta."""
        return self.returns_delta

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether attributions are multiplied by ``inputs - baselines`` (global attribution)."""
        return self._multiply_by_inputs

    def compute_convergence_delta(
        self,
        attributions: TensorOrTuple,
        start_point: BaselineType,
        end_point: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """Per example: the attributions' total minus ``f(end_point) - f(start_point)`` for ``target``.

        Zero for a complete method; Captum's public method, for any attributions (of inputs or of a
        layer: only their per-example totals count).  ``start_point`` is given like ``baselines``.

        Raises:
            ArgumentError: attributions whose batch size is not the end point's, or bad points or target.
        """
        call = canonical_call(self.forward_func, end_point, target, additional_forward_args)
        starts = format_baselines(start_point, call.inputs)
        attrs = (attributions,) if isinstance(attributions, Tensor) else attributions
        n = call.inputs[0].shape[0]
        if not isinstance(attrs, (tuple, list)) or not all(isinstance(a, Tensor) for a in attrs):
            raise ArgumentTypeError(
                f"attributions: expected a tensor or a tuple of tensors, got {describe(attributions)}"
            )
        if any(a.dim() == 0 or a.shape[0] != n for a in attrs):
            shapes = [tuple(a.shape) for a in attrs]
            raise ArgumentError(f"attributions: expected a batch of {n} (the end point's) first, got shapes {shapes}")
        start_out, end_out = endpoint_outputs(call.objective, starts, call.inputs)
        with torch.no_grad():
            return convergence_delta(tuple(attrs), start_out, end_out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(type(self.forward_func), '__name__', 'forward_func')})"


def _check_materialized(forward_func: Callable[..., Any]) -> None:
    """Refuse a model built on the meta device, whose forward would fail deep inside torch.

    The model is ``forward_func`` itself, the module of a bound ``forward``, or the ``.model`` of a wrapper
    such as :class:`attribution.outputs.ModelScores`.  Only the first parameter is looked at (a generator
    ``next``, cheap for any model): meta models are built that way as a whole.
    """
    candidates = (forward_func, getattr(forward_func, "__self__", None), getattr(forward_func, "model", None))
    model = next((c for c in candidates if isinstance(c, nn.Module)), None)
    if model is None:
        return
    first = next(model.parameters(), None)
    if first is not None and first.is_meta:
        raise ArgumentError(
            f"forward_func: the parameters of {type(model).__name__} are on the meta device (shapes without data, "
            f"as under torch.device('meta')), so it cannot run; materialise them first, "
            f"model.to_empty(device='cpu') (or 'cuda'), then load the weights (model.load_state_dict(...))"
        )


class GradientAttribution(Attribution):
    """A method that backpropagates through the model (saliency, path methods, rule-based backprop, and the
    layer and neuron methods built on gradients): Captum's base class of that name, for ``isinstance``."""


class PerturbationAttribution(Attribution):
    """A method that only runs the model forward on perturbed inputs (ablation, occlusion, permutation,
    Shapley values, surrogate models): Captum's base class of that name.  Attributions count
    ``inputs - baselines`` in (surrogate models' coefficients, as in Captum, do not)."""

    _multiply_by_inputs = True


class InternalAttribution(Attribution):
    """A method that needs one layer of the model (or, where it says so, a list of them).

    Args:
        forward_func: the model.
        layer: the module, or its dotted name in the model (``"layer3.1.conv2"``).
    """

    attributes_to_layer: ClassVar[bool] = False
    """Attributions are shaped like the layer's activations (False: like the inputs)."""
    accepts_layer_lists: ClassVar[bool] = False
    """``layer`` may be a list of layers, as in Captum; ``attribute`` then returns a list, one entry per layer."""
    needs_spatial_layer: ClassVar[bool] = False
    """The layer must give a spatial map ``(N, C, h, w)`` (or a ``reshape_transform`` must make one), which the
    method pools per channel as GradCAM does."""

    def __init__(self, forward_func: Callable[..., Tensor], layer: nn.Module | str | list[nn.Module | str]) -> None:
        super().__init__(forward_func)
        self.layer: nn.Module | list[nn.Module]
        if isinstance(layer, list) and self.accepts_layer_lists:
            if not layer:
                raise ArgumentError("layer: expected a layer or a non-empty list of layers, got []")
            self.layer = [resolve_layer(forward_func, one) for one in layer]
        elif isinstance(layer, list):  # (resolve_layer's message)
            raise ArgumentTypeError(f"layer: expected an nn.Module or a dotted module name, got {type(layer).__name__}")
        else:
            self.layer = resolve_layer(forward_func, layer)

    def layers(self) -> list[nn.Module]:
        """The layers to attribute to: ``[self.layer]``, or the list it was given."""
        return self.layer if isinstance(self.layer, list) else [self.layer]

    def _one_layer(self) -> nn.Module:
        """``self.layer`` of a method that takes one layer (without ``accepts_layer_lists`` the constructor
        refuses a list)."""
        if isinstance(self.layer, list):
            raise ArgumentTypeError(f"layer: {type(self).__name__} takes one layer, got a list")
        return self.layer


class LayerAttribution(InternalAttribution):
    """Attributions to a layer's activations (its input or output), or through it.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name in the model (``"layer3.1.conv2"``).
    """

    attributes_to_layer = True

    @staticmethod
    def interpolate(
        layer_attribution: Tensor, interpolate_dims: int | Sequence[int], interpolate_mode: str = "nearest"
    ) -> Tensor:
        """Upsample a layer attribution ``(N, C, *spatial)`` to ``interpolate_dims`` (e.g. ``input.shape[2:]``).

        Raises:
            ValueError: maps without spatial dims, sizes < 1, the wrong number of sizes (an int serves every
                spatial dim), or a mode for another number of spatial dims.
            TypeError: ``interpolate_dims`` is not an int or a sequence of ints.
        """
        return interpolate(layer_attribution, interpolate_dims, interpolate_mode)


class MultipliedLayerAttribution(LayerAttribution, GradientAttribution):
    """A gradient method to a layer whose constructor takes ``multiply_by_inputs`` (Captum's global or local
    attribution)."""

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: nn.Module | str | list[nn.Module | str],
        multiply_by_inputs: bool = True,
    ) -> None:
        super().__init__(forward_func, layer)
        self._multiply_by_inputs = multiply_by_inputs


def layer_output(values: tuple[Tensor, ...], was_tuple: bool) -> TensorOrTuple:
    """One tensor per tensor the layer produced: a tuple exactly when the layer returned (took) several."""
    return values if was_tuple else values[0]


class NeuronAttribution(InternalAttribution):
    """Attributions of one hidden unit (``neuron_selector``) of a layer to the inputs.

    Args:
        forward_func: the model.
        layer: the module, or its dotted name in the model.
    """

    takes_target = False
    takes_neuron_selector = True

    def _neuron_call(
        self, inputs: TensorOrTuple, neuron_selector: Any, additional_forward_args: Any, to_input: bool
    ) -> CanonicalCall:
        """The canonical call whose objective is the selected unit's value (the model cut at the layer)."""
        values, given_as_tensor = format_inputs(inputs, require_float=self.needs_float_inputs)
        objective = neuron_objective(
            self.forward_func,
            self._one_layer(),
            neuron_selector,
            values[0].shape[0],
            format_additional_args(additional_forward_args),
            attribute_to_neuron_input=to_input,
        )
        return CanonicalCall(values, given_as_tensor, objective)


class GradientNeuronAttribution(NeuronAttribution, GradientAttribution):
    """A gradient method of one unit of ``layer`` (module or dotted name) to the input features."""

    needs_float_inputs = True


class GlobalNeuronAttribution(GradientNeuronAttribution):
    """A gradient method of one unit whose constructor takes ``multiply_by_inputs``."""

    def __init__(
        self, forward_func: Callable[..., Tensor], layer: nn.Module | str, multiply_by_inputs: bool = True
    ) -> None:
        super().__init__(forward_func, layer)
        self._multiply_by_inputs = multiply_by_inputs


class _Attributes(Protocol):
    """What :func:`attribute_with_future_forward` needs of a method."""

    forward_func: Callable[..., Any]

    def attribute(self, *args: Any, **kwargs: Any) -> Any: ...


class FutureForward:
    """Captum's ``attribute_future`` for a method that only runs the model forward: it takes a forward that
    returns ``torch.futures.Future`` values (see :func:`attribute_with_future_forward`)."""

    def attribute_future(self: _Attributes, *args: Any, **kwargs: Any) -> torch.futures.Future[Any]:
        """:meth:`attribute` (same arguments) for a forward that returns ``torch.futures.Future`` values;
        returns the attributions as a completed future (Captum's method)."""
        return attribute_with_future_forward(self, *args, **kwargs)


def attribute_with_future_forward(method: _Attributes, *args: Any, **kwargs: Any) -> torch.futures.Future[Any]:
    """``method.attribute(*args, **kwargs)`` for a forward that returns futures: each is waited for as the
    evaluator needs its values, and the attributions come back as a completed future."""
    forward = method.forward_func

    def waited(*inputs: Any) -> Any:
        # The forward may compute in another thread, outside our inference mode: hand it normal tensors.
        with torch.inference_mode(False):
            inputs = tuple(x.clone() if isinstance(x, Tensor) and x.is_inference() else x for x in inputs)
        output = forward(*inputs)
        if not isinstance(output, torch.Future):
            raise ArgumentError(
                f"forward_func: attribute_future needs a forward that returns a torch.futures.Future, "
                f"got {describe(output)}; call attribute instead"
            )
        return output.wait()

    twin = copy.copy(method)  # the caller's object keeps its forward
    twin.forward_func = waited
    attributions = twin.attribute(*args, **kwargs)
    done: torch.futures.Future[None] = torch.futures.Future()
    done.set_result(None)
    return done.then(lambda _: attributions)  # a torch.Future, the type Captum returns


def check_path_arguments(n_steps: int, method: str, internal_batch_size: int | None, nodes: int | None = None) -> None:
    """Validate the quadrature arguments of a path method.

    ``nodes`` is the number of points the rule is given (``n_steps`` unless a
    method asks for more, as layer conductance does).
    """
    check_int(n_steps, "n_steps")
    check_choice(method, "method", functional.INTEGRATION_METHODS)
    if method == "riemann_trapezoid" and (n_steps if nodes is None else nodes) < 2:
        raise ArgumentError(f"n_steps: the trapezoid rule needs at least 2 steps, got {n_steps}")
    check_int(internal_batch_size, "internal_batch_size", allow_none=True)


def with_delta(attributions: _A, delta: _D | None, requested: bool) -> _A | tuple[_A, _D]:
    """``(attributions, delta)`` when the caller asked for the convergence delta, else the attributions."""
    if not requested:
        return attributions
    if delta is None:  # the cores compute the delta whenever it is asked for
        raise RuntimeError("with_delta: the convergence delta was requested but not computed")
    return attributions, delta
