"""Sanity check of explanations: cascading model-parameter randomization (Adebayo et al., 2018).

An explanation method that ignores the model (an edge detector in disguise)
gives the same maps after the weights are randomized; a faithful one does
not.  :func:`model_randomization_check` re-initialises a copy of the model
layer by layer from the output down and reports how similar the explanations
stay to those of the intact model; :func:`randomization_similarity` is its
one-number form, the similarity once the top layers are re-initialised.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice
from attribution.metrics.similarity import SIMILARITY_MEASURES, similarity

Explain = Callable[[nn.Module, Any], Tensor]


def model_randomization_check(
    model: nn.Module,
    explain: Explain,
    inputs: Any,
    *,
    measure: str = "spearman",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    **measure_kwargs: Any,
) -> list[tuple[str, Tensor]]:
    """Similarity to the intact model's explanations as layers are randomized top-down, cumulatively.

    Works on ``copy.deepcopy(model)``: the model itself, its modes,
    parameters, gradients and the global RNG streams are left as they were.
    The copy keeps the model's training flags, so call ``model.eval()`` first
    if the explanations should not see dropout or batch statistics.

    Each listed layer is re-initialised in turn, keeping the earlier ones
    random, with its ``reset_parameters()`` where it has one (note that
    normalization layers reset to their identity affine parameters), else by
    drawing each of its parameters from ``N(0, 1 / fan_in)`` (``N(0, 1)`` for
    vectors).  Draws come from a private RNG stream seeded with ``seed``; every
    call of ``explain`` starts from the same seeded state, so a noisy method
    (SmoothGrad, GradientShap) sees the same noise at every step.

    Args:
        model: the trained model.
        explain: ``explain(model_copy, inputs) -> attributions``, e.g.
            ``lambda m, x: Saliency(m).attribute(x, target=labels)``; it must
            return maps of the same shape at every step.
        inputs: passed to ``explain`` as they are.
        measure: one of :data:`SIMILARITY_MEASURES`.
        layers: dotted module names, randomized in this order (all the
            parameters under each); None takes every module that holds
            parameters directly, in reverse registration order (output
            first), and re-initialises only those direct parameters.
        seed: seed of the re-initialisation stream and of each ``explain`` call.
        **measure_kwargs: passed to the measure (e.g. ``k=0.05`` for ``"top_k"``).

    Returns:
        ``[(layer_name, similarity), ...]`` in randomization order, each
        similarity a tensor of shape ``(N,)`` comparing the explanation after
        randomizing that layer (and the ones before it) with the intact copy's.

    Raises:
        TypeError: ``model`` is not a module, ``explain`` is not callable,
            ``layers`` is not a sequence of names, or ``explain`` returns no tensor.
        ValueError: an unknown measure or layer name, no layer to randomize, or a bad ``seed``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import Saliency
        >>> from attribution.metrics import model_randomization_check
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 2])
        >>> steps = model_randomization_check(model, lambda m, x: Saliency(m).attribute(x, target=y), x)
        >>> [(name, s.shape) for name, s in steps]  # the Linear first, then the Conv2d; a score per example
        [('4', torch.Size([2])), ('0', torch.Size([2]))]
    """
    _check_arguments(model, explain, measure, seed)
    names = _layer_names(model, layers)
    recurse = layers is not None  # a named block is randomized whole, a default layer holds its own parameters
    twin = copy.deepcopy(model)
    modules = dict(twin.named_modules())
    devices = _cuda_devices(twin, inputs)
    reference = _explain(explain, twin, inputs, seed, devices)
    similarity(reference, reference, measure, **measure_kwargs)  # bad options fail before any randomization
    steps = []
    with _seeded(seed, devices):
        for name in names:
            _reinitialise(modules[name], recurse)
            now = _explain(explain, twin, inputs, seed, devices)
            steps.append((name, similarity(reference, now, measure, **measure_kwargs)))
    return steps


def randomization_similarity(
    model: nn.Module,
    explain: Explain,
    inputs: Any,
    *,
    top_layers: int = 1,
    measure: str = "spearman",
    seed: int = 0,
    explanations: Tensor | None = None,
    **measure_kwargs: Any,
) -> Tensor:
    """Per example, the similarity of the explanation to that of a copy whose top layers are re-initialised.

    The layers are the ``top_layers`` last modules that hold parameters directly, in reverse registration
    order (for most models the classifier head first), exactly the first ``top_layers`` steps of
    :func:`model_randomization_check` with its default layers: the same copy, the same re-initialisation
    from a private RNG stream seeded with ``seed``, and each ``explain`` call from that same seeded state.
    A low similarity says that the explanation depends on what those layers learnt; an explanation that
    ignores the model scores 1.  The model itself, its modes, parameters, gradients and the global RNG
    streams are left as they were.

    Args:
        model: the trained model.
        explain: ``explain(model_copy, inputs) -> attributions``, as for :func:`model_randomization_check`.
        inputs: passed to ``explain`` as they are.
        top_layers: how many layers to re-initialise (>= 1), counted from the output.
        measure: one of :data:`SIMILARITY_MEASURES`.
        seed: seed of the re-initialisation stream and of each ``explain`` call.
        explanations: the intact model's attributions, when the caller already has them (then ``explain``
            runs once, on the randomized copy); None explains an intact copy first.  Give them only for a
            method that draws no random numbers, or made from the same seeded state.
        **measure_kwargs: passed to the measure (e.g. ``k=0.05`` for ``"top_k"``).

    Returns:
        A tensor of shape ``(N,)``.

    Raises:
        TypeError: ``model`` is not a module, ``explain`` is not callable or returns no tensor,
            ``explanations`` is not a tensor.
        ValueError: an unknown measure, a bad ``seed`` or ``top_layers`` (more than the model's layers
            with parameters), or explanations that do not fit the measure.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import Saliency
        >>> from attribution.metrics import randomization_similarity
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
        >>> randomization_similarity(model, lambda m, x: x.clone(), x)  # ignores the model: an edge detector
        tensor([1., 1., 1.])
        >>> similarity = randomization_similarity(model, lambda m, x: Saliency(m).attribute(x, target=y), x)
        >>> bool((similarity < 1).all())  # the gradient depends on the last layer's weights
        True
    """
    _check_arguments(model, explain, measure, seed)
    names = _layer_names(model, None)
    if isinstance(top_layers, bool) or not isinstance(top_layers, numbers.Integral) or not 1 <= top_layers:
        raise ArgumentError(f"top_layers: expected an int >= 1, got {top_layers!r}")
    if top_layers > len(names):
        raise ArgumentError(
            f"top_layers: expected at most {len(names)}, the model's layers with parameters ({names}), got {top_layers}"
        )
    if explanations is not None and not isinstance(explanations, Tensor):
        raise ArgumentTypeError(
            f"explanations: expected a tensor of attributions or None, got {describe(explanations)}"
        )
    twin = copy.deepcopy(model)
    for parameter in twin.parameters():
        parameter.grad = None  # the copy's gradients are never read: no need to hold them twice
    modules = dict(twin.named_modules())
    devices = _cuda_devices(twin, inputs)
    if explanations is None:
        reference = _explain(explain, twin, inputs, seed, devices)
    else:
        reference = explanations.detach()
    similarity(reference, reference, measure, **measure_kwargs)  # bad options fail before the explanation
    with _seeded(seed, devices):
        for name in names[:top_layers]:
            _reinitialise(modules[name], recurse=False)
    randomized = _explain(explain, twin, inputs, seed, devices)
    return similarity(reference, randomized, measure, **measure_kwargs)


def _check_arguments(model: Any, explain: Any, measure: Any, seed: Any) -> None:
    """What both checks take: a module, an explainer, a similarity measure and a seed."""
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model: expected a torch.nn.Module, got {describe(model)}")
    if not callable(explain):
        raise ArgumentTypeError(
            f"explain: expected a callable explain(model, inputs) -> attributions, got {describe(explain)}"
        )
    check_choice(measure, "measure", SIMILARITY_MEASURES)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ArgumentError(f"seed: expected an int >= 0, got {seed!r}")


def _layer_names(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The layers to randomize, checked against the model's modules."""
    named = dict(model.named_modules())
    if layers is None:
        names = [name for name, m in named.items() if any(True for _ in m.parameters(recurse=False))][::-1]
        if not names:
            raise ArgumentError("model: it has no parameters, so there is nothing to randomize")
        return names
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers):
        raise ArgumentTypeError(f"layers: expected a sequence of module names (or None), got {describe(layers)}")
    if not layers:
        raise ArgumentError("layers: expected at least one module name, got an empty sequence")
    for name in layers:
        check_choice(name, "layers", [n for n, m in named.items() if any(True for _ in m.parameters())])
    return list(layers)


