"""LLM attribution with perturbation methods (Captum's ``LLMAttribution``, ``RemoteLLMAttribution``).

The wrapped method (FeatureAblation, ShapleyValueSampling, ShapleyValues, Lime, KernelShap) perturbs the
interpretable representation of a prompt; the forward it sees maps a batch of perturbed representations
to the log-probabilities (or probabilities) of the target tokens: one column for the whole target, then one
per token for the methods that attribute each output separately.  For causal LMs every perturbed prompt
costs one batched forward over the tokens after the prefix it shares with the prompt (see
``attribution.llm._log_probs``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice, check_int, describe
from attribution.llm._log_probs import PromptCache, is_causal_lm, stepwise_log_probs, teacher_forced_log_probs
from attribution.llm._tokens import pretty_tokens, target_tokens
from attribution.llm.interpretable_input import InterpretableInput, TextTemplateInput, TextTokenInput
from attribution.llm.result import LLMAttributionResult
from attribution.methods.base import Attribution
from attribution.methods.perturbation import FeatureAblation
from attribution.methods.shapley import ShapleyValues, ShapleyValueSampling
from attribution.methods.surrogate import KernelShap, Lime

InspectForward = Callable[[str, str, list[float]], None]
"""Called per evaluated prompt with ``(prompt, response, probabilities)``."""


class BaseLLMAttribution(Attribution):
    """What the LLM attribution classes share: the wrapped method, the tokenizer, the model and its device.

    Args:
        attr_method: an instance of one of ``SUPPORTED_METHODS`` built on the language model.
        tokenizer: the model's tokenizer.
        causal: whether the model is a causal LM (logits at a position read no later token); None: a
            Hugging Face model that can generate and is not an encoder-decoder counts as causal.

    Raises:
        ArgumentTypeError: an unsupported method.
    """

    SUPPORTED_METHODS: ClassVar[tuple[type, ...]] = ()
    SUPPORTED_INPUTS: ClassVar[tuple[type, ...]] = ()

    def __init__(self, attr_method: Attribution, tokenizer: Any, causal: bool | None = None) -> None:
        if not isinstance(attr_method, self.SUPPORTED_METHODS):
            names = [m.__name__ for m in self.SUPPORTED_METHODS]
            raise ArgumentTypeError(f"attr_method: expected an instance of one of {names}, got {describe(attr_method)}")
        super().__init__(attr_method.forward_func)
        self.model: Any = self.forward_func
        self.tokenizer = tokenizer
        device = getattr(self.model, "device", None)
        if device is None and isinstance(self.model, nn.Module):
            device = next(self.model.parameters()).device
        self.device = torch.device(device if device is not None else "cpu")
        self.causal = is_causal_lm(self.model) if causal is None else bool(causal)

    def _check_input(self, inp: Any) -> None:
        if not isinstance(inp, self.SUPPORTED_INPUTS):
            names = [c.__name__ for c in self.SUPPORTED_INPUTS]
            raise ArgumentTypeError(f"inp: {type(self).__name__} expects one of {names}, got {describe(inp)}")

    def _format_model_input(self, model_input: str | Tensor) -> Tensor:
        """Token ids ``(N, L)`` on the model's device from a string or ids."""
        if isinstance(model_input, str):
            return torch.as_tensor(self.tokenizer.encode(model_input, return_tensors="pt")).to(self.device)
        return model_input.to(self.device)

    def _generate(self, inp: InterpretableInput, gen_args: dict[str, Any]) -> Tensor:
        generate = getattr(self.model, "generate", None)
        if not callable(generate):
            raise ArgumentError("target: None needs a model with generate(); give the target")
        ids = self._format_model_input(inp.to_model_input())
        return torch.as_tensor(generate(ids, **gen_args))[0, ids.shape[1] :]

    def _get_target_tokens(
        self,
        inp: InterpretableInput,
        target: str | Tensor | None = None,
        skip_tokens: list[int] | list[str] | None = None,
        gen_args: dict[str, Any] | None = None,
    ) -> Tensor:
        self._check_input(inp)
        return target_tokens(target, self.tokenizer, skip_tokens, gen_args, lambda args: self._generate(inp, args))

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        """Not available for LLM attribution.

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError(f"attribute_future is not implemented for {type(self).__name__}")


@dataclass
class _Call:
    """What the perturbation forward needs besides the perturbed representation (one attribute call)."""

    inp: InterpretableInput
    target: Tensor
    cache: PromptCache | None
    inspect: InspectForward | None


class LLMAttribution(BaseLLMAttribution):
    """Attribution of an LLM's response to the features of its prompt with a perturbation method.

    Args:
        attr_method: FeatureAblation, ShapleyValueSampling, ShapleyValues, Lime or KernelShap built on the
            model (a Hugging Face style causal LM, or any model with its ``forward``/``generate`` shape).
            Lime and KernelShap attribute the whole target only (``token_attr`` is None).
        tokenizer: the model's tokenizer.
        attr_target: ``"log_prob"`` or ``"prob"`` of the target.
        causal: see ``BaseLLMAttribution``; causal models are evaluated in one forward per prompt.

    Raises:
        ArgumentTypeError: an unsupported method.
        ArgumentError: an unknown ``attr_target``.

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from attribution import FeatureAblation, LLMAttribution, TextTokenInput
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
        >>> llm_attr = LLMAttribution(FeatureAblation(model), Chars())
        >>> res = llm_attr.attribute(TextTokenInput("abcd", Chars()), target="ef")
        >>> res.seq_attr.shape, res.token_attr.shape, res.output_tokens
        (torch.Size([4]), torch.Size([2, 4]), ['e', 'f'])
    """

    SUPPORTED_METHODS = (FeatureAblation, ShapleyValueSampling, ShapleyValues, Lime, KernelShap)
    SUPPORTED_PER_TOKEN_ATTR_METHODS: ClassVar[tuple[type, ...]] = (
        FeatureAblation,
        ShapleyValueSampling,
        ShapleyValues,
    )
    SUPPORTED_INPUTS = (TextTemplateInput, TextTokenInput)

    def __init__(
        self, attr_method: Attribution, tokenizer: Any, attr_target: str = "log_prob", causal: bool | None = None
    ) -> None:
        super().__init__(attr_method, tokenizer, causal)
        check_choice(attr_target, "attr_target", ("log_prob", "prob"))
        self.attr_target = attr_target
        self.include_per_token_attr = isinstance(attr_method, self.SUPPORTED_PER_TOKEN_ATTR_METHODS)
        self.attr_method = copy.copy(attr_method)
        self.attr_method.forward_func = self._forward_func

    def _prompt_ids(self, inp: InterpretableInput, perturbed: Tensor) -> list[Tensor]:
        """Token ids ``(1, L)`` of each perturbed prompt (a row of ``perturbed``)."""
        if isinstance(inp, TextTokenInput):
            return list(torch.split(self._format_model_input(inp.to_model_input(perturbed)), 1))
        rows = perturbed.reshape(-1, inp.n_itp_features)
        return [self._format_model_input(inp.to_model_input(row.unsqueeze(0))) for row in rows]

    def _log_probs(self, ids: Tensor, call: _Call) -> Tensor:
        if not self.causal:
            return stepwise_log_probs(self.model, ids, call.target)
        return teacher_forced_log_probs(self.model, ids, call.target, call.cache)

    def _forward_func(self, perturbed_tensor: Tensor, call: _Call) -> Tensor:
        """``(P, 1 + T)`` (whole target, then each token) or ``(P,)`` log-probabilities (or probabilities)
        of the target after each of the ``P`` perturbed prompts."""
        prompts = self._prompt_ids(call.inp, perturbed_tensor)
        token_lp = torch.empty(len(prompts), call.target.shape[0], device=self.device)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(prompts):
            by_length.setdefault(ids.shape[1], []).append(i)
        for rows in by_length.values():
            ids = torch.cat([prompts[i] for i in rows])
            token_lp[torch.tensor(rows, device=self.device)] = self._log_probs(ids, call).to(self.device)
        total = token_lp.sum(dim=1, keepdim=True)
        out = torch.cat([total, token_lp], dim=1) if self.include_per_token_attr else total.squeeze(1)
        if call.inspect is not None:
            response = self.tokenizer.decode(call.target)
            for ids, row in zip(prompts, out.exp()):
                call.inspect(self.tokenizer.decode(ids[0]), response, row.reshape(-1).tolist())
        return out.exp() if self.attr_target == "prob" else out

    def _cache(self, inp: InterpretableInput, use_cached_outputs: bool) -> PromptCache | None:
        if not (use_cached_outputs and self.causal and isinstance(self.model, nn.Module)):
            return None
        return PromptCache(self.model, self._format_model_input(inp.to_model_input())[0])

    def attribute(
        self,
        inp: InterpretableInput,
        target: str | Tensor | None = None,
        skip_tokens: list[int] | list[str] | None = None,
        num_trials: int = 1,
        gen_args: dict[str, Any] | None = None,
        use_cached_outputs: bool = True,
        _inspect_forward: InspectForward | None = None,
        **kwargs: Any,
    ) -> LLMAttributionResult:
        """Attribute the target's log-probability (or probability) to the prompt's features.

        Args:
            inp: the prompt, a ``TextTemplateInput`` or ``TextTokenInput``.
            target: the response (string or token ids); None generates it with ``gen_args``.
            skip_tokens: token ids or strings left out of the target (e.g. a start token).
            num_trials: the method runs this many times and the attributions are averaged.
            gen_args: options of ``model.generate`` when ``target`` is None (greedy, 25 new tokens).
            use_cached_outputs: reuse the keys and values of the prompt prefix a perturbation keeps (causal
                models with a readable cache); the results are the same either way.
            _inspect_forward: called with ``(prompt, response, probabilities)`` for every evaluated prompt.
            **kwargs: passed to the wrapped method's ``attribute`` (``n_samples``, ...).

        Returns:
            The result: ``seq_attr`` ``(n_features,)``, ``token_attr`` ``(T, n_features)`` (None for Lime and
            KernelShap), the feature names and the target tokens.

        Raises:
            ArgumentTypeError: an unsupported input or target type.
            ArgumentError: ``gen_args`` with a target, an empty target, ``num_trials`` below 1.
        """
        check_int(num_trials, "num_trials")
        tokens = self._get_target_tokens(inp, target, skip_tokens, gen_args).to(self.device)
        rows = 1 + tokens.shape[0] if self.include_per_token_attr else 1
        attr = torch.zeros(rows, inp.n_itp_features, device=self.device)
        for _ in range(num_trials):
            call = _Call(inp, tokens, self._cache(inp, use_cached_outputs), _inspect_forward)
            cur = self.attr_method.attribute(inp.to_tensor().to(self.device), additional_forward_args=(call,), **kwargs)
            attr += torch.as_tensor(cur).reshape(attr.shape).to(attr)
        attr = inp.format_attr(attr / num_trials)
        return LLMAttributionResult(
            seq_attr=attr[0],
            token_attr=attr[1:] if self.include_per_token_attr else None,
            input_tokens=inp.values,
            output_tokens=pretty_tokens(tokens, self.tokenizer),
        )


class _PlaceholderModel:
    """A stand-in model for ``RemoteLLMAttribution``: the method needs a callable with a device."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        return 0


