"""Running the attribution engine on the probe without changing training.

Everything here happens inside :func:`untouched_training_state`: each
module's own training flag is restored afterwards, the global RNG stream is
forked (and seeded, so noisy methods give the same maps on every run and
after a resume), and the engine itself never writes ``param.grad``,
``requires_grad`` or leaves hooks behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from attribution import registry
from attribution.metrics import infidelity, mass_in_mask, pointing_game, randomization_similarity, sensitivity_max
from attribution.outputs import ModelScores
from lightning_xai._compute.explanation import Explanation
from lightning_xai._compute.faithfulness import FAITHFULNESS_METRICS, faithfulness, road_unavailable
from lightning_xai._compute.heat import heat
from lightning_xai._compute.progress import Progress
from lightning_xai._compute.self_check import map_problems, summarise
from lightning_xai._compute.shards import Shards, seeded_chunks

PERTURBATION_SAMPLES = 8
"""Perturbations per probe example for infidelity and sensitivity (Captum's default is 10).

The same for every probe size, small ones included: max-sensitivity is a maximum over the draws, and the
expected maximum grows with their number (8 draws reach about the 89th percentile of one draw's change,
4 only the 80th), so fewer draws would change what the logged value means and make it incomparable
between probes and runs.  Sensitivity is made cheaper instead by reusing the explanation the monitor
already has and explaining all perturbed copies of a chunk in one call."""
INFIDELITY_NOISE = 0.1
"""Standard deviation of the infidelity perturbations, in units of the probe's own standard deviation."""
RANDOMISED_LAYERS = 1
"""Layers the randomisation check re-initialises: the last module holding parameters (in registration order,
for most models the classifier head), the top of Adebayo et al.'s cascade.  The one whose weights every
explanation of a class score passes through; re-initialising more layers makes every method look good."""


@contextmanager
def untouched_training_state(model: nn.Module, seed: int) -> Iterator[None]:
    """Eval mode and a private, seeded RNG stream; every module's flag restored on exit."""
    flags = [(module, module.training) for module in model.modules()]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), _eager():
        # The generators forked, seeded one by one: torch.manual_seed also queues seeds for every accelerator
        # kind that is not initialised, formatting a stack trace each time (most of a small model's step).
        torch.default_generator.manual_seed(seed)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        model.eval()
        try:
            yield
        finally:
            for module, training in flags:
                module.training = training