def _reinitialise(layer: nn.Module, recurse: bool) -> None:
    """Fresh parameters for ``layer`` (and every module under it if ``recurse``) from the current RNG stream."""
    for module in layer.modules() if recurse else [layer]:
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            continue
        with torch.no_grad():
            for p in own:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.normal_(0.0, 1.0 / math.sqrt(fan_in))


def _explain(explain: Explain, model: nn.Module, inputs: Any, seed: int, devices: list[int]) -> Tensor:
    """``explain(model, inputs)`` from the same seeded state each time, detached and copied.

    Copied because a result may share storage with the model (a cached map, a parameter view) and the next
    re-initialisation is in place.
    """
    with _seeded(seed, devices):
        out = explain(model, inputs)
    if not isinstance(out, Tensor):
        raise ArgumentTypeError(f"explain: expected it to return a tensor of attributions, got {describe(out)}")
    return out.detach().clone()


@contextmanager
def _seeded(seed: int, devices: list[int]) -> Iterator[None]:
    """A private RNG stream: the CPU and the given CUDA generators seeded inside, restored on exit."""
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        for index in devices:  # seed only the forked devices, never queue a seed for the others
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def _cuda_devices(model: nn.Module, inputs: Any) -> list[int]:
    """Indices of the CUDA devices that the copy's parameters and the inputs live on."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [inputs] if isinstance(inputs, Tensor) else [x for x in _flatten(inputs) if isinstance(x, Tensor)]
    indices = {
        t.device.index if t.device.index is not None else torch.cuda.current_device()
        for t in tensors
        if t.device.type == "cuda"
    }
    return sorted(indices)


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _flatten(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _flatten(item)]
    return [value]
