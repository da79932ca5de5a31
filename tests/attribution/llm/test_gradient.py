"""LLMGradientAttribution: exactness on a linear LM, completeness, the shared forward against the method's
own per-token runs."""

import functools

import pytest
import torch

from attribution import (
    FeatureAblation,
    LayerGradientShap,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMGradientAttribution,
    TextTokenInput,
)
from attribution.llm._gradient import layer_output_is_a_tensor
from attribution.llm.gradient import _Call
from tests.attribution.llm._models import Chars, LinearLM, gpt2, llama

TOK = Chars()
TARGET = torch.tensor(TOK.encode("e f g", add_special_tokens=False))  # no start token


def test_layer_integrated_gradients_on_the_embeddings_of_a_linear_lm_equals_ablation():
    model = LinearLM()
    inp = TextTokenInput("a b c d", TOK, baselines=1)
    lig = LLMGradientAttribution(LayerIntegratedGradients(model, model.emb), TOK)
    res = lig.attribute(inp, TARGET, n_steps=4)
    ablation = LLMAttribution(FeatureAblation(model), TOK).attribute(inp, TARGET)
    torch.testing.assert_close(res.token_attr, ablation.token_attr, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
def test_completeness_per_target_token(build):
    model = build()
    inp = TextTokenInput("a b c d", TOK, baselines=1)  # Llama's token 0 embeds to zeros, where RMSNorm is steep
    layer = model.get_input_embeddings()
    res = LLMGradientAttribution(LayerIntegratedGradients(model, layer), TOK).attribute(inp, TARGET, n_steps=64)
    # f(x) - f(baseline) of each target token: every prompt token replaced by the baseline token.
    ids = TOK.encode("a b c d")
    target = TARGET

    def log_probs(prompt):
        full = torch.cat([torch.tensor(prompt), target[:-1]]).unsqueeze(0)
        with torch.no_grad():
            out = torch.log_softmax(model(full).logits[0, len(prompt) - 1 :], -1)
        return out.gather(-1, target.unsqueeze(-1)).squeeze(-1)

    expected = log_probs(ids) - log_probs([1] * len(ids))
    torch.testing.assert_close(res.token_attr.sum(1), expected, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize(
    "method, kwargs",
    [
        (LayerIntegratedGradients, {"n_steps": 6}),
        (LayerIntegratedGradients, {"n_steps": 6, "method": "riemann_trapezoid", "internal_batch_size": 4}),
        (LayerIntegratedGradients, {"n_steps": 5, "baselines": (torch.tensor([[1, 0, 1, 0, 1]]),)}),
        (LayerGradientXActivation, {}),
    ],
    ids=["lig", "lig-trapezoid-chunked", "lig-baselines", "gxa"],
)
def test_one_shared_forward_equals_one_run_per_target_token(method, kwargs):
    model = gpt2()
    inp = TextTokenInput("a b c d", TOK)
    attr = method(model, model.transformer.wte)
    shared = LLMGradientAttribution(attr, TOK).attribute(inp, TARGET, **kwargs)
    stepwise = LLMGradientAttribution(attr, TOK, causal=False).attribute(inp, TARGET, **kwargs)
    assert shared.token_attr.abs().max() > 1e-5
    torch.testing.assert_close(shared.token_attr, stepwise.token_attr, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(shared.seq_attr, shared.token_attr.sum(0))


def test_gradient_shap_and_skipped_tokens():
    model = gpt2()
    inp = TextTokenInput("a b c", TOK, skip_tokens=[0])
    lgs = LLMGradientAttribution(LayerGradientShap(model, model.transformer.wte), TOK)
    res = lgs.attribute(inp, TARGET, baselines=torch.tensor([[1.0, 0.0, 1.0]]), n_samples=3)
    assert res.token_attr.shape == (3, 3) and res.input_tokens == ["a", "b", "c"]
    lig = LLMGradientAttribution(LayerIntegratedGradients(model, model.transformer.wte), TOK)
    full = lig.attribute(TextTokenInput("a b c", TOK), TARGET, n_steps=4)
    skipped = lig.attribute(inp, TARGET, n_steps=4)
    assert skipped.token_attr.shape == (3, 3)
    torch.testing.assert_close(skipped.token_attr, full.token_attr[:, 1:], atol=1e-4, rtol=1e-3)


def test_no_hooks_left_and_no_param_grads():
    model = gpt2()
    lig = LLMGradientAttribution(LayerIntegratedGradients(model, model.transformer.wte), TOK)
    lig.attribute(TextTokenInput("a b", TOK), TARGET, n_steps=3)
    assert not model.transformer.wte._forward_hooks and all(p.grad is None for p in model.parameters())


def test_only_a_layer_with_one_output_tensor_takes_the_shared_forward():
    model = gpt2()
    inp = TextTokenInput("a b c", TOK)
    llm_attr = LLMGradientAttribution(LayerGradientXActivation(model, model.transformer.wte), TOK)
    forward = functools.partial(llm_attr.attr_method.forward_func, call=_Call(inp, TARGET), cur_target_idx=None)
    ones = torch.ones(1, 4)
    assert layer_output_is_a_tensor(forward, model.transformer.wte, ones)
    attention = model.transformer.h[0].attn  # outputs (output, weights): left to the wrapped method
    assert not layer_output_is_a_tensor(forward, attention, ones)
