"""LLM attribution (Captum's LLM classes in ``captum.attr``, with Captum's names and call signatures).

- ``LLMAttribution``: a perturbation method (FeatureAblation, ShapleyValueSampling, ShapleyValues,
  Lime, KernelShap) over the features of a prompt, explaining the log-probability of a target response;
- ``LLMGradientAttribution``: a layer gradient method (LayerIntegratedGradients,
  LayerGradientXActivation, LayerGradientShap) over the prompt's tokens, per target token;
- ``RemoteLLMAttribution``: perturbation attribution of a served model through a provider's
  log-probabilities;
- ``TextTemplateInput``, ``TextTokenInput``: interpretable prompts (``InterpretableInput``);
- ``LLMAttributionResult``: the attributions, with ``plot_token_attr`` and ``plot_seq_attr``.

Causal LMs are evaluated with one forward per perturbed prompt over prompt and target, reusing the cached
keys and values of the prefix a perturbation leaves unchanged; see ``docs/llm.md``.
"""

from attribution.llm.gradient import LLMGradientAttribution
from attribution.llm.interpretable_input import InterpretableInput, TextTemplateInput, TextTokenInput
from attribution.llm.perturbation import BaseLLMAttribution, LLMAttribution, RemoteLLMAttribution
from attribution.llm.result import LLMAttributionResult

__all__ = [
    "BaseLLMAttribution",
    "InterpretableInput",
    "LLMAttribution",
    "LLMAttributionResult",
    "LLMGradientAttribution",
    "RemoteLLMAttribution",
    "TextTemplateInput",
    "TextTokenInput",
]
