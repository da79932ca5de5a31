"""The callbacks' arguments, checked when they are built (the trainer's strategy and the model at the start
of fit): a mistake fails at once, naming the argument, not at the first logged epoch (or at every one)."""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, Strategy
from torch import Tensor

from attribution import registry
from attribution.utils import check_choice, check_int
from lightning_xai._config import tags
from lightning_xai._config.choices import OnError, PredictionTarget, Similarity
from lightning_xai._config.probe import Probe
from lightning_xai._config.schedule import Schedule


def misconfigured(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an argument check; report failures as Lightning's MisconfigurationException."""
    try:
        return check(*args, **kwargs)
    except (ValueError, TypeError) as error:
        raise MisconfigurationException(str(error)) from error


def check_literal(value: Any, name: str, choices: Any) -> None:
    """Refuse ``value`` unless it is one of the values of the ``Literal`` type ``choices`` (listed if not)."""
    misconfigured(check_choice, value, name, get_args(choices))


def tag_prefix(owner: str, name: Any) -> str:
    """``name`` checked as the prefix of a monitor's tags: a non-empty string, no "/" or space at either end."""
    if not isinstance(name, str) or not name or name != name.strip("/ "):
        raise MisconfigurationException(
            f"{owner}: name must be a tag prefix such as 'robustness_l2' (non-empty, no '/' or space at either "
            f"end), got {name!r}"
        )
    return name


def is_int(value: Any) -> bool:
    """A whole number that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_scalars(
    *,
    layer: Any,
    gradcam: Any,
    num_probe_samples: Any,
    target: Any,
    on_error: Any,
    seed: Any,
    similarity: Any,
    artifact_dir: Any,
    input_key: Any,
    output_transform: Any,
) -> None:
    """Validate the monitor's single-valued arguments."""
    misconfigured(check_int, num_probe_samples, "num_probe_samples")
    check_literal(on_error, "on_error", OnError)
    check_literal(similarity, "similarity", Similarity)
    named = get_args(PredictionTarget)
    if not (target in named or (is_int(target) and target >= 0)):
        expected = ", ".join(repr(name) for name in named)
        raise MisconfigurationException(f"target: expected {expected} or a class index >= 0, got {target!r}")
    if layer is not None and not (isinstance(layer, str) and layer):
        raise MisconfigurationException(f"layer: expected a dotted module name such as 'layer4', got {layer!r}")
    if not isinstance(gradcam, bool):
        raise MisconfigurationException(f"gradcam: expected True or False, got {gradcam!r}")
    if not is_int(seed):
        raise MisconfigurationException(f"seed: expected an int, got {seed!r}")
    if artifact_dir is not None and not isinstance(artifact_dir, (str, os.PathLike)):
        raise MisconfigurationException(f"artifact_dir: expected a path or None, got {type(artifact_dir).__name__}")
    if input_key is not None and not (isinstance(input_key, str) and input_key):
        raise MisconfigurationException(f"input_key: expected the key of the input in a dict batch, got {input_key!r}")
    if output_transform is not None and not callable(output_transform):
        raise MisconfigurationException(
            f"output_transform: expected a callable from the model's output to (N, C) scores, "
            f"got {type(output_transform).__name__}"
        )


def log_budget(filmstrip_every: Any, full_resolution_maps: Any, thin_maps: Any) -> int:
    """``filmstrip_every`` (a whole number >= 1, returned) and the two maps-file switches (bools)."""
    misconfigured(check_int, filmstrip_every, "filmstrip_every")
    for name, value in (("full_resolution_maps", full_resolution_maps), ("thin_maps", thin_maps)):
        if not isinstance(value, bool):
            raise MisconfigurationException(f"{name}: expected True or False, got {value!r}")
    return int(filmstrip_every)


def metric_names(metrics: Any) -> tuple[str, ...]:
    """``metrics`` as a tuple of names; a single name may be given as a string."""
    names = (metrics,) if isinstance(metrics, str) else metrics
    if not isinstance(names, Sequence):
        raise MisconfigurationException(f"metrics: expected a list of names, got {type(metrics).__name__}")
    for name in names:
        misconfigured(check_choice, name, "metrics", tags.QUALITY_METRICS)
    return tuple(names)


def display_statistics(name: str, values: Any) -> tuple[float, ...] | None:
    """``display_mean``/``display_std``: None, or one number per channel (or one for all)."""
    if values is None:
        return None
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        return (float(values),)
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence)
        or not values
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
    ):
        raise MisconfigurationException(f"{name}: expected one number per channel (e.g. 3 for RGB), got {values!r}")
    if name == "display_std" and any(v <= 0 for v in values):
        raise MisconfigurationException(f"{name}: expected numbers > 0, got {values!r}")
    return tuple(float(v) for v in values)


