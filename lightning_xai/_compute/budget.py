"""The methods' probe options scaled to a time budget per logged point.

The registry's probe options (e.g. 16 integrated-gradients steps, occlusion windows an eighth of the image's
side) are the most exact the monitor uses; at 224 px on a CPU they make a point cost about as much as training
on a few hundred images.  At the start of fit the monitor times one forward and one forward-and-backward pass
of the probe, estimates a point's cost from the passes each method and metric makes, and lowers the options
that set a method's cost (steps, samples, windows) together, as little as keeps the estimate within the
budget, never below a floor that keeps the maps legible.  The options are chosen once per run and kept across
a resume: maps of different points stay comparable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attribution import registry
from attribution.functional.perturbation import SlidingWindows
from lightning_xai._compute.explain import PERTURBATION_SAMPLES

PATH_STEPS = ("integrated_gradients", "layer_integrated_gradients", "layer_conductance", "internal_influence")
"""Methods whose cost is ``n_steps`` forward-and-backward passes."""
PATH_SAMPLES = ("gradient_shap", "layer_gradient_shap")
"""Methods whose cost is ``n_samples`` forward-and-backward passes."""
FEWEST = 4
"""The floor of steps, samples and occlusion windows per side: fewer give maps that say little."""
METRIC_FORWARDS = {"deletion": 11, "insertion": 11, "faithfulness_correlation": 17, "road": 5}
"""Forward passes of the probe per method for each faithfulness metric (see the monitor's ``metrics``)."""
LEVELS = 13
"""Quality levels tried, from the floor to the registry's options."""


@dataclass(frozen=True)
class PassTimes:
    """Seconds of one forward, and of one forward and backward pass, of this process's share of the probe."""

    forward: float
    forward_backward: float


@dataclass(frozen=True)
class Budgeted:
    """The options chosen (method -> options that set its cost), the estimated seconds of a point with them,
    whether even the floor is over the budget, and whether they are below the registry's probe options."""

    options: dict[str, dict[str, Any]]
    seconds: float
    over: bool
    lowered: bool

    def describe(self) -> str:
        """The chosen options in words, e.g. ``integrated_gradients n_steps=8, occlusion 5x5 windows``."""
        parts = []
        for method, options in self.options.items():
            if "sliding_window_shapes" in options:
                window = options["sliding_window_shapes"]
                parts.append(f"{method} windows of {window[-2]}x{window[-1]} px")
            else:
                parts.append(f"{method} " + ", ".join(f"{k}={v}" for k, v in options.items()))
        return "; ".join(parts)


BACKWARD_FACTOR = 3.0
"""A forward and backward pass over a forward pass, where the backward cannot be timed (token ids, or a model
that refuses inputs that require grad): the usual ratio, a backward costing about two forwards."""


def time_passes(forward: Callable[..., Tensor], inputs: Tensor, forward_args: tuple[Tensor, ...]) -> PassTimes:
    """Time a forward and a forward-and-backward pass of ``inputs`` (each after one untimed pass, which warms
    up kernels and the allocator); the gradient is taken with respect to the inputs, so no ``param.grad`` is
    written.  Call inside the monitor's untouched training state.

    Raises:
        Exception: what the model's forward raises.
    """

    def forward_only() -> None:
        with torch.no_grad():
            forward(inputs, *forward_args)

    def forward_backward() -> None:
        with torch.enable_grad():
            given = inputs.detach().requires_grad_(True)
            torch.autograd.grad(forward(given, *forward_args).sum(), given)

    forward_only()
    forward_seconds = _seconds(forward_only, inputs.device)
    if inputs.is_floating_point():
        try:
            forward_backward()
            return PassTimes(forward_seconds, _seconds(forward_backward, inputs.device))
        except Exception:  # the model refuses inputs that require grad: the methods will say so
            pass
    return PassTimes(forward_seconds, BACKWARD_FACTOR * forward_seconds)


def _seconds(run: Callable[[], None], device: torch.device) -> float:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda device=None: None)
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def any_scalable(methods: Mapping[str, Mapping[str, Any]], inputs: Tensor) -> bool:
    """Whether a budget could change any of ``methods``' options (if not, there is nothing to time)."""
    return any(_scale(name, given, inputs) is not None for name, given in methods.items())


