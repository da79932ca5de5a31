"""Token handling shared by the LLM attribution classes: target tokens and readable token names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attribution._internal.checks import ArgumentError, ArgumentTypeError, describe
from attribution.llm.interpretable_input import _token_ids

DEFAULT_GEN_ARGS: dict[str, Any] = {"max_new_tokens": 25, "do_sample": False, "temperature": None, "top_p": None}
"""Greedy generation of up to 25 tokens when no target is given (Captum's default)."""


def _clean(token: str) -> str:
    return token.replace("\n", "\\n").strip()


def pretty_tokens(ids: Tensor, tokenizer: Any) -> list[str]:
    """Readable names of ``ids``: the text each token covers in the decoded string (no ``Ġ`` markers).

    A token whose span overlaps the previous one (a character split over several tokens) is marked
    ``" [OVERLAP]"``.  When re-encoding the decoded text does not give ``ids`` back, or the tokenizer has
    no offsets, each id is decoded on its own.
    """
    id_list = [int(i) for i in ids.reshape(-1).tolist()]
    text = tokenizer.decode(ids)
    try:
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        offsets = list(enc["offset_mapping"])
        re_ids = [int(i) for i in enc["input_ids"]]
    except (TypeError, KeyError, NotImplementedError):
        offsets, re_ids = [], []
    if re_ids != id_list:
        return [_clean(tokenizer.decode(torch.tensor([i]))) for i in id_list]
    names, end_prev = [], -1
    for k, (start, end) in enumerate(offsets):
        if start == end:  # an empty span: up to the next token's start
            end = offsets[k + 1][0] if k + 1 < len(offsets) else len(text)
        names.append(_clean(text[start:end]) + (" [OVERLAP]" if end_prev > start else ""))
        end_prev = end
    return names


def target_tokens(
    target: str | Tensor | None,
    tokenizer: Any,
    skip_tokens: list[int] | list[str] | None,
    gen_args: dict[str, Any] | None,
    generate: Callable[[dict[str, Any]], Tensor],
) -> Tensor:
    """The target token ids ``(T,)``: encoded from a string, given ids, or generated when None.

    Args:
        target: the response, its token ids, or None (``generate(gen_args)`` makes it).
        tokenizer: the tokenizer.
        skip_tokens: ids or token strings removed from a given target.
        gen_args: generation options; only without a target.
        generate: makes the response's token ids from the generation options.

    Raises:
        ArgumentError: ``gen_args`` with a target; an empty target.
        ArgumentTypeError: a target that is neither a string nor a tensor of ids.
    """
    if target is None:
        tokens = generate(dict(gen_args) if gen_args else dict(DEFAULT_GEN_ARGS))
    else:
        if gen_args is not None:
            raise ArgumentError(
                f"gen_args: only used to generate a target; expected None with a target, got {gen_args!r}"
            )
        skip = _token_ids(tokenizer, skip_tokens, "skip_tokens")
        if isinstance(target, str):
            ids = torch.tensor(tokenizer.encode(target), dtype=torch.long).reshape(-1)
        elif isinstance(target, Tensor) and not target.is_floating_point() and not target.is_complex():
            ids = target.reshape(-1).long()
        else:
            raise ArgumentTypeError(f"target: expected a string, a tensor of token ids or None, got {describe(target)}")
        tokens = ids[~torch.isin(ids, torch.tensor(skip, dtype=ids.dtype, device=ids.device))] if skip else ids
    if tokens.numel() == 0:
        raise ArgumentError(f"target: expected at least one token (after skip_tokens), got {target!r}")
    return tokens