def optional_count(argument: str, value: Any) -> int | None:
    """None, or a whole number >= 1 (``probe_chunk_size``)."""
    misconfigured(check_int, value, argument, allow_none=True)
    return None if value is None else int(value)


def optional_positive(argument: str, value: Any) -> float | None:
    """None, or a finite number > 0 (``time_budget``, in seconds)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise MisconfigurationException(f"{argument}: expected a number of seconds > 0, or None, got {value!r}")
    return float(value)


def names(argument: str, values: Any) -> list[str] | None:
    """``token_names`` (the word of each token id) or ``class_names`` (the name of each class)."""
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, Sequence) or not all(isinstance(v, str) for v in values):
        what = "the word of each token id" if argument == "token_names" else "the name of each class"
        raise MisconfigurationException(f"{argument}: expected a list with {what}, got {type(values).__name__}")
    return list(values)


def schedule(every_n_epochs: Any, every_n_steps: Any, log_spaced_steps: Any, log_at_start: Any) -> Schedule:
    """The points of training to explain; at least one way to get there."""
    misconfigured(check_int, every_n_epochs, "every_n_epochs", allow_none=True)
    misconfigured(check_int, every_n_steps, "every_n_steps", allow_none=True)
    for name, value in (("log_spaced_steps", log_spaced_steps), ("log_at_start", log_at_start)):
        if not isinstance(value, bool):
            raise MisconfigurationException(f"{name}: expected True or False, got {value!r}")
    plan = Schedule(log_at_start, every_n_epochs, every_n_steps, log_spaced_steps)
    if every_n_epochs is None and every_n_steps is None and not log_spaced_steps and not log_at_start:
        raise MisconfigurationException(
            "every_n_epochs: with every_n_steps=None, log_spaced_steps=False and log_at_start=False the monitor "
            "would never explain the probe; give at least one of them"
        )
    return plan


def method_options(methods: Sequence[str] | Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Validate ``methods`` and give every method an options dict."""
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        items = list(methods.items())
    elif isinstance(methods, Sequence):
        items = [(name, {}) for name in methods]
    else:
        raise MisconfigurationException(f"methods: expected a list of names or a mapping, got {type(methods).__name__}")
    if not items:
        raise MisconfigurationException(f"methods: give at least one of {registry.available()}")
    options = {}
    for name, opts in items:
        method = misconfigured(registry.record, name)
        if opts is None:
            opts = {}
        if not isinstance(opts, Mapping):
            raise MisconfigurationException(f"methods[{name!r}]: expected a dict of options, got {type(opts).__name__}")
        options[name] = _checked_options(method, dict(opts))
    return options


