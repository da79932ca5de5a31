"""The monitor's self-check: every map and metric is checked before it is logged, and what fails is
flagged, with the likely cause and the fix, instead of being drawn or charted as if it were right.

A map (one probe example's attribution, as it would be drawn) fails when it is not finite, all zero,
or constant over its positions: none of these says where the model looks.  A failed map is drawn as
a labelled grey tile and left out of every metric's mean.  A metric fails when no example defines it
(NaN, an empty mask, only failed maps); examples whose mask is empty are left out of the localisation
means, and the number used is logged beside them (``mask_examples``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from attribution import registry
from lightning_xai._compute.explanation import Explanation, MetricValues
from lightning_xai._compute.gradcam_layer import Candidate, Reach, gradient_reach

NOT_FINITE, ALL_ZERO, CONSTANT = "not finite", "all zero", "constant"
"""What can be wrong with a map, in the words the images and warnings use."""
LOCALISATION = ("mass_in_mask", "pointing_game")
DIAGNOSED_EXAMPLES = 4
"""Failed maps whose cause is looked into (one forward and backward of them): a few tell, and a large probe's
would not fit in memory at once."""
EVERY_MAP_FAILED = "every map of this method failed the check"
MASK_EXAMPLES = "mask_examples"
"""Logged beside the localisation metrics: the probe examples they average over."""


def map_problems(maps: Tensor) -> list[str | None]:
    """Per example (dim 0): what makes its map no explanation (:data:`NOT_FINITE`, :data:`ALL_ZERO`,
    :data:`CONSTANT`), or None for a map that can be shown.  A map of one value is only checked for
    being finite and non-zero."""
    flat = maps.detach().flatten(1).float()
    finite = torch.isfinite(flat).all(dim=1)
    zero = (flat == 0).all(dim=1)
    constant = (flat.amax(dim=1) == flat.amin(dim=1)) & (flat.shape[1] > 1)
    code = torch.where(~finite, 1, torch.where(zero, 2, torch.where(constant, 3, 0)))
    names = (None, NOT_FINITE, ALL_ZERO, CONSTANT)
    return [names[c] for c in code.tolist()]


def summarise(per_example: dict[str, Tensor], usable: Tensor, has_mask: Tensor | None = None) -> MetricValues:
    """The mean of each metric over the examples that define it.

    Args:
        per_example: metric name -> one value per probe example.
        usable: which examples' maps passed the check (the others are left out of every mean).
        has_mask: which examples have a non-empty mask (the localisation metrics use only those).
    """
    summary = MetricValues()
    for name, values in per_example.items():
        values = values.detach().float().reshape(-1).cpu()
        kept = usable.cpu().clone()
        if name in LOCALISATION and has_mask is not None:
            kept &= has_mask.cpu()
        finite = torch.isfinite(values)
        left_out = (kept & ~finite).nonzero().flatten().tolist()
        kept &= finite
        count = int(kept.sum())
        summary.examples[name] = count
        if left_out:
            summary.partly[name] = left_out
        if count:
            summary.means[name] = float(values[kept].mean())
        else:
            summary.undefined[name] = _undefined_reason(name, usable, has_mask, bool(left_out))
    if has_mask is not None and any(name in per_example for name in LOCALISATION):
        summary.means[MASK_EXAMPLES] = float((usable.cpu() & has_mask.cpu()).sum())
    return summary


def _undefined_reason(name: str, usable: Tensor, has_mask: Tensor | None, non_finite: bool) -> str:
    if non_finite:
        return "it is NaN or infinite on every probe example whose map passed the check"
    if not bool(usable.any()):
        return EVERY_MAP_FAILED
    if name in LOCALISATION and has_mask is not None and not bool(has_mask.any()):
        return "no probe example has a non-empty mask"
    return "no probe example has both a mask and a map that passed the check"


@dataclass(frozen=True)
class Flag:
    """Something the monitor could not log as right: what, for which examples, the likely cause and the fix."""

    method: str
    subject: str  # "maps", or a metric's name
    problem: str
    examples: tuple[int, ...]
    cause: str
    fix: str

    @property
    def warns(self) -> bool:
        """Worth a warning of its own: a metric left out only because every map failed is said by the maps' flag."""
        return not (self.subject != "maps" and self.cause == EVERY_MAP_FAILED)

    @property
    def key(self) -> str:
        """Warned about once per fit for each method, subject, problem and cause."""
        return f"flag:{self.method}:{self.subject}:{self.problem}:{self.cause}"

    def record(self) -> dict[str, Any]:
        """The flag as the manifest keeps it."""
        return {
            "subject": self.subject,
            "problem": self.problem,
            "examples": list(self.examples),
            "cause": self.cause,
            "fix": self.fix,
        }

    def message(self, where: str, total: int) -> str:
        """The warning: what is wrong where, why, what to do, and what the monitor did about it."""
        which = examples_text(self.examples, total)
        if self.subject == "maps":
            what = f"{self.method} at {where}: the maps of {which} are {self.problem}"
            done = f"they are drawn as grey tiles labelled '{self.problem}' and left out of the metrics"
        else:
            what = f"{self.method} at {where}: {self.subject} is {self.problem}"
            what += f" ({which})" if self.examples else ""
            done = "it is not logged" if self.problem == "undefined" else "the mean is over the other examples"
        return f"{what}. Likely cause: {self.cause}. Fix: {self.fix}. {done.capitalize()} (manifest.json: 'flags')."