class RemoteLLMAttribution(LLMAttribution):
    """LLM attribution for a model served remotely that returns log-probabilities (Captum's class).

    Args:
        attr_method: a supported perturbation method built on ``RemoteLLMAttribution.placeholder_model``.
        tokenizer: the served model's tokenizer.
        provider: an object with ``get_logprobs(input_prompt, target_str, tokenizer)`` returning one
            log-probability per target token, and optionally ``generate(prompt, **gen_args)``.
        attr_target: ``"log_prob"`` or ``"prob"``.

    Raises:
        ArgumentTypeError: an unsupported method.
        ArgumentError: an unknown ``attr_target``.
    """

    placeholder_model = _PlaceholderModel()

    def __init__(self, attr_method: Attribution, tokenizer: Any, provider: Any, attr_target: str = "log_prob") -> None:
        super().__init__(attr_method, tokenizer, attr_target, causal=False)
        self.provider = provider
        self.attr_method.forward_func = self._remote_forward_func

    def _prompt_text(self, model_input: str | Tensor) -> str:
        return self.tokenizer.decode(model_input.reshape(-1)) if isinstance(model_input, Tensor) else model_input

    def _generate(self, inp: InterpretableInput, gen_args: dict[str, Any]) -> Tensor:
        generate = getattr(self.provider, "generate", None)
        if not callable(generate):
            raise ArgumentError("target: None needs a provider with generate(); give the target")
        text = generate(self._prompt_text(inp.to_model_input()), **gen_args)
        return torch.as_tensor(self.tokenizer.encode(text, return_tensors="pt", add_special_tokens=False))[0]

    def _remote_forward_func(self, perturbed_tensor: Tensor, call: _Call) -> Tensor:
        """As ``LLMAttribution._forward_func``, one provider request per perturbed prompt."""
        rows = perturbed_tensor.reshape(-1, call.inp.n_itp_features)
        response = self.tokenizer.decode(call.target)
        outputs = []
        for row in rows:
            prompt = self._prompt_text(call.inp.to_model_input(row.unsqueeze(0)))
            log_probs = list(
                self.provider.get_logprobs(input_prompt=prompt, target_str=response, tokenizer=self.tokenizer)
            )
            if len(log_probs) != call.target.shape[0]:
                raise ArgumentError(
                    f"provider: returned {len(log_probs)} token log-probabilities for a target of "
                    f"{call.target.shape[0]} tokens"
                )
            token_lp = torch.tensor(log_probs, dtype=torch.float32)
            out = (
                torch.cat([token_lp.sum(0, keepdim=True), token_lp]) if self.include_per_token_attr else token_lp.sum()
            )
            if call.inspect is not None:
                call.inspect(prompt, response, out.exp().reshape(-1).tolist())
            outputs.append(out)
        stacked = torch.stack(outputs)
        return stacked.exp() if self.attr_target == "prob" else stacked
