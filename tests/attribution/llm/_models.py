"""Tiny language models and a tokenizer for the LLM attribution tests: nothing is downloaded."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Chars:
    """A tokenizer of space-separated single letters: ``<s>`` is 0, ``<unk>`` 1, ``a``..``z`` are 2..27."""

    vocab_size = 28
    special = {0: "<s>", 1: "<unk>"}

    def encode(self, text, add_special_tokens=True, return_tensors=None):
        ids = [self._id(word) for word in text.split(" ") if word]
        ids = [0, *ids] if add_special_tokens else ids
        return torch.tensor([ids]) if return_tensors == "pt" else ids

    def _id(self, token):
        if token in self.special.values():
            return {v: k for k, v in self.special.items()}[token]
        return ord(token) - 95 if len(token) == 1 and token.isalpha() else 1

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.special.get(ids, chr(ids + 95))
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._id(tokens)
        return [self._id(t) for t in tokens]

    def decode(self, ids):
        return " ".join(self.convert_ids_to_tokens([int(i) for i in torch.as_tensor(ids).reshape(-1)]))

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        ids = self.encode(text, add_special_tokens=add_special_tokens)
        result = {"input_ids": ids}
        if return_offsets_mapping:
            offsets, start = ([(0, 0)] if add_special_tokens else []), 0
            for word in text.split(" "):
                offsets.append((start, start + len(word)))
                start += len(word) + 1
            result["offset_mapping"] = offsets
        return result


class _Config:
    is_encoder_decoder = False


class _Output:
    def __init__(self, logits: Tensor, past_key_values) -> None:
        self.logits = logits
        self.past_key_values = past_key_values


SINK = 50.0
"""Logit of the sink token 0: log p(v) = a_v . h - SINK up to exp(-SINK) for every other token v."""


class LinearLM(nn.Module):
    """A causal bag-of-embeddings LM whose next-token log-probability is linear in the token embeddings:
    ``h_t = sum_{s <= t} E[x_s]``, ``log p(v | x_<=t) = A[v] . h_t - SINK`` for ``v != 0``.

    Hugging Face shaped: ``config``, ``can_generate()``, ``generate``, and a legacy tuple cache holding
    the embeddings seen so far.
    """

    def __init__(self, vocab: int = Chars.vocab_size, dim: int = 6) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.config = _Config()
        self.emb = nn.Embedding(vocab, dim)
        self.emb.weight.data = torch.randn(vocab, dim, generator=g) * 0.3
        self.head = nn.Parameter(torch.randn(vocab, dim, generator=g) * 0.3)

    @property
    def device(self) -> torch.device:
        return self.head.device

    def can_generate(self) -> bool:
        return True

    def forward(self, input_ids: Tensor, past_key_values=None, use_cache: bool = False, **kwargs) -> _Output:
        emb = self.emb(input_ids)
        seen = emb if past_key_values is None else torch.cat([past_key_values[0][0][:, 0], emb], dim=1)
        h = seen.cumsum(dim=1)[:, -emb.shape[1] :]
        logits = h @ self.head.T
        logits = torch.cat([torch.full_like(logits[..., :1], SINK), logits[..., 1:]], dim=-1)
        cache = ((seen.unsqueeze(1), seen.unsqueeze(1)),) if use_cache else None
        return _Output(logits, cache)

    def generate(self, input_ids: Tensor, max_new_tokens: int = 3, **kwargs) -> Tensor:
        ids = input_ids
        for _ in range(max_new_tokens):
            nxt = self(ids).logits[:, -1, 1:].argmax(-1, keepdim=True) + 1
            ids = torch.cat([ids, nxt], dim=1)
        return ids

    def log_prob(self, ids: list[int], target: list[int]) -> Tensor:
        """Closed form: per-token log-probabilities of ``target`` after the prompt ``ids``."""
        h = self.emb.weight[torch.tensor(ids)].sum(0)
        out = []
        for y in target:
            out.append(self.head[y] @ h - SINK)
            h = h + self.emb.weight[y]
        return torch.stack(out)


def gpt2(vocab: int = Chars.vocab_size, layers: int = 2, dim: int = 32, positions: int = 128, seed: int = 0):
    """A GPT-2 with random weights built from a config."""
    transformers = __import__("pytest").importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=positions, n_embd=dim, n_layer=layers, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


def llama(vocab: int = Chars.vocab_size, seed: int = 0):
    """A Llama with random weights built from a config."""
    transformers = __import__("pytest").importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(config).eval()
