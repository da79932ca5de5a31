"""Running the attribution engine on the probe without changing training.

Everything here happens inside :func:`untouched_training_state`: each
module's own training flag is restored afterwards, the global RNG stream is
forked (and seeded, so noisy methods give the same maps on every run and
after a resume), and the engine itself never writes ``param.grad``,
``requires_grad`` or leaves hooks behind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attribution import registry
from attribution.metrics import infidelity, mass_in_mask, pointing_game, sensitivity_max
from lightning_xai import _render

PERTURBATION_SAMPLES = 8
"""Perturbations per probe example for infidelity and sensitivity (Captum's default is 10)."""
INFIDELITY_NOISE = 0.1
"""Standard deviation of the infidelity perturbations, in units of the probe's own standard deviation."""


@contextmanager
def untouched_training_state(model: nn.Module, seed: int) -> Iterator[None]:
    """Eval mode and a private, seeded RNG stream; every module's flag restored on exit."""
    flags = [(module, module.training) for module in model.modules()]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.eval()
        try:
            yield
        finally:
            for module, training in flags:
                module.training = training


def last_conv_name(model: nn.Module) -> str | None:
    """Dotted name of the model's last convolution, the usual GradCAM layer."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return names[-1] if names else None


@dataclass(frozen=True)
class Subject:
    """What the methods explain: a forward function returning ``(N, C)`` class scores (see
    :class:`attribution.outputs.ModelScores`), the further tensors it takes, and the layer for layer
    methods with the reshape that makes its output a ``(N, C, h, w)`` map (None: already is)."""

    forward: Callable[..., Tensor]
    forward_args: tuple[Tensor, ...] = ()
    layer: nn.Module | None = None
    reshape_transform: Callable[[Tensor], Tensor] | None = None

    def scores(self, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            return self.forward(inputs, *self.forward_args)


def resolve_targets(target: str | int, inputs: Tensor, labels: Tensor | None) -> Tensor:
    """The class to explain for every probe example when it is not the prediction: labelled, or fixed."""
    if target == "label":
        if labels is None:
            raise ValueError("target: 'label' needs labels, but the probe has none; use target='pred' or an int")
        return labels.to(inputs.device)
    return torch.full((inputs.shape[0],), int(target), device=inputs.device, dtype=torch.long)


@dataclass
class Explanation:
    """One method's result on the probe at one epoch."""

    method: str
    attributions: Tensor  # as the method returns them: input-shaped, or layer-shaped for layer methods
    heat: _render.Heat | None  # maps (N, H, W) at the input's resolution, scale and sign, for image inputs
    metrics: dict[str, float] = field(default_factory=dict)
    token_scores: Tensor | None = None  # (N, T) signed attribution per token, for token inputs


def token_scores(attributions: Tensor, inputs: Tensor) -> Tensor | None:
    """One signed score per token (summed over e.g. the embedding dimension), for integer ``(N, T)`` inputs."""
    if inputs.dim() != 2 or inputs.is_floating_point() or attributions.shape[:2] != inputs.shape:
        return None
    return attributions.detach().float().flatten(2).sum(2) if attributions.dim() > 2 else attributions.float()


def _noise_perturbation(inputs: Tensor) -> tuple[Tensor, Tensor]:
    noise = INFIDELITY_NOISE * inputs.std() * torch.randn_like(inputs)
    return noise, inputs - noise


def explain(
    subject: Subject,
    methods: Mapping[str, Mapping[str, Any]],
    inputs: Tensor,
    targets: Tensor,
    masks: Tensor | None = None,
    metrics: tuple[str, ...] = (),
) -> tuple[list[Explanation], dict[str, Exception]]:
    """Run every method (and its metrics) on the probe; a method that fails is left out, with its error.

    Call inside :func:`untouched_training_state`.

    Returns:
        The explanations, and the errors by method name.
    """
    results, failures = [], {}
    for name, options in methods.items():
        try:
            results.append(_explain_one(subject, registry.record(name), options, inputs, targets, masks, metrics))
        except Exception as error:  # one failing method must not cost the others their epoch
            failures[name] = error
    if "infidelity" in metrics and inputs.is_floating_point():
        scored = [result for result in results if registry.record(result.method).explains_output_at_inputs]
        try:
            _add_infidelity(subject, scored, inputs, targets)
        except Exception as error:  # the maps stand without it
            failures["infidelity"] = error
    return results, failures


def _add_infidelity(subject: Subject, results: list[Explanation], inputs: Tensor, targets: Tensor) -> None:
    """Every method's infidelity on the same perturbations, whose forwards are done once for all."""
    if not results:
        return
    scores = infidelity(
        subject.forward,
        _noise_perturbation,
        inputs,
        {result.method: result.attributions for result in results},
        additional_forward_args=subject.forward_args or None,
        target=targets,
        n_perturb_samples=PERTURBATION_SAMPLES,
        normalize=True,
    )
    for result in results:
        result.metrics["infidelity"] = float(scores[result.method].mean())


def _explain_one(
    subject: Subject,
    method: registry.MethodRecord,
    user_options: Mapping[str, Any],
    inputs: Tensor,
    targets: Tensor,
    masks: Tensor | None,
    metrics: tuple[str, ...],
) -> Explanation:
    reshape = {"reshape_transform": subject.reshape_transform} if _takes_reshape(method) else {}
    explainer = registry.build(method.name, subject.forward, layer=subject.layer, **reshape)
    options = {**method.probe_options(inputs), **user_options}
    if subject.forward_args:
        options["additional_forward_args"] = subject.forward_args
    selection = {"target": targets} if method.takes_target else {}  # a neuron method's selector is an option
    values: dict[str, float] = {}
    if method.returns_delta:
        attributions, delta = explainer.attribute(inputs, return_convergence_delta=True, **selection, **options)
        values["convergence_delta"] = float(delta.abs().mean())
    else:
        attributions = explainer.attribute(inputs, **selection, **options)
    if method.explains_output_at_inputs and inputs.is_floating_point() and "sensitivity" in metrics:
        values["sensitivity"] = _sensitivity(explainer, inputs, targets, options)
    scores = token_scores(attributions, inputs)
    maps = spatial_maps(attributions, inputs, None if reshape or not method.attributes_to_layer else subject)
    if masks is not None and (maps is not None or scores is not None):
        located, masks_like = (maps, masks) if scores is None else (scores[:, None], masks[:, None])
        values["mass_in_mask"] = float(mass_in_mask(located, masks_like).mean())
        values["pointing_game"] = float(pointing_game(located, masks_like).mean())
    heat = None if maps is None else _render.heat(maps, inputs.shape[-2:])
    return Explanation(method.name, attributions.detach(), heat, values, scores)


def _takes_reshape(method: registry.MethodRecord) -> bool:
    return "reshape_transform" in inspect.signature(method.cls).parameters


def spatial_maps(attributions: Tensor, inputs: Tensor, layer_subject: Subject | None = None) -> Tensor | None:
    """Attributions as ``(N, C, h, w)`` maps over an image batch, or None when they are not spatial
    (never shown as a heat map then). ``layer_subject``: layer-shaped attributions, reshaped like the layer."""
    if inputs.dim() != 4:
        return None
    maps = attributions
    if layer_subject is not None and layer_subject.reshape_transform is not None:
        maps = layer_subject.reshape_transform(maps)
    spatial = maps.dim() == 4 and maps.shape[-2] * maps.shape[-1] > 1
    return maps if spatial else None


def _sensitivity(explainer: Any, inputs: Tensor, targets: Tensor, options: dict[str, Any]) -> float:
    samples = PERTURBATION_SAMPLES
    scores = sensitivity_max(explainer.attribute, inputs, n_perturb_samples=samples, target=targets, **options)
    return float(scores.mean())