def examples_text(examples: Sequence[int], total: int) -> str:
    """``"all 8 examples"``, ``"example #3"`` or ``"examples #0, #2, #5"``."""
    if len(examples) == total and total > 1:
        return f"all {total} examples"
    if len(examples) == 1:
        return f"example #{examples[0]}"
    shown = ", ".join(f"#{i}" for i in examples[:8])
    return f"examples {shown}" + (f" and {len(examples) - 8} more" if len(examples) > 8 else "")


def problem_groups(problems: Sequence[str | None]) -> dict[str, tuple[int, ...]]:
    """The examples of each problem, in the order problems first occur."""
    groups: dict[str, list[int]] = {}
    for i, problem in enumerate(problems):
        if problem is not None:
            groups.setdefault(problem, []).append(i)
    return {problem: tuple(examples) for problem, examples in groups.items()}


@dataclass
class Diagnosis:
    """The likely cause of failed maps at one point, and its fix; what it needs to tell is computed only
    when a map fails (a gradient of the class scores, a check of the GradCAM layer).

    Args:
        forward: the class scores ``(N, C)`` of the inputs (and ``forward_args``).
        forward_args: the further tensors the forward takes, one row per example.
        inputs: the probe's inputs on the model's device.
        targets: the class explained for each example.
        layer: the layer of the layer methods, read as a map (None: none).
    """

    forward: Callable[..., Tensor]
    forward_args: tuple[Tensor, ...]
    inputs: Tensor
    targets: Tensor
    layer: Candidate | None = None
    _reach: Reach | None = field(default=None, init=False)

    def flags(self, results: Sequence[Explanation], methods: Mapping[str, Mapping[str, Any]]) -> dict[str, list[Flag]]:
        """What the check found in each result's maps and metrics, with the likely causes and fixes; ``methods``:
        the options the user gave each method."""
        flags: dict[str, list[Flag]] = {}
        for result in results:
            method = registry.record(result.method)
            options = {**method.probe_options(self.inputs[:1]), **methods.get(result.method, {})}
            found = [
                Flag(result.method, "maps", problem, examples, *self.cause(method, options, problem, examples))
                for problem, examples in problem_groups(result.problems).items()
            ]
            flags[result.method] = found + metric_flags(result.method, result.checked)
        return flags

    def cause(
        self, method: registry.MethodRecord, options: Mapping[str, Any], problem: str, examples: Sequence[int]
    ) -> tuple[str, str]:
        """``(cause, fix)`` for the maps of ``examples`` being ``problem`` under ``method`` with ``options``."""
        if problem == NOT_FINITE:
            return (
                "the computation overflowed or divided by zero on these examples (e.g. half-precision gradients)",
                "check the model's outputs and gradients on the probe; explain in float32 (precision='32' or "
                "'16-mixed', whose gradients are float32)",
            )
        if self._scores_ignore_inputs(examples):
            return (
                "the class scores do not depend on the input of these examples at this point (their gradient is "
                "zero at every input value): e.g. an untrained model whose classifier head is initialised to zero, "
                "as torchvision's VisionTransformer is, or inputs that switch every ReLU off",
                "none needed if it clears once training moves the model; otherwise check the model's forward",
            )
        if method.needs_layer and self.layer is not None:
            if self._reach is None:
                self._reach = gradient_reach(self.forward, self.forward_args, self.inputs, self.layer)
            if not self._reach.usable:
                return self._reach.cause(self.layer.name), self._reach.fix(None)
        if problem == ALL_ZERO:
            return _all_zero(method, options)
        return _constant(method, options, self.inputs)

    def _scores_ignore_inputs(self, examples: Sequence[int]) -> bool:
        """Whether the explained scores have zero gradient with respect to these examples' inputs."""
        if not self.inputs.is_floating_point():
            return False
        rows = torch.tensor(list(examples)[:DIAGNOSED_EXAMPLES], device=self.inputs.device)
        x = self.inputs[rows].detach().clone().requires_grad_()
        args = tuple(a[rows.to(a.device)].to(x.device) for a in self.forward_args)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                scores = self.forward(x, *args)
                chosen = scores.gather(1, self.targets[rows].to(scores.device).view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(chosen, x, allow_unused=True)
        except RuntimeError:  # e.g. reentrant checkpointing refuses torch.autograd.grad: cannot tell
            return False
        return grad is None or not bool(grad.any())


def _all_zero(method: registry.MethodRecord, options: Mapping[str, Any]) -> tuple[str, str]:
    if options.get("relu_attributions"):
        return (
            "at every position the channel-weighted activation is negative, and the monitor's GradCAM keeps only "
            "positive evidence (relu_attributions=True)",
            f"none needed if it clears as the model trains; pass methods={{'{method.name}': "
            f"{{'relu_attributions': False}}}} to see the negative evidence, or choose another layer",
        )
    if "interpretable_model" in inspect.signature(method.cls).parameters:
        return (
            "the surrogate model's penalty (Lime's default Lasso, alpha=0.01) shrinks every coefficient to zero when "
            "the class score changes less than that between coalitions, as on an untrained model",
            f"none needed if it clears as the model trains; 'kernel_shap' fits without a penalty, or build "
            f"{method.cls.__name__} with a smaller penalty yourself",
        )
    if not method.needs_float_inputs:  # perturbation methods: they only compare forwards
        return (
            "replacing the inputs' features by the baseline does not change the explained class score",
            "check the baselines (a baseline equal to the inputs changes nothing) and the window or feature-group "
            "sizes",
        )
    return (
        f"{method.name} attributes nothing to any input of these examples (e.g. saturated outputs or dead ReLUs)",
        "check the method's options and the model's activations on the probe",
    )


def _constant(method: registry.MethodRecord, options: Mapping[str, Any], inputs: Tensor) -> tuple[str, str]:
    window = options.get("sliding_window_shapes")
    mask = options.get("feature_mask")
    spatial = tuple(inputs.shape[-2:])
    whole = isinstance(window, Sequence) and all(w >= s for w, s in zip(tuple(window)[-2:], spatial))
    if whole or (isinstance(mask, Tensor) and torch.unique(mask).numel() == 1):
        return (
            "one occlusion window (or feature group) covers the whole input, so every position gets the same value",
            "use smaller sliding_window_shapes (or a feature_mask with several groups)",
        )
    if method.attributes_to_layer:
        return (
            "the layer's map has the same value at every position",
            "choose an earlier layer, whose positions differ",
        )
    return "the map has the same value at every position", "check the method's options"


def metric_flags(method: str, checked: MetricValues) -> list[Flag]:
    """Flags for the metrics of ``method`` that are undefined at a point, or not finite on some examples."""
    flags = []
    for metric, reason in checked.undefined.items():
        if "mask" in reason:
            fix = "give the probe examples whose masks hold the object (probe=..., or a larger num_probe_samples)"
        elif reason == EVERY_MAP_FAILED:
            fix = f"see the warning about the maps of {method}"
        else:
            fix = f"check the maps of {method} and the model's outputs on perturbed inputs at this point"
        flags.append(Flag(method, metric, "undefined", (), reason, fix))
    for metric, examples in checked.partly.items():
        if metric not in checked.undefined:
            cause = "it is NaN or infinite on these examples (e.g. the model's outputs overflow on perturbed inputs)"
            flags.append(Flag(method, metric, NOT_FINITE, tuple(examples), cause, "check these examples"))
    return flags
