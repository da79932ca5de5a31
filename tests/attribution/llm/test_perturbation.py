"""LLMAttribution: closed forms on a linear LM, cache and batching invariance, target forms, per-token sums."""

import pytest
import torch

from attribution import (
    FeatureAblation,
    KernelShap,
    Lime,
    LLMAttribution,
    ShapleyValues,
    ShapleyValueSampling,
    TextTemplateInput,
    TextTokenInput,
)
from attribution.llm import _log_probs
from tests.attribution.llm._models import Chars, LinearLM, gpt2, llama

TOK = Chars()
TARGET = torch.tensor(TOK.encode("e f g", add_special_tokens=False))  # no start token
TARGET_IDS = TARGET.tolist()


def _ablation_closed_form(model, ids, target, baseline=0):
    """``(T, n)``: drop of each target token's log-probability when prompt token i becomes the baseline."""
    full = model.log_prob(ids, target)
    columns = [full - model.log_prob(ids[:i] + [baseline] + ids[i + 1 :], target) for i in range(len(ids))]
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("use_cached_outputs", [True, False])
def test_feature_ablation_is_the_drop_of_the_target_log_prob_on_a_linear_lm(use_cached_outputs):
    model = LinearLM()
    ids = TOK.encode("a b c d")
    res = LLMAttribution(FeatureAblation(model), TOK).attribute(
        TextTokenInput("a b c d", TOK, baselines=1), TARGET, use_cached_outputs=use_cached_outputs
    )
    expected = _ablation_closed_form(model, ids, TARGET_IDS, baseline=1)
    # Linear in the embeddings: token i's effect on log p(y_k) is A[y_k] . (E[x_i] - E[baseline]).
    linear = torch.stack([model.head[y] @ (model.emb.weight[ids] - model.emb.weight[1]).T for y in TARGET_IDS])
    torch.testing.assert_close(res.token_attr, expected.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.token_attr, linear.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.seq_attr, expected.sum(0).detach(), atol=1e-5, rtol=1e-5)
    assert res.input_tokens == ["<s>", "a", "b", "c", "d"] and res.output_tokens == ["e", "f", "g"]


def test_shapley_values_equal_ablation_on_an_additive_model():
    model = LinearLM()
    inp = TextTokenInput("a b c d", TOK, baselines=1, skip_tokens=[0])
    ablation = LLMAttribution(FeatureAblation(model), TOK).attribute(inp, TARGET)
    exact = LLMAttribution(ShapleyValues(model), TOK).attribute(inp, TARGET)
    sampled = LLMAttribution(ShapleyValueSampling(model), TOK).attribute(inp, TARGET, n_samples=3)
    for res in (exact, sampled):
        torch.testing.assert_close(res.token_attr, ablation.token_attr, atol=1e-5, rtol=1e-5)
    assert ablation.input_tokens == ["a", "b", "c", "d"]


