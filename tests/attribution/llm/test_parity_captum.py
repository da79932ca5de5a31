"""Our LLM attribution against Captum's on a tiny GPT-2 built from a config (random weights)."""

import pytest
import torch

import attribution
from tests.attribution.llm._models import Chars, gpt2

captum_attr = pytest.importorskip("captum.attr")
pytest.importorskip("transformers")

TOK = Chars()
PROMPT = "a b c d"  # ShapleyValues: Captum runs every order of the features
TARGET = torch.tensor(TOK.encode("g h i", add_special_tokens=False))


@pytest.mark.parametrize("method", ["FeatureAblation", "ShapleyValues"])
@pytest.mark.parametrize("kind", ["tokens", "template"])
def test_perturbation_attribution_as_captum(method, kind):
    model = gpt2(positions=1024)  # Captum's cached evaluation indexes positions past the prompt's

    def run(lib):
        inp = (
            lib.TextTokenInput(PROMPT, TOK, skip_tokens=[0])
            if kind == "tokens"
            else lib.TextTemplateInput("{} b {} d {}", ["a", "c", "e"])
        )
        # Captum's cached evaluation disagrees with its uncached one under transformers 5: compare with the latter.
        return lib.LLMAttribution(getattr(lib, method)(model), TOK).attribute(inp, TARGET, use_cached_outputs=False)

    ours, theirs = run(attribution), run(captum_attr)
    torch.testing.assert_close(ours.token_attr, theirs.token_attr, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.seq_attr, theirs.seq_attr, atol=1e-5, rtol=1e-4)
    assert (ours.input_tokens, ours.output_tokens) == (theirs.input_tokens, theirs.output_tokens)


@pytest.mark.parametrize("method", ["LayerIntegratedGradients", "LayerGradientXActivation"])
def test_gradient_attribution_as_captum(method):
    model = gpt2()

    def run(lib):
        attr = getattr(lib, method)(model, model.transformer.wte)
        kwargs = {"n_steps": 8} if method == "LayerIntegratedGradients" else {}
        return lib.LLMGradientAttribution(attr, TOK).attribute(lib.TextTokenInput(PROMPT, TOK), TARGET, **kwargs)

    ours, theirs = run(attribution), run(captum_attr)
    torch.testing.assert_close(ours.token_attr, theirs.token_attr, atol=1e-6, rtol=1e-4)
    assert ours.output_tokens == theirs.output_tokens == ["g", "h", "i"]
