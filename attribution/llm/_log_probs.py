"""The functional core of LLM attribution: log-probabilities of target tokens after a batch of prompts.

Captum evaluates a perturbed prompt token by token: one forward for the prompt, then one per target token
(with or without a cache), for every perturbation separately.  For a causal LM the log-probability of every
target token given the prompt and the target tokens before it comes from one forward over
``prompt + target[:-1]`` (teacher forcing): logits at position ``t`` depend on tokens ``<= t`` only.  Here
rows of equal length are batched, and the keys and values of the prefix that a batch shares with the
unperturbed prompt are computed once (``PromptCache``) and reused, so a perturbation of token ``i``
runs the model over the tokens from ``i`` on only.

For a model that is not known to be causal (its logits may read later tokens), the token-by-token
evaluation is kept, batched over rows.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.checks import ArgumentTypeError

ROWS_PER_FORWARD = 8
"""Rows run together (with a prefix cache: rows sorted by the prefix they share with the prompt, in groups of
this size); small groups keep memory low and are not slower on CPU."""


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a Hugging Face style causal LM: a decoder-only model (``config`` not
    encoder-decoder, and not an encoder: a BERT LM head can generate, but its attention reads the whole
    sequence unless ``is_decoder``) that can generate."""
    config = getattr(model, "config", None)
    can_generate = getattr(model, "can_generate", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or not callable(can_generate):
        return False
    if not getattr(config, "is_decoder", True):
        return False
    return bool(can_generate())


def logits_of(output: Any) -> Tensor:
    """The ``(N, L, V)`` logits of a model output: ``.logits``, the first of a tuple, or the tensor."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ArgumentTypeError(
        f"forward_func: the model returned {type(output).__name__}; expected logits, a tuple or an output with .logits"
    )


def _parameters(model: Any) -> Any:
    try:
        return inspect.signature(model.forward if isinstance(model, nn.Module) else model).parameters
    except (TypeError, ValueError):
        return {}


def _cache_keyword(model: nn.Module) -> str:
    """The keyword under which the model takes a cache (newer transformers rename ``past_key_values``)."""
    return "cache" if "cache" in _parameters(model) else "past_key_values"


def run_model(model: Any, ids: Tensor, keep: int, **kwargs: Any) -> Tensor:
    """The logits of the last ``keep`` positions of ``model(ids, **kwargs)``; a Hugging Face model that takes
    ``logits_to_keep`` computes only those (the LM head over the whole sequence is much of a forward when
    the vocabulary is large)."""
    parameters = _parameters(model)
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in parameters:
            kwargs[name] = keep
            break
    return logits_of(model(ids, **kwargs))[:, -keep:]


def _cache_layers(cache: Any) -> list[tuple[Tensor, Tensor]] | None:
    """The ``(keys, values)`` of every layer of a cache, each ``(N, heads, L, d)``; None when unreadable."""
    if hasattr(cache, "layers"):
        layers = [(getattr(lay, "keys", None), getattr(lay, "values", None)) for lay in cache.layers]
    elif hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        layers = list(zip(cache.key_cache, cache.value_cache))
    elif isinstance(cache, (tuple, list)):
        layers = [tuple(layer[:2]) for layer in cache]
    else:
        return None
    if not layers or not all(isinstance(k, Tensor) and isinstance(v, Tensor) for k, v in layers):
        return None
    return [(k, v) for k, v in layers]  # type: ignore[misc]


@dataclass
class PromptCache:
    """The keys and values of the unperturbed prompt, built lazily, and how to hand a prefix to the model."""

    model: nn.Module
    prompt: Tensor
    """``(L,)`` token ids of the unperturbed prompt."""
    layers: list[tuple[Tensor, Tensor]] | None = None
    cache_type: type | None = None
    keyword: str = "past_key_values"
    usable: bool = True
    built: bool = field(default=False, repr=False)

    def build(self) -> None:
        """One forward over the prompt with ``use_cache=True``; the cache is unusable if it cannot be read."""
        self.built = True
        try:
            output = self.model(self.prompt.unsqueeze(0), use_cache=True)
        except TypeError:
            self.usable = False
            return
        cache = getattr(output, "past_key_values", None)
        if cache is None:
            cache = getattr(output, "cache", None)
        layers = _cache_layers(cache) if cache is not None else None
        if layers is None:
            self.usable = False
            return
        self.layers = [(k.detach(), v.detach()) for k, v in layers]
        self.cache_type = type(cache)
        self.keyword = _cache_keyword(self.model)

    def prefix(self, length: int, rows: int) -> Any:
        """A cache of the prompt's first ``length`` tokens for ``rows`` rows, of the model's cache type."""
        assert self.layers is not None and self.cache_type is not None
        sliced = [
            (k[:, :, :length].expand(rows, -1, -1, -1), v[:, :, :length].expand(rows, -1, -1, -1))
            for k, v in self.layers
        ]
        if issubclass(self.cache_type, (tuple, list)):
            return tuple(sliced)
        cache: Any = self.cache_type()
        for i, (k, v) in enumerate(sliced):
            cache.update(k, v, i)
        return cache

    def shared_prefix(self, ids: Tensor) -> Tensor:
        """``(N,)`` length of the prefix each row of ``ids`` shares with the prompt."""
        m = min(ids.shape[1], self.prompt.shape[0])
        same = ids[:, :m] == self.prompt[:m].to(ids.device)
        return same.long().cumprod(dim=1).sum(dim=1)


def teacher_forced_log_probs(model: nn.Module, ids: Tensor, target: Tensor, cache: PromptCache | None = None) -> Tensor:
    """``(N, T)``: log p(target[k] | ids row, target[:k]) for a causal LM, from one forward per group of rows.

    Args:
        model: a causal LM (``model(input_ids)`` gives ``(N, L, V)`` logits or an output with ``.logits``).
        ids: ``(N, L)`` prompt token ids.
        target: ``(T,)`` target token ids.
        cache: the unperturbed prompt's cache; rows sharing a prefix with it skip that prefix.
    """
    n, length = ids.shape
    target = target.to(ids.device)
    full = torch.cat([ids, target[:-1].unsqueeze(0).expand(n, -1)], dim=1)
    if cache is not None and cache.usable and not cache.built:
        cache.build()
    keep = target.shape[0]
    if cache is None or not cache.usable:
        return torch.cat(
            [_gather(run_model(model, rows, keep), target) for rows in torch.split(full, ROWS_PER_FORWARD)]
        )
    shared = cache.shared_prefix(ids).clamp(max=length - 1)
    order = torch.argsort(shared, descending=True)
    out = torch.empty(n, target.shape[0], device=ids.device)
    for rows in torch.split(order, ROWS_PER_FORWARD):
        start = int(shared[rows].min())
        if start == 0:
            out[rows] = _gather(run_model(model, full[rows], keep), target)
            continue
        past = cache.prefix(start, rows.shape[0])
        out[rows] = _gather(
            run_model(model, full[rows, start:], keep, **{cache.keyword: past}, use_cache=False), target
        )
    return out


def stepwise_log_probs(model: nn.Module, ids: Tensor, target: Tensor) -> Tensor:
    """``(N, T)`` as ``teacher_forced_log_probs``, for any model: one forward per target token over
    ``ids + target[:k]``, reading the last position's logits (Captum's evaluation)."""
    n = ids.shape[0]
    target = target.to(ids.device)
    columns = []
    for k in range(target.shape[0]):
        inputs = torch.cat([ids, target[:k].unsqueeze(0).expand(n, -1)], dim=1)
        last = run_model(model, inputs, 1)[:, -1]
        columns.append(torch.log_softmax(last.float(), dim=-1)[:, target[k]])
    return torch.stack(columns, dim=1)


def _gather(logits: Tensor, target: Tensor) -> Tensor:
    """Log-probabilities of ``target`` read at the ``T`` positions of ``logits`` ``(N, T, V)``."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(-1, target.view(1, -1, 1).expand(logits.shape[0], -1, 1)).squeeze(-1)