def test_template_segments_and_mask_on_a_linear_lm():
    model = LinearLM()
    inp = TextTemplateInput("{x} b {y} {z}", {"x": "a", "y": "c", "z": "d"}, mask={"x": 0, "y": 1, "z": 1})
    res = LLMAttribution(FeatureAblation(model), TOK).attribute(inp, TARGET, skip_tokens=["<s>"])
    full = model.log_prob(TOK.encode("a b c d"), TARGET_IDS).sum()
    drop_x = full - model.log_prob(TOK.encode("b c d"), TARGET_IDS).sum()
    drop_yz = full - model.log_prob(TOK.encode("a b"), TARGET_IDS).sum()
    torch.testing.assert_close(res.seq_attr, torch.stack([drop_x, drop_yz, drop_yz]).detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("build", [gpt2, llama, LinearLM], ids=["gpt2", "llama", "linear"])
@pytest.mark.parametrize("kind", ["tokens", "template"])
def test_cache_teacher_forcing_and_stepwise_evaluation_agree(build, kind):
    model = build()
    text = "a b c d e f g h"
    inp = TextTokenInput(text, TOK) if kind == "tokens" else TextTemplateInput("{} b {} d {} f", ["a", "c", "e"])
    results = [
        LLMAttribution(FeatureAblation(model), TOK, causal=causal).attribute(inp, TARGET, use_cached_outputs=cached)
        for causal, cached in [(None, True), (None, False), (False, False)]
    ]
    assert results[0].token_attr.abs().max() > 1e-4
    for other in results[1:]:
        torch.testing.assert_close(other.token_attr, results[0].token_attr, atol=2e-5, rtol=1e-4)


def test_the_cache_is_used_and_prompts_are_batched(monkeypatch):
    model = gpt2()
    calls, prefixes = [], []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    prefix = _log_probs.PromptCache.prefix
    monkeypatch.setattr(_log_probs.PromptCache, "prefix", lambda self, n, r: prefixes.append(n) or prefix(self, n, r))
    inp = TextTokenInput(" ".join("abcdefghijklmnop"), TOK)  # 17 tokens with <s>
    LLMAttribution(FeatureAblation(model), TOK).attribute(inp, TARGET)
    assert len(calls) <= 8  # Captum: (1 + 17) prompts x 3 target tokens = 54 forwards
    assert prefixes and max(prefixes) == 16 and sum(c[1] for c in calls) < 17 * 20


def test_per_token_rows_sum_to_the_sequence_row_and_prob_is_exp():
    model = gpt2()
    inp = TextTokenInput("a b c d", TOK)
    log_prob = LLMAttribution(FeatureAblation(model), TOK).attribute(inp, TARGET)
    torch.testing.assert_close(log_prob.seq_attr, log_prob.token_attr.sum(0), atol=1e-6, rtol=1e-5)
    prob = LLMAttribution(FeatureAblation(model), TOK, attr_target="prob").attribute(inp, TARGET)
    seen = []
    LLMAttribution(FeatureAblation(model), TOK).attribute(
        inp, TARGET, _inspect_forward=lambda prompt, response, probs: seen.append((prompt, response, probs))
    )
    assert seen[0] == ("<s> a b c d", "e f g", pytest.approx(seen[0][2])) and len(seen[0][2]) == 4
    full = torch.tensor(seen[0][2][0])
    assert prob.seq_attr.abs().max() > 0 and prob.seq_attr.abs().max() <= full


def test_string_and_token_id_targets_and_generated_target_agree():
    model = LinearLM()
    llm_attr = LLMAttribution(FeatureAblation(model), TOK)
    inp = TextTokenInput("a b c", TOK)
    by_text = llm_attr.attribute(inp, "e f g", skip_tokens=["<s>"])
    by_ids = llm_attr.attribute(inp, torch.tensor(TOK.encode("e f g")), skip_tokens=[0])
    torch.testing.assert_close(by_ids.token_attr, by_text.token_attr)
    generated = llm_attr.attribute(inp, gen_args={"max_new_tokens": 2})
    assert generated.token_attr.shape == (2, 4) and len(generated.output_tokens) == 2
    with_sos = llm_attr.attribute(inp, "e f g")
    assert with_sos.output_tokens == ["<s>", "e", "f", "g"]


@pytest.mark.parametrize("method", [Lime, KernelShap])
def test_surrogates_attribute_the_whole_target_only(method):
    model = LinearLM()
    res = LLMAttribution(method(model), TOK).attribute(TextTokenInput("a b c", TOK), TARGET, n_samples=30)
    assert res.token_attr is None and res.seq_attr.shape == (4,)


def test_num_trials_average_and_the_model_is_left_as_it_was():
    model = gpt2().train()
    flags = [m.training for m in model.modules()]
    inp = TextTokenInput("a b c", TOK)
    one = LLMAttribution(FeatureAblation(model.eval()), TOK).attribute(inp, TARGET)
    three = LLMAttribution(FeatureAblation(model), TOK).attribute(inp, TARGET, num_trials=3)
    torch.testing.assert_close(three.token_attr, one.token_attr, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters()) and flags


def test_only_decoder_models_count_as_causal():
    transformers = pytest.importorskip("transformers")
    config = dict(vocab_size=28, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    encoder = transformers.BertLMHeadModel(transformers.BertConfig(**config))
    decoder = transformers.BertLMHeadModel(transformers.BertConfig(is_decoder=True, **config))
    assert not _log_probs.is_causal_lm(encoder) and _log_probs.is_causal_lm(decoder)
    assert (
        _log_probs.is_causal_lm(gpt2())
        and _log_probs.is_causal_lm(llama())
        and not _log_probs.is_causal_lm(lambda x: x)
    )