def _eager() -> AbstractContextManager[Any]:
    """Compiled modules run as plain eager code: the monitor's batch sizes and grad modes would otherwise
    make dynamo recompile the user's ``torch.compile``-d model, up to its recompile limit (torch >= 2.6;
    earlier versions have no way to say this)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()


@dataclass(frozen=True)
class Subject:
    """What the methods explain: a forward function returning ``(N, C)`` class scores (see
    :class:`attribution.outputs.ModelScores`), the further tensors it takes, and the layer for layer
    methods with the reshape that makes its output a ``(N, C, h, w)`` map (None: already is)."""

    forward: Callable[..., Tensor]
    forward_args: tuple[Tensor, ...] = ()
    layer: nn.Module | None = None
    reshape_transform: Callable[[Tensor], Tensor] | None = None

    def on(self, device: torch.device) -> Subject:
        """The subject with its forward tensors on ``device``."""
        args = tuple(t.to(device) for t in self.forward_args)
        return Subject(self.forward, args, self.layer, self.reshape_transform)

    def scores(self, inputs: Tensor, chunk_size: int | None = None) -> Tensor:
        """The class scores of ``inputs``, ``chunk_size`` examples at a time (default: all at once)."""
        size = chunk_size or len(inputs)
        with torch.no_grad():
            return torch.cat(
                [
                    self.forward(inputs[start : start + size], *(a[start : start + size] for a in self.forward_args))
                    for start in range(0, len(inputs), size)
                ]
            )


def model_inputs(module: Any, inputs: Tensor) -> Tensor:
    """The probe's inputs on the LightningModule's device, in its floating dtype (e.g. trained with "bf16-true")."""
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    inputs = inputs.to(module.device)
    return inputs.to(dtype) if inputs.is_floating_point() and dtype is not None else inputs


def resolve_targets(target: str | int, inputs: Tensor, labels: Tensor | None) -> Tensor:
    """The class to explain for every probe example when it is not the prediction: labelled, or fixed."""
    if target == "label":
        if labels is None:
            raise ValueError("target: 'label' needs labels, but the probe has none; use target='pred' or an int")
        return labels.to(inputs.device)
    return torch.full((inputs.shape[0],), int(target), device=inputs.device, dtype=torch.long)


def token_scores(attributions: Tensor, inputs: Tensor) -> Tensor | None:
    """One signed score per token (summed over e.g. the embedding dimension), for integer ``(N, T)`` inputs."""
    if inputs.dim() != 2 or inputs.is_floating_point() or attributions.shape[:2] != inputs.shape:
        return None
    return attributions.detach().float().flatten(2).sum(2) if attributions.dim() > 2 else attributions.float()


def _noise_perturbation(inputs: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    noise = scale * torch.randn_like(inputs)
    return noise, inputs - noise


@dataclass
class _Attributed:
    """One method's attributions on this process's chunks, with per-example metric values."""

    attributions: Tensor | None  # None: this process has no chunk
    values: dict[str, Tensor] = field(default_factory=dict)


def explain(
    subject: Subject,
    methods: Mapping[str, Mapping[str, Any]],
    inputs: Tensor,
    targets: Tensor,
    masks: Tensor | None = None,
    metrics: tuple[str, ...] = (),
    shards: Shards | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    similarity: str = "spearman",
) -> tuple[list[Explanation], dict[str, Exception]]:
    """Run every method (and its metrics) on the probe; a method that fails is left out, with its error.

    Each process explains its chunks of the probe (``shards``; by default all of it at once) and
    receives everyone's results, so every process returns the same explanations. Call inside
    :func:`untouched_training_state`.  ``similarity`` is the measure of the randomisation check.

    Returns:
        The explanations, and the errors by method name (or by metric: ``"infidelity"``, and ``"road"``
        when the probe holds no images).
    """
    shards = shards or Shards(len(inputs), len(inputs))
    progress = progress or Progress()
    records = {name: registry.record(name) for name in methods}
    scored = [name for name, r in records.items() if r.explains_output_at_inputs and inputs.is_floating_point()]
    infidelity_wanted = "infidelity" in metrics and bool(scored)
    progress.start(len(shards.local) * (len(methods) + infidelity_wanted))
    local: dict[str, _Attributed | Exception] = {}
    for name, options in methods.items():
        try:
            local[name] = _attribute(
                subject, records[name], options, inputs, targets, metrics, shards, seed, progress, similarity
            )
        except Exception as error:  # one failing method must not cost the others their point
            local[name] = error
    infidelities: dict[str, Tensor] | Exception = {}
    if infidelity_wanted:
        explained = {
            n: a.attributions
            for n, a in local.items()
            if n in scored and isinstance(a, _Attributed) and a.attributions is not None  # None: no chunk here
        }
        try:
            infidelities = _infidelity(subject, explained, inputs, targets, shards, seed, progress)
        except Exception as error:  # the maps stand without it
            infidelities = error
    progress.close()
    gathered = shards.gather(_portable(shards, (local, infidelities)))
    results, failures = _combine(subject, records, inputs, masks, metrics, gathered, shards.rank)
    unavailable = road_unavailable(inputs)
    if "road" in metrics and scored and unavailable is not None:  # the same on every process: nothing to agree
        failures["road"] = ValueError(unavailable)
    return results, failures


def _portable(shards: Shards, value: Any) -> Any:
    """``value`` with its tensors on the CPU and errors as text when it travels to other processes."""
    if shards.world == 1:
        return value
    if isinstance(value, Exception):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _portable(shards, v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_portable(shards, v) for v in value)
    if isinstance(value, _Attributed):
        return _Attributed(_portable(shards, value.attributions), _portable(shards, value.values))
    return value


def _attribute(
    subject: Subject,
    method: registry.MethodRecord,
    user_options: Mapping[str, Any],
    inputs: Tensor,
    targets: Tensor,
    metrics: tuple[str, ...],
    shards: Shards,
    seed: int,
    progress: Progress,
    measure: str = "spearman",
) -> _Attributed:
    """``method`` on each of this process's chunks, each from its own seed."""
    reshape = {"reshape_transform": subject.reshape_transform} if method.takes_reshape_transform else {}
    explainer = registry.build(method.name, subject.forward, layer=subject.layer, **reshape)
    parts: list[Tensor] = []
    values: dict[str, list[Tensor]] = {}
    for chunk in seeded_chunks(shards, seed, method.name):
        rows = inputs[chunk]
        options = {**method.probe_options(rows), **user_options}
        if subject.forward_args:
            options["additional_forward_args"] = tuple(a[chunk] for a in subject.forward_args)
        selection = {"target": targets[chunk]} if method.takes_target else {}  # a neuron selector is an option
        if method.returns_delta:
            attributions, delta = explainer.attribute(rows, return_convergence_delta=True, **selection, **options)
            per_example = delta.detach().abs().float().reshape(len(rows), -1).mean(dim=1)  # GradientShap: per sample
            values.setdefault("convergence_delta", []).append(per_example)
        else:
            attributions = explainer.attribute(rows, **selection, **options)
        if method.explains_output_at_inputs and rows.is_floating_point() and "sensitivity" in metrics:
            sensitivity = _sensitivity(explainer, rows, targets[chunk], options, attributions)
            values.setdefault("sensitivity", []).append(sensitivity)
        if method.explains_output_at_inputs and rows.is_floating_point() and set(metrics) & set(FAITHFULNESS_METRICS):
            forward_args = tuple(a[chunk] for a in subject.forward_args)
            scores = faithfulness(subject.forward, rows, attributions, targets[chunk], forward_args, metrics, seed)
            for name, per_example in scores.items():
                values.setdefault(name, []).append(per_example)
        if method.explains_output_at_inputs and rows.is_floating_point() and "randomisation" in metrics:
            explain_copy = partial(_explain_copy, subject, method, reshape, {**selection, **options})
            reference = None if method.draws_random_numbers else attributions  # noise: redrawn for both
            model = _model_of(subject.forward)
            similar = randomization_similarity(
                model,
                explain_copy,
                rows,
                top_layers=RANDOMISED_LAYERS,
                measure=measure,
                seed=seed % 2**63,  # the engine takes seeds >= 0, the monitor any int
                explanations=reference,
            )
            values.setdefault("randomisation_similarity", []).append(similar.detach().float())
        parts.append(attributions.detach())
        progress.advance()
    if not parts:
        return _Attributed(None)
    return _Attributed(torch.cat(parts), {name: torch.cat(v) for name, v in values.items()})


