"""Running the attribution engine on the probe without changing training.

Everything here happens inside :func:`untouched_training_state`: each
module's own training flag is restored afterwards, the global RNG stream is
forked (and seeded, so noisy methods give the same maps on every run and
after a resume), and the engine itself never writes ``param.grad``,
``requires_grad`` or leaves hooks behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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


def predict(model: nn.Module, inputs: Tensor) -> Tensor:
    """The model's predicted class for every probe example."""
    with torch.no_grad():
        return model(inputs).argmax(dim=1)


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
    heat: Tensor | None  # (N, H, W) in [0, 1] at the input's resolution, for image inputs
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
    model: nn.Module,
    methods: Mapping[str, Mapping[str, Any]],
    layer: str | None,
    inputs: Tensor,
    targets: Tensor,
    masks: Tensor | None = None,
    metrics: tuple[str, ...] = (),
) -> list[Explanation]:
    """Run every method (and its metrics) on the probe.

    Call inside :func:`untouched_training_state`.
    """
    results = []
    for name, user_options in methods.items():
        method = registry.record(name)
        explainer = registry.build(name, model, layer=layer)
        options = {**method.probe_options(inputs), **user_options}
        selection = {"target": targets} if method.takes_target else {}  # a neuron method's selector is an option
        values: dict[str, float] = {}
        if method.returns_delta:
            attributions, delta = explainer.attribute(inputs, return_convergence_delta=True, **selection, **options)
            values["convergence_delta"] = float(delta.abs().mean())
        else:
            attributions = explainer.attribute(inputs, **selection, **options)
        if method.explains_output_at_inputs:
            values.update(_quality_metrics(explainer, model, inputs, targets, attributions, options, metrics))
        scores = token_scores(attributions, inputs)
        located = attributions if scores is None else scores[:, None]  # tokens as a one-row image
        if masks is not None and (inputs.dim() == 4 or scores is not None):
            masks_like = masks if scores is None else masks[:, None]
            values["mass_in_mask"] = float(mass_in_mask(located, masks_like).mean())
            values["pointing_game"] = float(pointing_game(located, masks_like).mean())
        image = inputs.dim() == 4 and attributions.dim() in (3, 4)
        heat = _render.heat(attributions, inputs.shape[-2:]) if image else None
        results.append(Explanation(name, attributions.detach(), heat, values, scores))
    return results


def _quality_metrics(explainer, model, inputs, targets, attributions, options, metrics) -> dict[str, float]:
    values = {}
    if "infidelity" in metrics:
        scores = infidelity(
            model,
            _noise_perturbation,
            inputs,
            attributions,
            target=targets,
            n_perturb_samples=PERTURBATION_SAMPLES,
            normalize=True,
        )
        values["infidelity"] = float(scores.mean())
    if "sensitivity" in metrics:
        scores = sensitivity_max(
            explainer.attribute, inputs, n_perturb_samples=PERTURBATION_SAMPLES, target=targets, **options
        )
        values["sensitivity"] = float(scores.mean())
    return values