def _checked_options(method: registry.MethodRecord, options: dict[str, Any]) -> dict[str, Any]:
    """Refuse, at construction, options that would make the method fail at every logged epoch."""
    if "target" in options:
        raise MisconfigurationException(
            f"methods[{method.name!r}]: 'target' is chosen by the monitor's own target argument "
            f"('pred', 'label' or a class index); remove it from the method's options"
        )
    accepted = [p for p in inspect.signature(method.cls.attribute).parameters if p not in ("self", "inputs", "target")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MisconfigurationException(
            f"methods[{method.name!r}]: unknown option(s) {unknown}; {method.cls.__name__}.attribute takes {accepted}"
        )
    if method.takes_neuron_selector:
        if "neuron_selector" not in options:
            raise MisconfigurationException(
                f"methods[{method.name!r}]: a neuron method explains one unit of the layer, so it needs a "
                f"'neuron_selector' option, e.g. {{{method.name!r}: {{'neuron_selector': (0, 2, 2)}}}} for "
                f"channel 0 at row 2, column 2 of the layer's output (layer=<dotted name>)"
            )
        if isinstance(options["neuron_selector"], list):  # from a YAML config
            options["neuron_selector"] = tuple(options["neuron_selector"])
    return options


def _sharded_strategies() -> tuple[type[Strategy], ...]:
    """The Trainer's strategies that shard the parameters across processes (ModelParallelStrategy: lightning
    >= 2.3)."""
    try:
        from lightning.pytorch.strategies import ModelParallelStrategy
    except ImportError:
        return FSDPStrategy, DeepSpeedStrategy
    return FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy


def check_strategy(strategy: Strategy, monitor: str = "AttributionMonitor") -> None:
    """Refuse a strategy that shards the model's parameters: no process could run the model alone."""
    if isinstance(strategy, _sharded_strategies()):
        raise MisconfigurationException(
            f"{monitor}: {type(strategy).__name__} shards the model's parameters across processes, so no "
            f"process can run the model alone; use a strategy that keeps full replicas (e.g. 'ddp')"
        )


def check_alone(callbacks: Sequence[Any], monitor: Any, writes: str, fix: str) -> None:
    """Refuse a second monitor of ``monitor``'s kind among the Trainer's ``callbacks``: both would write
    ``writes`` (fixed tags and files), mixing their values where nothing tells them apart."""
    kind = type(monitor).__name__
    count = sum(isinstance(c, type(monitor)) for c in callbacks)
    if count > 1:
        raise MisconfigurationException(
            f"{kind}: the Trainer has {count} {kind}s; they would write the same {writes}, mixing their values. {fix}"
        )


def check_materialised(module: Any) -> None:
    """Refuse a model whose parameters hold no data (the meta device): nothing could be explained."""
    name = next((name for name, p in module.named_parameters() if p.is_meta), None)
    if name is not None:
        raise MisconfigurationException(
            f"AttributionMonitor: the model's parameters are on the meta device (e.g. {name!r}), so they hold no "
            f"values to explain; materialise them first (model.to_empty(device=...) and load the weights)"
        )


def check_probe(
    probe: Probe,
    methods: Mapping[str, Any],
    display_mean: Sequence[float] | None,
    display_std: Sequence[float] | None,
) -> None:
    """Refuse, before training, gradient methods on an integer probe and display statistics that do not
    match the probe's channels."""
    floating = probe.inputs.is_floating_point()
    needs_float = [name for name in methods if registry.record(name).needs_float_inputs]
    if not floating and needs_float:
        raise MisconfigurationException(
            f"methods: {needs_float} differentiate the model with respect to its inputs, but the probe's inputs "
            f"are {probe.inputs.dtype} (e.g. token ids); explain an embedding layer instead, e.g. "
            f"methods=['layer_integrated_gradients'] with layer=<the embedding's dotted name>"
        )
    channels = probe.inputs.shape[1] if probe.inputs.dim() == 4 else None
    for name, values in (("display_mean", display_mean), ("display_std", display_std)):
        if values is not None and (channels is None or len(values) not in (1, channels)):
            shape = tuple(probe.inputs.shape)
            raise MisconfigurationException(
                f"{name}: expected one value per channel of the probe's images, or one for all; got "
                f"{len(values)} for inputs of shape {shape}" + ("" if channels else " (no images)")
            )


def labelled_probe(probe: Any, owner: str) -> tuple[Tensor, Tensor]:
    """``(inputs, labels)`` detached copies of a probe given as a pair of tensors with the same, non-zero
    number of examples; MisconfigurationException naming ``owner`` otherwise."""
    if not (isinstance(probe, (tuple, list)) and len(probe) == 2 and all(isinstance(t, Tensor) for t in probe)):
        raise MisconfigurationException(
            f"{owner}: probe must be a pair (inputs, labels) of tensors, got {type(probe).__name__}"
        )
    if len(probe[0]) != len(probe[1]) or len(probe[0]) == 0:
        raise MisconfigurationException(
            f"{owner}: probe inputs and labels must have the same, non-zero number of examples; got "
            f"{len(probe[0])} and {len(probe[1])}"
        )
    return probe[0].detach().clone(), probe[1].detach().clone()