def _infidelity(
    subject: Subject,
    explained: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    shards: Shards,
    seed: int,
    progress: Progress,
) -> dict[str, Tensor]:
    """Every method's infidelity per example on the same perturbations, whose forwards are done once for all.

    The noise is scaled by the whole probe's spread, so a chunk's perturbations do not depend on the chunks."""
    if not explained:
        return {}
    perturb = partial(_noise_perturbation, scale=INFIDELITY_NOISE * float(inputs.float().std()))
    offset = shards.local[0].start if shards.local else 0
    scores: dict[str, list[Tensor]] = {}
    for chunk in seeded_chunks(shards, seed, "infidelity"):
        local = slice(chunk.start - offset, chunk.stop - offset)
        chunk_scores = infidelity(
            subject.forward,
            perturb,
            inputs[chunk],
            {name: a[local] for name, a in explained.items()},
            additional_forward_args=tuple(a[chunk] for a in subject.forward_args) or None,
            target=targets[chunk],
            n_perturb_samples=PERTURBATION_SAMPLES,
            normalize=True,
        )
        for name, values in chunk_scores.items():
            scores.setdefault(name, []).append(values.detach().float())
        progress.advance()
    return {name: torch.cat(values) for name, values in scores.items()}


def _combine(
    subject: Subject,
    records: dict[str, registry.MethodRecord],
    inputs: Tensor,
    masks: Tensor | None,
    metrics: tuple[str, ...],
    gathered: list[tuple[dict[str, _Attributed | Exception | str], dict[str, Tensor] | Exception | str]],
    rank: int,
) -> tuple[list[Explanation], dict[str, Exception]]:
    """The whole probe's explanations from every process's chunks (in rank order); a method that failed on
    any process fails everywhere, so that every process logs and decides alike."""
    results: list[Explanation] = []
    failures: dict[str, Exception] = {}
    infidelities = [scores for _, scores in gathered]
    failed = [(r, scores) for r, scores in enumerate(infidelities) if isinstance(scores, (Exception, str))]
    if failed:
        failures["infidelity"] = _error(failed, rank)
    for name, method in records.items():
        parts = [by_method[name] for by_method, _ in gathered]
        failed = [(r, part) for r, part in enumerate(parts) if isinstance(part, (Exception, str))]
        if failed:
            failures[name] = _error(failed, rank)
            continue
        present = [
            (part.attributions, part.values)
            for part in parts
            if isinstance(part, _Attributed) and part.attributions is not None  # None: a process without a chunk
        ]
        attributions = torch.cat([a.to(inputs.device) for a, _ in present])
        values = {metric: torch.cat([v[metric] for _, v in present]) for metric in present[0][1]}
        if "infidelity" in metrics and "infidelity" not in failures:
            per_rank = [scores[name] for scores in infidelities if isinstance(scores, dict) and name in scores]
            if per_rank:
                values["infidelity"] = torch.cat(per_rank)
        results.append(_summarised(subject, method, inputs, masks, attributions, values))
    return results, failures


