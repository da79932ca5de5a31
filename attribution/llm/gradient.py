"""LLM attribution with layer gradient methods (Captum's ``LLMGradientAttribution``).

The wrapped method (LayerIntegratedGradients, LayerGradientXActivation, LayerGradientShap, usually on the
embedding layer) explains the log-probability of each target token given the prompt and the target tokens
before it.  Captum runs the method once per target token, each run over ``prompt + target[:k]``.  For a
causal LM one run suffices here: the prompt is repeated once per target token and every copy explains its
own token (``target=k``), all from forwards over ``prompt + target[:-1]`` (teacher forcing).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.checks import ArgumentTypeError, check_choice, check_int, describe
from attribution.llm._gradient import (
    layer_gradient_x_activation_per_target,
    layer_integrated_gradients_per_target,
    layer_output_is_a_tensor,
)
from attribution.llm._log_probs import run_model
from attribution.llm._tokens import pretty_tokens
from attribution.llm.interpretable_input import InterpretableInput, TextTokenInput
from attribution.llm.perturbation import BaseLLMAttribution
from attribution.llm.result import LLMAttributionResult
from attribution.methods.base import Attribution
from attribution.methods.layer.gradient import LayerGradientXActivation
from attribution.methods.layer.path import LayerGradientShap, LayerIntegratedGradients


@dataclass(frozen=True)
class _Call:
    """The prompt and target of one attribute call; not a tensor, so the method passes it unexpanded."""

    inp: InterpretableInput
    target: Tensor


INTEGRATION_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def _baseline(baselines: Any, indicator: Tensor) -> Tensor | None:
    """The ``(1, n_features)`` baseline indicator from LayerIntegratedGradients' ``baselines`` (None: zeros);
    None when it is not one baseline for the one prompt."""
    if isinstance(baselines, tuple) and len(baselines) == 1:
        baselines = baselines[0]
    if baselines is None:
        return torch.zeros_like(indicator)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return torch.full_like(indicator, float(baselines))
    if isinstance(baselines, Tensor) and baselines.numel() == indicator.numel():
        return baselines.reshape(indicator.shape).to(indicator)
    return None


class GradientForwardFunc(nn.Module):
    """The forward the wrapped gradient method sees: presence indicators ``(N, n_features)`` of the prompt's
    tokens to target log-probabilities.

    With ``cur_target_idx`` an int k: ``(N,)`` log p(target[k] | prompt, target[:k]) from a forward over
    ``prompt + target[:k]``; with None (causal models): ``(N, T)`` for every target token at once.
    """

    def __init__(self, attr: LLMGradientAttribution) -> None:
        super().__init__()
        self.attr = attr
        self.model: Any = attr.model

    def forward(self, perturbed_tensor: Tensor, call: _Call, cur_target_idx: int | None) -> Tensor:
        ids = self.attr._format_model_input(call.inp.to_model_input(perturbed_tensor))
        n, length = ids.shape
        target = call.target.to(ids.device)
        known = target[:-1] if cur_target_idx is None else target[:cur_target_idx]
        full = torch.cat([ids, known.unsqueeze(0).expand(n, -1)], dim=1)
        logits = run_model(self.model, full, full.shape[1] - length + 1)
        if cur_target_idx is not None:
            return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target[cur_target_idx]]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        return log_probs.gather(-1, target.view(1, -1, 1).expand(n, -1, 1)).squeeze(-1)


class LLMGradientAttribution(BaseLLMAttribution):
    """Attribution of an LLM's response to the tokens of its prompt with a layer gradient method.

    Args:
        attr_method: LayerIntegratedGradients, LayerGradientXActivation or LayerGradientShap built on the
            model and a layer whose output has the prompt's tokens in dim 1 (the embedding layer).
        tokenizer: the model's tokenizer.
        causal: see ``BaseLLMAttribution``; causal models need one run of the method, not one per
            target token.

    Raises:
        ArgumentTypeError: an unsupported method.

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from attribution import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput
        >>> class Chars:  # a character tokenizer
        ...     def encode(self, text, return_tensors=None, add_special_tokens=True):
        ...         ids = [ord(c) - 97 for c in text]
        ...         return torch.tensor([ids]) if return_tensors else ids
        ...     def convert_ids_to_tokens(self, ids):
        ...         return [chr(i + 97) for i in ids]
        ...     def decode(self, ids):
        ...         return "".join(chr(int(i) + 97) for i in ids.reshape(-1))
        >>> _ = torch.manual_seed(0)
        >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=26, n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
        >>> lig = LayerIntegratedGradients(model, model.transformer.wte)
        >>> llm_attr = LLMGradientAttribution(lig, Chars())
        >>> res = llm_attr.attribute(TextTokenInput("abcd", Chars()), target="ef", n_steps=8)
        >>> res.token_attr.shape
        torch.Size([2, 4])
    """

    SUPPORTED_METHODS = (LayerGradientShap, LayerGradientXActivation, LayerIntegratedGradients)
    SUPPORTED_INPUTS = (TextTokenInput,)

    def __init__(self, attr_method: Attribution, tokenizer: Any, causal: bool | None = None) -> None:
        super().__init__(attr_method, tokenizer, causal)
        self.attr_method = copy.copy(attr_method)
        self.attr_method.forward_func = GradientForwardFunc(self)

    def _run(self, inputs: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any], **extra: Any) -> Tensor:
        attr = self.attr_method.attribute(inputs, additional_forward_args=args, **extra, **kwargs)
        if not isinstance(attr, Tensor):
            raise ArgumentTypeError(f"attr_method: expected one layer (a tensor of attributions), got {describe(attr)}")
        return attr.detach()

    def _shared_forward(self, indicator: Tensor, call: _Call, kwargs: dict[str, Any]) -> Tensor | None:
        """Per-target layer attributions ``(T, ...)`` from one forward per path point (LayerIntegratedGradients,
        LayerGradientXActivation on one layer's output); None when the method or its options need the
        method's own loop."""
        method = self.attr_method
        layer = getattr(method, "layer", None)
        if not isinstance(layer, nn.Module) or kwargs.get("attribute_to_layer_input", False):
            return None
        forward = functools.partial(self.attr_method.forward_func, call=call, cur_target_idx=None)
        if not layer_output_is_a_tensor(forward, layer, indicator):
            return None
        if type(method) is LayerGradientXActivation and set(kwargs) <= {"attribute_to_layer_input"}:
            return layer_gradient_x_activation_per_target(
                forward, layer, indicator, multiply_by_inputs=method.multiplies_by_inputs
            )
        options = {"n_steps", "method", "internal_batch_size", "baselines", "attribute_to_layer_input"}
        if type(method) is not LayerIntegratedGradients or not set(kwargs) <= options:
            return None
        baseline = _baseline(kwargs.get("baselines"), indicator)
        if baseline is None:
            return None
        check_int(kwargs.get("n_steps", 50), "n_steps")
        check_choice(kwargs.get("method", "gausslegendre"), "method", INTEGRATION_METHODS)
        check_int(kwargs.get("internal_batch_size"), "internal_batch_size", allow_none=True)
        return layer_integrated_gradients_per_target(
            forward,
            layer,
            indicator,
            baseline,
            n_steps=kwargs.get("n_steps", 50),
            method=kwargs.get("method", "gausslegendre"),
            internal_batch_size=kwargs.get("internal_batch_size"),
            multiply_by_inputs=method.multiplies_by_inputs,
        ).detach()

    def attribute(
        self,
        inp: InterpretableInput,
        target: str | Tensor | None = None,
        skip_tokens: list[int] | list[str] | None = None,
        gen_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LLMAttributionResult:
        """Attribute each target token's log-probability to the prompt's tokens.

        Args:
            inp: the prompt, a ``TextTokenInput``.
            target: the response (string or token ids); None generates it with ``gen_args``.
            skip_tokens: token ids or strings left out of the target.
            gen_args: options of ``model.generate`` when ``target`` is None.
            **kwargs: passed to the wrapped method's ``attribute`` (``n_steps``, ``baselines``, ...).

        Returns:
            The result: ``token_attr`` ``(T, n_features)`` (the layer attribution summed over its last
            dimension) and ``seq_attr``, its sum over the target tokens.

        Raises:
            ArgumentTypeError: an unsupported input or target type.
            ArgumentError: ``gen_args`` with a target, an empty target.
        """
        tokens = self._get_target_tokens(inp, target, skip_tokens, gen_args).to(self.device)
        indicator = inp.to_tensor().to(self.device, torch.float32)  # layer GradientShap interpolates it
        length = inp.to_model_input().shape[-1] if isinstance(inp, TextTokenInput) else indicator.shape[1]
        n_out = tokens.shape[0]
        shared = self._shared_forward(indicator, _Call(inp, tokens), kwargs) if self.causal else None
        if shared is not None:
            per_token = shared[:, :length].reshape(n_out, length, -1).sum(-1)
        elif self.causal:
            rows = indicator.expand(n_out, -1)
            attr = self._run(rows, (_Call(inp, tokens), None), kwargs, target=list(range(n_out)))[:, :length]
            per_token = attr.reshape(n_out, length, -1).sum(-1)
        else:
            runs = [self._run(indicator, (_Call(inp, tokens), k), kwargs)[:, :length] for k in range(n_out)]
            per_token = torch.cat([a.reshape(a.shape[0], length, -1).sum(-1) for a in runs])
        if isinstance(inp, TextTokenInput) and inp.itp_mask is not None:
            per_token = per_token[:, inp.itp_mask[0].to(per_token.device)]
        return LLMAttributionResult(
            seq_attr=per_token.sum(0),
            token_attr=per_token,
            input_tokens=inp.values,
            output_tokens=pretty_tokens(tokens, self.tokenizer),
        )
