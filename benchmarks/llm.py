"""Our ``LLMAttribution`` and ``LLMGradientAttribution`` vs. Captum's, side by side in one process.

    python -m benchmarks.llm

A GPT-2 with random weights built from a config (vocabulary 256, 2 layers, width 64), a 64-token prompt
(``TextTokenInput``) and an 8-token target:

- ``LLMAttribution(FeatureAblation)``: 64 ablations (and the unperturbed prompt).  Captum evaluates each
  perturbed prompt token by token (one forward for the prompt, then one per target token, with the cache
  or without); ours runs one batched forward over prompt and target per group of prompts, with the cache
  starting after the prefix the group shares with the prompt (its keys and values are computed once).
  Timed with ``use_cached_outputs`` on (both libraries' default) and off.  With transformers 5, Captum's
  cached evaluation disagrees with its uncached one (about 4e-2 relative here; it also indexes positions
  past ``n_positions`` and fails on a GPT-2 with ``n_positions=128``); ours agrees with Captum's uncached
  evaluation either way.
- ``LLMGradientAttribution(LayerIntegratedGradients)`` on the token embeddings, 50 steps: Captum runs the
  method once per target token; ours once for all of them (each copy of the prompt explains its token).

The attributions must agree (relative difference printed).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from benchmarks._measure import max_rel_diff, row, side_by_side

PROMPT, TARGET, VOCAB = 64, 8, 256


class NumberTokenizer:
    """Space-separated token ids as text (``"17 3 200"``); what both libraries need of a tokenizer."""

    def encode(self, text: str, add_special_tokens: bool = True, return_tensors: str | None = None) -> Any:
        ids = [int(t) for t in text.split(" ") if t]
        return torch.tensor([ids]) if return_tensors == "pt" else ids

    def convert_ids_to_tokens(self, ids: Any) -> Any:
        return str(ids) if isinstance(ids, int) else [str(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: Any) -> Any:
        return int(tokens) if isinstance(tokens, str) else [int(t) for t in tokens]

    def decode(self, ids: Tensor) -> str:
        return " ".join(str(int(i)) for i in torch.as_tensor(ids).reshape(-1))

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> Any:
        words = text.split(" ")
        offsets, start = [], 0
        for word in words:
            offsets.append((start, start + len(word)))
            start += len(word) + 1
        return {"input_ids": [int(w) for w in words], "offset_mapping": offsets}


def _model() -> Any:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=1024, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


def bench_llm(repeats: int = 2) -> list[str]:
    """Time both libraries' LLM attribution with FeatureAblation and LayerIntegratedGradients."""
    import captum.attr as theirs  # type: ignore[import-untyped]

    import attribution as ours

    model = _model()
    tokenizer = NumberTokenizer()
    g = torch.Generator().manual_seed(1)
    prompt = " ".join(str(int(i)) for i in torch.randint(1, VOCAB, (PROMPT,), generator=g))
    target = torch.randint(1, VOCAB, (TARGET,), generator=g)
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; GPT-2 (2 layers, width 64) from a config, "
        f"{PROMPT}-token prompt, {TARGET}-token target"
    ]

    def ablation(library: Any, use_cached_outputs: bool = True) -> Any:
        llm_attr = library.LLMAttribution(library.FeatureAblation(model), tokenizer)
        inp = library.TextTokenInput(prompt, tokenizer)
        return lambda: llm_attr.attribute(inp, target, use_cached_outputs=use_cached_outputs).token_attr

    for cached in (True, False):
        run_ours, run_theirs = side_by_side(ablation(ours, cached), ablation(theirs, cached), repeats)
        name = f"LLMAttribution(FeatureAblation), cache {'on' if cached else 'off'}"
        lines += [row(name, run_ours, run_theirs), _agree(run_ours, run_theirs)]

    def gradient(library: Any) -> Any:
        lig = library.LayerIntegratedGradients(model, model.transformer.wte)
        llm_attr = library.LLMGradientAttribution(lig, tokenizer)
        return lambda: llm_attr.attribute(library.TextTokenInput(prompt, tokenizer), target).token_attr

    run_ours, run_theirs = side_by_side(gradient(ours), gradient(theirs), repeats)
    lines += [row("LLMGradientAttribution(LayerIG, 50 steps)", run_ours, run_theirs), _agree(run_ours, run_theirs)]
    return lines


def _agree(ours: Any, theirs: Any) -> str:
    return f"{'':<44} token_attr max relative difference {max_rel_diff(ours.result, theirs.result):.1e}"


if __name__ == "__main__":
    print("\n".join(bench_llm()))
