"""Interpretable inputs, the result and its plots, and the errors bad arguments raise."""

import matplotlib.pyplot as plt
import pytest
import torch

from attribution import (
    ArgumentError,
    ArgumentTypeError,
    FeatureAblation,
    IntegratedGradients,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMAttributionResult,
    LLMGradientAttribution,
    RemoteLLMAttribution,
    TextTemplateInput,
    TextTokenInput,
)
from tests.attribution.llm._models import Chars, LinearLM

TOK = Chars()


def test_template_input_lists_dicts_callables_and_masks():
    inp = TextTemplateInput("{} feels {} now", ["He", "sad"], baselines=["It", "fine"])
    assert inp.to_tensor().tolist() == [[1.0, 1.0]] and inp.to_model_input() == "He feels sad now"
    assert inp.to_model_input(torch.tensor([[0, 1]])) == "It feels sad now"
    named = TextTemplateInput(lambda a, b: f"{a}+{b}", {"a": "x", "b": "y"}, baselines=lambda: {"a": "0", "b": "1"})
    assert named.to_model_input(torch.tensor([[1, 0]])) == "x+1"
    grouped = TextTemplateInput("{} {} {}", ["a", "b", "c"], mask=[5, 2, 5])
    assert grouped.n_itp_features == 2 and grouped.to_model_input(torch.tensor([[1, 0]])) == " b "
    assert grouped.format_attr(torch.tensor([[1.0, 2.0]])).tolist() == [[2.0, 1.0, 2.0]]


def test_token_input_baselines_and_skipped_tokens():
    inp = TextTokenInput("a b c", TOK, baselines="<unk>", skip_tokens=["<s>"])
    assert inp.values == ["a", "b", "c"] and inp.baselines == 1
    ids = inp.to_model_input(torch.tensor([[1, 0, 1], [0, 1, 1]]))
    assert ids.tolist() == [[0, 2, 1, 4], [0, 1, 3, 4]]


def test_result_plots_and_dict(tmp_path):
    res = LLMAttributionResult(
        input_tokens=["a", "b"], output_tokens=["c", "d"], seq_attr=[0.5, -0.5], token_attr=[[0.25, -0.5], [0.25, 0]]
    )
    fig, ax = res.plot_token_attr()
    fig.savefig(tmp_path / "token.png")
    fig, ax = res.plot_seq_attr()
    fig.savefig(tmp_path / "seq.png")
    assert res.seq_attr_dict == {"a": 0.5, "b": -0.5} and len(ax.patches) == 4
    plt.close("all")
    no_tokens = LLMAttributionResult(input_tokens=["a"], output_tokens=["c"], seq_attr=[1.0])
    with pytest.raises(ArgumentError, match="token_attr"):
        no_tokens.plot_token_attr()


class _Provider:
    def __init__(self, model):
        self.model = model

    def get_logprobs(self, input_prompt, target_str, tokenizer):
        return self.model.log_prob(tokenizer.encode(input_prompt), tokenizer.encode(target_str, False)).tolist()


def test_remote_attribution_matches_local_attribution():
    model = LinearLM()
    inp = TextTokenInput("a b c", TOK, baselines=1)
    local = LLMAttribution(FeatureAblation(model), TOK).attribute(inp, "e f", skip_tokens=[0])
    method = FeatureAblation(RemoteLLMAttribution.placeholder_model)
    remote = RemoteLLMAttribution(method, TOK, _Provider(model)).attribute(inp, "e f", skip_tokens=[0])
    torch.testing.assert_close(remote.token_attr, local.token_attr, atol=1e-4, rtol=1e-4)


def _llm():
    return LLMAttribution(FeatureAblation(LinearLM()), TOK)


BAD_CALLS = {
    "unsupported method": (
        lambda: LLMAttribution(IntegratedGradients(LinearLM()), TOK),
        ArgumentTypeError,
        "attr_method",
    ),
    "unknown attr_target": (
        lambda: LLMAttribution(FeatureAblation(LinearLM()), TOK, attr_target="logit"),
        ArgumentError,
        "attr_target",
    ),
    "input not interpretable": (lambda: _llm().attribute("a b", "c"), ArgumentTypeError, "inp"),
    "template input to the gradient class": (
        lambda: LLMGradientAttribution(LayerIntegratedGradients(LinearLM(), "emb"), TOK).attribute(
            TextTemplateInput("{}", ["a"]), "c"
        ),
        ArgumentTypeError,
        "inp",
    ),
    "float target": (lambda: _llm().attribute(TextTokenInput("a", TOK), torch.rand(3)), ArgumentTypeError, "target"),
    "gen_args with a target": (
        lambda: _llm().attribute(TextTokenInput("a", TOK), "c", gen_args={"max_new_tokens": 2}),
        ArgumentError,
        "gen_args",
    ),
    "empty target": (
        lambda: _llm().attribute(TextTokenInput("a", TOK), "c", skip_tokens=[0, 4]),
        ArgumentError,
        "target",
    ),
    "num_trials zero": (
        lambda: _llm().attribute(TextTokenInput("a", TOK), "c", num_trials=0),
        ArgumentError,
        "num_trials",
    ),
    "baselines of another length": (
        lambda: TextTemplateInput("{} {}", ["a", "b"], baselines=["x"]),
        ArgumentError,
        "baselines",
    ),
    "values not a list": (lambda: TextTemplateInput("{}", "a"), ArgumentTypeError, "values"),
    "mask of another form": (lambda: TextTemplateInput("{}", {"a": "x"}, mask=[0]), ArgumentTypeError, "mask"),
    "every token skipped": (lambda: TextTokenInput("a", TOK, skip_tokens=[0, 2]), ArgumentError, "skip_tokens"),
    "seq_attr of another length": (
        lambda: LLMAttributionResult(input_tokens=["a"], output_tokens=["b"], seq_attr=[1.0, 2.0]),
        ArgumentError,
        "seq_attr",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments_name_the_argument(case):
    call, kind, name = BAD_CALLS[case]
    with pytest.raises(kind, match=name):
        call()


def test_attribute_future_is_not_implemented():
    with pytest.raises(NotImplementedError):
        _llm().attribute_future()