def budgeted_options(
    methods: Mapping[str, Mapping[str, Any]],
    inputs: Tensor,
    times: PassTimes,
    budget: float,
    metrics: tuple[str, ...] = (),
) -> Budgeted:
    """The cost-setting options of ``methods`` (those their ``methods`` options leave unset) for a point
    within ``budget`` seconds, as exact as that allows; see the module's docstring.

    ``inputs`` is the probe (its shape sets the occlusion windows); ``times`` the passes of this process's
    share of it; ``metrics`` the quality metrics asked for, whose passes count too.
    """
    scales = {name: _scale(name, given, inputs) for name, given in methods.items()}
    scalable = {name: scale for name, scale in scales.items() if scale is not None}
    chosen: Budgeted | None = None
    for level in reversed(range(LEVELS)):
        options = {name: scale.at(level / (LEVELS - 1)) for name, scale in scalable.items()}
        seconds = _estimate(methods, options, inputs, times, metrics)
        chosen = Budgeted(options, seconds, over=seconds > budget, lowered=level < LEVELS - 1 and bool(options))
        if not chosen.over:
            break
    assert chosen is not None
    return chosen


@dataclass(frozen=True)
class _Scale:
    """One option of one method between its floor and the registry's value, at a quality level in [0, 1]."""

    option: str
    fewest: int
    most: int
    make: Callable[[int], dict[str, Any]]

    def at(self, quality: float) -> dict[str, Any]:
        return self.make(round(self.fewest + quality * (self.most - self.fewest)))


def _scale(name: str, given: Mapping[str, Any], inputs: Tensor) -> _Scale | None:
    """How ``name``'s cost can be lowered, unless the user set that option (or the method has no such option)."""
    probe_options = registry.record(name).probe_options(inputs)
    if name in PATH_STEPS and "n_steps" not in given:
        most = int(probe_options.get("n_steps", 16))
        return _Scale("n_steps", min(FEWEST, most), most, lambda n: {"n_steps": n})
    if name in PATH_SAMPLES and "n_samples" not in given:
        most = int(probe_options.get("n_samples", 16))
        return _Scale("n_samples", min(FEWEST, most), most, lambda n: {"n_samples": n})
    if name == "occlusion" and inputs.dim() == 4 and not {"sliding_window_shapes", "strides"} & set(given):
        channels, short = inputs.shape[1], min(inputs.shape[-2:])
        most = max(1, short // max(1, int(probe_options["sliding_window_shapes"][-1])))

        def windows(per_side: int) -> dict[str, Any]:
            side = max(1, short // per_side)
            return {"sliding_window_shapes": (channels, side, side), "strides": (channels, side, side)}

        return _Scale("windows per side", min(FEWEST, most), most, windows)
    return None


def _estimate(
    methods: Mapping[str, Mapping[str, Any]],
    scaled: Mapping[str, Mapping[str, Any]],
    inputs: Tensor,
    times: PassTimes,
    metrics: tuple[str, ...],
) -> float:
    """Seconds of a point: the predictions' forward, each method's passes, and the metrics' passes."""
    seconds = times.forward  # the predictions
    scored = 0
    for name, given in methods.items():
        record = registry.record(name)
        options = {**record.probe_options(inputs), **scaled.get(name, {}), **given}
        cost = _method_seconds(name, options, inputs, times)
        if record.explains_output_at_inputs:
            scored += 1
            cost *= 1 + PERTURBATION_SAMPLES * ("sensitivity" in metrics) + ("randomisation" in metrics)
            cost += times.forward * sum(METRIC_FORWARDS.get(metric, 0) for metric in metrics)
        seconds += cost
    if "infidelity" in metrics and scored:
        seconds += times.forward * PERTURBATION_SAMPLES
    return seconds


def _method_seconds(name: str, options: Mapping[str, Any], inputs: Tensor, times: PassTimes) -> float:
    """Seconds of one explanation of the probe by ``name`` with ``options``.  Methods this module does not
    scale count as one forward-and-backward pass (the gradient methods' cost)."""
    if name in PATH_STEPS:
        return int(options.get("n_steps", 50)) * times.forward_backward
    if name in PATH_SAMPLES:
        return int(options.get("n_samples", 5)) * times.forward_backward
    if name == "occlusion" and "sliding_window_shapes" in options:
        window, strides = tuple(options["sliding_window_shapes"]), options.get("strides", 1)
        stride = (strides,) * len(window) if isinstance(strides, int) else tuple(strides)
        windows = SlidingWindows(tuple(inputs.shape[1:]), window, stride).size
        return (windows + 1) * times.forward  # and the unoccluded output
    return times.forward_backward
