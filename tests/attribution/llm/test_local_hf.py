"""The local stand-in for hf-internal-testing/tiny-random-LlamaForCausalLM (benchmarks/_local_hf.py) that Captum's
``test_llm_attr_hf_compatibility.py`` runs against in ``scripts/captum_suite``: built offline, found through the hub
cache, tokenizing Captum's texts as the real Llama tokenizer does, and usable by our LLMAttribution."""

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from attribution import FeatureAblation, LLMAttribution, TextTemplateInput  # noqa: E402
from attribution.llm._tokens import pretty_tokens  # noqa: E402
from benchmarks import _local_hf  # noqa: E402

EMOJI_TEXT = 'One two three\n😍\n😂\n😸\n😍\n😂\n😸\n😍\n\'😂\n😸😂\n😍😍😍😍😍\n😂:\n"😸"\n😂\n�\n\nథஐૹৣआΔΘϖ\n'


def _bytes(char):
    return [char] + [f"{char} [OVERLAP]"] * (len(char.encode()) - 1)


def _emoji_pretty():
    """Captum's expected pretty tokens for ``EMOJI_TEXT`` (without ``<s>``)."""
    out = ["One", "two", "three", "\\n"]
    for line in ["😍", "😂", "😸", "😍", "😂", "😸", "😍", "'😂", "😸😂", "😍😍😍😍😍", "😂:", '"😸"', "😂", "�", ""]:
        for char in line:
            out += _bytes(char) if len(char.encode()) == 4 else [char]
        out.append("\\n")
    for char in "థஐૹৣआΔΘϖ":
        out += [char] if char in "आΔΘ" else _bytes(char)
    return out + ["\\n"]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """The hub cache holding the snapshot, read offline (as ``HF_HUB_OFFLINE=1`` does in the suite): else
    ``from_pretrained`` still asks the hub for files the snapshot lacks (``adapter_config.json``)."""
    import huggingface_hub.constants

    cache = tmp_path_factory.mktemp("hf_cache")
    _local_hf.build_hub_cache(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield cache


@pytest.fixture(scope="module")
def tokenizer(snapshot):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_local_hf.REPO_ID, cache_dir=snapshot, local_files_only=True)


def test_the_hub_name_resolves_to_the_snapshot(snapshot, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(_local_hf.REPO_ID, cache_dir=snapshot, local_files_only=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tokenizer) == len(_local_hf.vocabulary())
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.num_attention_heads) == (16, 2, 4)
    logits = model(torch.tensor([tokenizer.encode("a b")])).logits
    assert logits.shape == (1, 3, len(tokenizer))


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_llama_tokens_with_byte_fallback(tokenizer, add_special_tokens):
    ids = tokenizer.encode(EMOJI_TEXT, add_special_tokens=add_special_tokens)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    head = ["<s>"] if add_special_tokens else []
    start = ["▁One", "▁two", "▁three", "<0x0A>", "<0xF0>", "<0x9F>", "<0x98>", "<0x8D>"]  # One two three\n😍
    assert tokens[: len(head) + len(start)] == head + start
    assert tokenizer.decode(ids, skip_special_tokens=True) == EMOJI_TEXT
    assert pretty_tokens(torch.tensor(ids), tokenizer) == head + _emoji_pretty()


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_words_split_as_llama_splits_them(tokenizer, add_special_tokens):
    ids = tokenizer.encode("Running and jumping and climbing:\nMeow meow meow", add_special_tokens=add_special_tokens)
    expected = "▁Running ▁and ▁jump ing ▁and ▁clim bing : <0x0A> Me ow ▁me ow ▁me ow".split()
    assert tokenizer.convert_ids_to_tokens(ids) == (["<s>"] if add_special_tokens else []) + expected


def test_llm_attribution_on_the_local_llama(snapshot, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(_local_hf.REPO_ID, cache_dir=snapshot, local_files_only=True).eval()
    res = LLMAttribution(FeatureAblation(model), tokenizer).attribute(
        TextTemplateInput("{} b {} {} e {}", ["a", "c", "d", "f"]), "m n o p q", skip_tokens=["<s>"]
    )
    assert res.seq_attr.shape == (4,)
    assert res.input_tokens == ["a", "c", "d", "f"]
    assert res.output_tokens == ["m", "n", "o", "p", "q"]
    assert res.token_attr.shape == (5, 4) and torch.isfinite(res.token_attr).all()
