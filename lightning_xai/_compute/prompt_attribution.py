"""Token attributions of a causal language model's continuations (:mod:`attribution.llm`), for the language-model
monitor: finding the Hugging Face model inside a LightningModule, the target's log-probability, the share of
attribution on watched tokens, and how far the attributions moved since the previous point.

Everything runs in float32 eval mode without autocast and without writing ``param.grad`` (the gradient
method differentiates the embedding output only); the caller wraps it in
:func:`~lightning_xai._compute.explain.untouched_training_state`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attribution import (
    FeatureAblation,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMAttributionResult,
    LLMGradientAttribution,
    TextTokenInput,
)
from lightning_xai._config.prompts import PromptMethod, PromptPair


def _is_pretrained(module: Any) -> bool:
    """Whether ``module`` is a Hugging Face ``PreTrainedModel`` (read from its classes: transformers is optional)."""
    return any(
        cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers") for cls in type(module).__mro__
    )


def language_model(module: nn.Module, model_attr: str | None) -> nn.Module:
    """The causal LM inside a LightningModule: the dotted attribute ``model_attr``, or the first Hugging Face
    ``PreTrainedModel`` among its modules (under a PEFT wrapper: the wrapped model, whose layers carry the
    adapters).

    Raises:
        ValueError: no such attribute, or no Hugging Face model and no ``model_attr``.
    """
    if model_attr is not None:
        found: Any = module
        for part in model_attr.split("."):
            if not hasattr(found, part):
                children = [name for name, _ in module.named_children()]
                raise ValueError(
                    f"model_attr: {type(module).__name__} has no {model_attr!r}; its children are {children}"
                )
            found = getattr(found, part)
        if not isinstance(found, nn.Module):
            raise ValueError(f"model_attr: {model_attr!r} is a {type(found).__name__}, not a torch module")
        return found
    for candidate in module.modules():
        if _is_pretrained(candidate):
            return candidate
    raise ValueError(
        f"model_attr: {type(module).__name__} holds no Hugging Face PreTrainedModel; name the language model "
        "attribute with model_attr= (e.g. 'model')"
    )


def baseline_token(tokenizer: Any, baseline: int | str | None) -> int | str:
    """The token an ablated prompt token becomes: ``baseline``, else the tokenizer's unknown, padding or end
    token, else id 0."""
    if baseline is not None:
        return baseline
    for name in ("unk_token_id", "pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def encoded_target(tokenizer: Any, target: str) -> Tensor:
    """``(T,)`` token ids of a continuation, without the special tokens an encoder adds around a text."""
    try:
        ids = tokenizer.encode(target, add_special_tokens=False)
    except TypeError:  # a tokenizer without the keyword
        ids = tokenizer.encode(target)
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        raise ValueError(f"probe: the target {target!r} encodes to no token")
    return ids


@dataclass(frozen=True)
class PreparedPrompt:
    """A probe entry in token form: the interpretable prompt, the target's ids and the watched tokens' mask."""

    inp: TextTokenInput
    target: Tensor
    mask: Tensor | None
    """``(n_tokens,)`` bool, or None when the entry has no mask."""

    @property
    def tokens(self) -> list[str]:
        return list(self.inp.values)


def prepared_prompts(pairs: Sequence[PromptPair], tokenizer: Any, baseline: int | str | None) -> list[PreparedPrompt]:
    """Tokenise every probe entry once.

    Raises:
        ValueError: a target without tokens, a mask of another length than the prompt's tokens, a mask naming
            no token of its prompt.
    """
    prepared = []
    replacement = baseline_token(tokenizer, baseline)
    for i, pair in enumerate(pairs):
        inp = TextTokenInput(pair.prompt, tokenizer, baselines=replacement)
        tokens = list(inp.values)
        mask = None
        if pair.mask is not None and isinstance(pair.mask[0], str):
            wanted = {str(m) for m in pair.mask}
            mask = torch.tensor([_clean(t) in wanted or t in wanted for t in tokens])
            if not bool(mask.any()):
                raise ValueError(f"probe[{i}]: its mask names {sorted(wanted)}, none of the prompt's tokens {tokens}")
        elif pair.mask is not None:
            mask = torch.tensor([bool(m) for m in pair.mask])
            if mask.numel() != len(tokens):
                raise ValueError(
                    f"probe[{i}]: its mask has {mask.numel()} flags for a prompt of {len(tokens)} tokens {tokens}"
                )
        prepared.append(PreparedPrompt(inp, encoded_target(tokenizer, pair.target), mask))
    return prepared


def _clean(token: str) -> str:
    """A token string without the word-start markers of byte-level and sentencepiece vocabularies."""
    return token.lstrip("Ġ▁").strip()


@dataclass
class PromptPoint:
    """One point's attributions: per prompt the result, the target's log-probability and the mask share."""

    results: list[LLMAttributionResult]
    log_probs: Tensor
    """``(P,)`` log-probability of each whole target given its prompt."""
    shares: list[float | None]
    """Per prompt, the share of absolute attribution on its mask (None: no mask, or no attribution at all)."""

    def seq_attr(self) -> list[Tensor]:
        return [r.seq_attr.detach().float().cpu() for r in self.results]


def attribute_prompts(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[PreparedPrompt],
    method: PromptMethod,
    options: Mapping[str, Any],
) -> PromptPoint:
    """Attribute each prompt's target with ``method`` (and ``options``, passed to ``attribute``), in float32
    without autocast, and read the targets' log-probabilities."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, enabled=False):
        if method == "feature_ablation":
            explainer: LLMAttribution | LLMGradientAttribution = LLMAttribution(FeatureAblation(model), tokenizer)
        else:
            embeddings = model.get_input_embeddings()  # type: ignore[operator]
            explainer = LLMGradientAttribution(LayerIntegratedGradients(model, embeddings), tokenizer)
        results = [explainer.attribute(p.inp, target=p.target, **options) for p in prompts]
        log_probs = torch.stack([target_log_prob(model, p) for p in prompts])
    shares = [mask_share(r.seq_attr, p.mask) for r, p in zip(results, prompts)]
    return PromptPoint(results, log_probs.cpu(), shares)


def target_log_prob(model: nn.Module, prompt: PreparedPrompt) -> Tensor:
    """log p(target | prompt) of a causal LM, from one teacher-forced forward over ``prompt + target[:-1]``."""
    device = next(model.parameters()).device
    ids = torch.as_tensor(prompt.inp.to_model_input()).reshape(1, -1).to(device)
    target = prompt.target.to(device)
    full = torch.cat([ids, target[:-1].unsqueeze(0)], dim=1)
    with torch.no_grad():
        output = model(full)
    logits: Tensor = output.logits if hasattr(output, "logits") else output[0] if isinstance(output, tuple) else output
    positions = logits[0, ids.shape[1] - 1 :].float().log_softmax(-1)
    return positions.gather(-1, target.unsqueeze(-1)).sum()


def mask_share(attr: Tensor, mask: Tensor | None) -> float | None:
    """Share of ``|attr|`` on ``mask`` (None without a mask, or where every attribution is zero)."""
    if mask is None:
        return None
    magnitude = attr.detach().float().abs().cpu()
    total = float(magnitude.sum())
    return float(magnitude[mask].sum()) / total if total > 0 else None


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two attribution vectors of one prompt; 1 when both are zero, 0 when one is."""
    a, b = a.float().reshape(-1), b.float().reshape(-1)
    norms = float(a.norm()) * float(b.norm())
    if norms == 0:
        return 1.0 if float(a.norm()) == float(b.norm()) else 0.0
    return float(torch.dot(a, b)) / norms
