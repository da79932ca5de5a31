"""A local stand-in for ``hf-internal-testing/tiny-random-LlamaForCausalLM``, built offline.

Captum's ``tests/attr/test_llm_attr_hf_compatibility.py`` loads that hub repository (tokenizer and weights)
with ``AutoTokenizer.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained``.  Nothing may be
downloaded here, so :func:`build_hub_cache` writes, under a Hugging Face hub cache directory, a snapshot of
that repository made on the spot: a tiny random Llama (``LlamaConfig``: hidden 16, 2 layers, 4 heads,
random weights) and a Llama-style tokenizer built with the ``tokenizers`` library.  With ``HF_HUB_CACHE``
pointing there and ``HF_HUB_OFFLINE=1`` the name resolves to the snapshot through the hub's ordinary
offline lookup (``refs/main`` -> ``snapshots/<commit>/``); no ``from_pretrained`` is patched.

The tokenizer has the pipeline of Llama's (SentencePiece BPE as converted by ``transformers``): BPE with
``byte_fallback`` over the 256 ``<0xNN>`` byte tokens, no normalizer, a ``Metaspace`` pre-tokenizer
(``"▁"``, prepended to the first word, no split), ``<unk>``/``<s>``/``</s>`` as ids 0/1/2, ``<s>`` added
in front when ``add_special_tokens=True``, and the decoder ``Replace("▁", " ")``, ``ByteFallback``,
``Fuse``, ``Strip`` one leading space.  Its vocabulary is small but chosen so that the texts of Captum's
tests come out in the same tokens as with the real Llama tokenizer: the words those tests show whole
(``▁One``, ``▁Running``, ``▁jump`` + ``ing``, ...) are merged whole, printable ASCII characters and the
few non-Latin characters that Llama's vocabulary holds (``आ``, ``Δ``, ``Θ``, ``�``) are single tokens,
and everything else (emoji, ``\\n``, Telugu, Tamil, ``ϖ``, ...) falls back to bytes.

    python -m benchmarks._local_hf DIR     # writes DIR/models--hf-internal-testing--tiny-random-LlamaForCausalLM
"""

from __future__ import annotations

import string
import sys
from pathlib import Path
from typing import Any

REPO_ID = "hf-internal-testing/tiny-random-LlamaForCausalLM"
COMMIT = "0" * 39 + "1"
"""The snapshot's (made-up) commit hash: ``refs/main`` names it."""

SPECIAL = ("<unk>", "<s>", "</s>")
CHARS = ["▁", *(chr(c) for c in range(33, 127)), "�", "आ", "Δ", "Θ"]
"""Single-character tokens: ``▁``, printable ASCII, and the non-Latin characters that Llama's vocabulary
holds among those of Captum's pretty-print test (the others there are 2 to 4 byte tokens each)."""
MERGES = [
    ("i", "n"),
    ("in", "g"),
    ("o", "w"),
    ("M", "e"),
    ("b", "ing"),
    ("▁", "m"),
    ("▁m", "e"),
    ("▁", "a"),
    ("▁a", "n"),
    ("▁an", "d"),
    ("▁", "j"),
    ("▁j", "u"),
    ("▁ju", "m"),
    ("▁jum", "p"),
    ("▁", "c"),
    ("▁c", "l"),
    ("▁cl", "i"),
    ("▁cli", "m"),
    ("▁", "R"),
    ("▁R", "u"),
    ("▁Ru", "n"),
    ("▁Run", "n"),
    ("▁Runn", "ing"),
    ("▁", "O"),
    ("▁O", "n"),
    ("▁On", "e"),
    ("▁", "t"),
    ("▁t", "w"),
    ("▁tw", "o"),
    ("▁t", "h"),
    ("▁th", "r"),
    ("▁thr", "e"),
    ("▁thre", "e"),
]
"""BPE merges, highest priority first: ``▁One ▁two ▁three``, ``▁Running ▁and ▁jump ing ▁and ▁clim bing``,
``Me ow ▁me ow``, then ``▁`` + each other ASCII letter (``▁b``, ...: one token for a one-letter word)."""
MERGES += [("▁", letter) for letter in string.ascii_letters if ("▁", letter) not in MERGES]


def vocabulary() -> dict[str, int]:
    """Token -> id: the special tokens, the 256 byte tokens, single characters, then the merged tokens."""
    tokens = [*SPECIAL, *(f"<0x{b:02X}>" for b in range(256)), *CHARS]
    for left, right in MERGES:
        if left + right not in tokens:
            tokens.append(left + right)
    return {token: i for i, token in enumerate(tokens)}


def build_tokenizer() -> Any:
    """The Llama-style fast tokenizer (``transformers.PreTrainedTokenizerFast``)."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary()
    backend = Tokenizer(BPE(vocab=vocab, merges=MERGES, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in SPECIAL])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_model(vocab_size: int, seed: int = 0) -> Any:
    """A tiny random ``LlamaForCausalLM``: hidden 16, 2 layers, 4 heads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        unk_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def save_local_model(directory: Path) -> Path:
    """Save the tokenizer and the model into ``directory`` (``save_pretrained``); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(directory)
    build_model(len(tokenizer)).save_pretrained(directory)
    return directory


def build_hub_cache(cache_dir: Path) -> Path:
    """Write the snapshot of :data:`REPO_ID` into the hub cache ``cache_dir`` (what ``HF_HUB_CACHE`` names);
    returns the snapshot directory.  ``HF_HUB_OFFLINE=1`` makes the hub read it without asking the network."""
    repo = Path(cache_dir) / ("models--" + REPO_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return save_local_model(repo / "snapshots" / COMMIT)


if __name__ == "__main__":
    print(build_hub_cache(Path(sys.argv[1])))