def _error(failed: list[tuple[int, Exception | str]], rank: int) -> Exception:
    """The failure as this process raised it, or as the first process that failed reported it (errors travel
    between processes as text, this process's own too)."""
    where, error = next(((r, error) for r, error in failed if r == rank), failed[0])
    if isinstance(error, Exception):
        return error
    return RuntimeError(error if where == rank else f"{error} (on process {where})")


def _summarised(
    subject: Subject,
    method: registry.MethodRecord,
    inputs: Tensor,
    masks: Tensor | None,
    attributions: Tensor,
    values: dict[str, Tensor],
) -> Explanation:
    """The explanation of the whole probe, checked: heat maps on one scale (failed maps left blank), token
    scores, and each metric's mean over the examples whose map passed the check (and, for the localisation
    metrics, whose mask is not empty)."""
    reshape = method.takes_reshape_transform
    scores = token_scores(attributions, inputs)
    maps = spatial_maps(attributions, inputs, None if reshape or not method.attributes_to_layer else subject)
    shown = maps.sum(1) if maps is not None else scores if scores is not None else attributions
    problems = map_problems(shown)
    usable = torch.tensor([problem is None for problem in problems])
    has_mask = None
    located = maps if scores is None else scores[:, None]
    if masks is not None and located is not None:
        masks_like = masks if scores is None else masks[:, None]
        values["mass_in_mask"] = mass_in_mask(located, masks_like)
        values["pointing_game"] = pointing_game(located, masks_like)
        has_mask = masks.flatten(1).ne(0).any(dim=1).cpu()
    checked = summarise(values, usable, has_mask)
    heated = None if maps is None else heat(maps, inputs.shape[-2:], blank=~usable)
    return Explanation(method.name, attributions, heated, checked.means, scores, problems, checked)


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


def _model_of(forward: Callable[..., Tensor]) -> nn.Module:
    """The module behind the subject's forward function, the one the randomisation check copies."""
    model = forward.model if isinstance(forward, ModelScores) else forward
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"'randomisation' re-initialises layers of a copy of the model, which needs a torch.nn.Module; the "
            f"forward function is {type(model).__name__}"
        )
    return model


def _explain_copy(
    subject: Subject,
    method: registry.MethodRecord,
    constructor: dict[str, Any],
    attribute: dict[str, Any],
    model: nn.Module,
    inputs: Tensor,
) -> Tensor:
    """``method`` on ``model``, a (re-initialised) copy of the subject's module, with the same options, forward
    wrapper and layer (the copy's own module of that name)."""
    forward = replace(subject.forward, model=model) if isinstance(subject.forward, ModelScores) else model
    layer = None
    if method.needs_layer and subject.layer is not None:
        original = _model_of(subject.forward)
        name = next(n for n, m in original.named_modules() if m is subject.layer)
        layer = model.get_submodule(name)
    explainer = registry.build(method.name, forward, layer=layer, **constructor)
    attributions: Tensor = explainer.attribute(inputs, **attribute)
    return attributions


def _sensitivity(explainer: Any, inputs: Tensor, targets: Tensor, options: dict[str, Any], explained: Tensor) -> Tensor:
    """Max-sensitivity per example of the chunk ``inputs``, measured from ``explained``, the explanation just
    made by the same call: only the perturbed copies are explained, all of them in one call."""
    scores = sensitivity_max(
        explainer.attribute,
        inputs,
        n_perturb_samples=PERTURBATION_SAMPLES,
        explanations=explained,
        target=targets,
        **options,
    )
    return scores.detach().float()
