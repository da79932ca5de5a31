"""Interpretable inputs (Captum's ``InterpretableInput``): what a perturbation switches on and off in a prompt.

An interpretable input maps a binary "presence" tensor of shape ``(1, n_itp_features)`` to what the model
reads: ``TextTemplateInput`` fills a template with segment values or their baselines (a string),
``TextTokenInput`` replaces absent tokens by a baseline token id (a tensor of token ids).  Both keep
Captum's constructor arguments and attribute names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
from torch import Tensor

from attribution._internal.checks import ArgumentError, ArgumentTypeError, describe

Segments = Union[list[str], dict[str, str]]
"""Segment values (or baselines) of a template: a list, or a dict keyed by the template's field names."""


def _token_ids(tokenizer: Any, tokens: Sequence[int] | Sequence[str] | None, name: str) -> list[int]:
    """Token ids from ids or token strings (converted with the tokenizer)."""
    if not tokens:
        return []
    if all(isinstance(t, str) for t in tokens):
        return [int(i) for i in tokenizer.convert_tokens_to_ids(list(tokens))]
    if all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        return [int(t) for t in tokens]
    raise ArgumentTypeError(f"{name}: expected a list of token ids or of token strings, got {tokens!r}")


class InterpretableInput(ABC):
    """An input whose interpretable features are switched on (1) and off (0) by perturbation methods.

    ``to_tensor()`` is the all-present representation ``(1, n_itp_features)``; ``to_model_input(t)`` is what
    the model reads for the (perturbed) representation ``t``; ``format_attr`` maps attributions of the
    interpretable features back to the input's own features.  ``values`` names the features.
    """

    n_itp_features: int
    values: list[str]

    @abstractmethod
    def to_tensor(self) -> Tensor:
        """The interpretable representation, all features present: ``(1, n_itp_features)``."""

    @abstractmethod
    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> str | Tensor:
        """The model input for ``perturbed_tensor`` (the original input when None)."""

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        """Attributions of the interpretable features mapped to the input's features (here unchanged)."""
        return itp_attr


class TextTemplateInput(InterpretableInput):
    """Text whose features are segments filled into a template; an absent segment takes its baseline.

    Args:
        template: a ``str.format`` template, or a callable taking the segments (positionally, or by name when
            ``values`` is a dict) and returning the text.
        values: the segments, a list or a dict of the template's fields.
        baselines: the segments' replacements when absent, in the same form as ``values``, or a callable
            returning them; None: the empty string.
        mask: a group id per segment (same form as ``values``); segments of a group form one feature.

    Raises:
        ArgumentTypeError: a value, baseline, mask or template of the wrong type.
        ArgumentError: baselines or mask of another length than ``values``.

    Example:
        >>> import torch
        >>> from attribution import TextTemplateInput
        >>> inp = TextTemplateInput("{} feels {} right now", values=["He", "sad"], baselines=["It", "fine"])
        >>> inp.to_tensor()
        tensor([[1., 1.]])
        >>> inp.to_model_input(torch.tensor([[0, 1]]))
        'It feels sad right now'
    """

    def __init__(
        self,
        template: str | Callable[..., str],
        values: Segments,
        baselines: Segments | Callable[[], Segments] | None = None,
        mask: list[int] | dict[str, int] | None = None,
    ) -> None:
        if isinstance(values, dict):
            self.dict_keys = list(values)
            self.values = [values[k] for k in self.dict_keys]
        elif isinstance(values, list):
            self.dict_keys = []
            self.values = list(values)
        else:
            raise ArgumentTypeError(f"values: expected a list or a dict of strings, got {describe(values)}")
        self.n_features = len(self.values)
        if baselines is None:
            baselines = [""] * self.n_features
        elif not callable(baselines):
            baselines = self._as_list(baselines, "baselines")
        self.baselines: list[str] | Callable[[], Segments] = baselines
        self.mask = mask
        if mask is None:
            self.formatted_mask = list(range(self.n_features))
        else:
            raw = self._as_list(mask, "mask")
            ids = {mid: i for i, mid in enumerate(dict.fromkeys(sorted(set(raw))))}
            self.formatted_mask = [ids[mid] for mid in raw]
        self.n_itp_features = len(set(self.formatted_mask))
        if isinstance(template, str):
            self.format_fn: Callable[..., str] = template.format
        elif callable(template):
            self.format_fn = template
        else:
            raise ArgumentTypeError(f"template: expected a format string or a callable, got {describe(template)}")
        self.template = template

    def _as_list(self, given: Any, name: str) -> list[Any]:
        """``given`` in the order of ``values`` (a dict when ``values`` is a dict, else a list)."""
        if self.dict_keys:
            if not isinstance(given, dict):
                raise ArgumentTypeError(f"{name}: values is a dict, so expected a dict, got {describe(given)}")
            missing = [k for k in self.dict_keys if k not in given]
            if missing:
                raise ArgumentError(f"{name}: expected an entry for every key of values, missing {missing}")
            return [given[k] for k in self.dict_keys]
        if not isinstance(given, list):
            raise ArgumentTypeError(f"{name}: values is a list, so expected a list, got {describe(given)}")
        if len(given) != self.n_features:
            raise ArgumentError(f"{name}: expected {self.n_features} entries (one per value), got {len(given)}")
        return list(given)

    def to_tensor(self) -> Tensor:
        """``(1, n_itp_features)`` ones."""
        return torch.ones(1, self.n_itp_features)

    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> str:
        """The filled template; the segments of features that are 0 in ``perturbed_tensor[0]`` take their
        baselines."""
        values = list(self.values)
        if perturbed_tensor is not None:
            baselines = self._as_list(self.baselines(), "baselines") if callable(self.baselines) else self.baselines
            present = perturbed_tensor.reshape(-1, self.n_itp_features)[0].tolist()
            values = [v if present[g] else b for v, b, g in zip(values, baselines, self.formatted_mask)]
        if self.dict_keys:
            return self.format_fn(**dict(zip(self.dict_keys, values)))
        return self.format_fn(*values)

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        """With a mask, every segment gets the attribution of its group; else unchanged."""
        if self.mask is None:
            return itp_attr
        index = torch.tensor(self.formatted_mask, device=itp_attr.device)
        return itp_attr.index_select(-1, index)


class TextTokenInput(InterpretableInput):
    """Text whose features are its tokens; an absent token is replaced by a baseline token.

    Args:
        text: the prompt.
        tokenizer: a Hugging Face style tokenizer (``encode``, ``convert_ids_to_tokens``,
            ``convert_tokens_to_ids``).
        baselines: the replacement token, an id or a token string (default 0, often the unknown token).
        skip_tokens: token ids or strings that are not features (kept as they are, e.g. a start token).

    Raises:
        ArgumentTypeError: ``baselines`` or ``skip_tokens`` of the wrong type.
        ArgumentError: every token is skipped.
    """

    def __init__(
        self,
        text: str,
        tokenizer: Any,
        baselines: int | str = 0,
        skip_tokens: list[int] | list[str] | None = None,
    ) -> None:
        self.inp_tensor: Tensor = tokenizer.encode(text, return_tensors="pt")
        skip = _token_ids(tokenizer, skip_tokens, "skip_tokens")
        self.skip_tokens = skip_tokens
        self.itp_mask: Tensor | None = None
        self.itp_tensor = self.inp_tensor
        if skip:
            self.itp_mask = ~torch.isin(self.inp_tensor, torch.tensor(skip, dtype=self.inp_tensor.dtype))
            if not bool(self.itp_mask.any()):
                raise ArgumentError(f"skip_tokens: every token of the text is skipped ({skip_tokens!r})")
            self.itp_tensor = self.inp_tensor[self.itp_mask].unsqueeze(0)
        self.values = list(tokenizer.convert_ids_to_tokens(self.itp_tensor[0].tolist()))
        self.tokenizer = tokenizer
        self.n_itp_features = len(self.values)
        if isinstance(baselines, bool) or not isinstance(baselines, (int, str)):
            raise ArgumentTypeError(f"baselines: expected a token id or a token string, got {describe(baselines)}")
        self.baselines: int = (
            baselines if isinstance(baselines, int) else int(tokenizer.convert_tokens_to_ids([baselines])[0])
        )

    def to_tensor(self) -> Tensor:
        """``(1, n_itp_features)`` ones."""
        return torch.ones_like(self.itp_tensor)

    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> Tensor:
        """Token ids ``(P, n_tokens)``, one row per row of ``perturbed_tensor``: absent tokens (not 1) are the
        baseline token, skipped tokens stay."""
        if perturbed_tensor is None:
            return self.inp_tensor
        rows = perturbed_tensor.reshape(-1, self.n_itp_features)
        itp = self.itp_tensor.to(rows.device).expand(rows.shape[0], -1)
        itp = torch.where(rows != 1, torch.full_like(itp, self.baselines), itp)
        if self.itp_mask is None:
            return itp
        ids = self.inp_tensor.to(rows.device).repeat(rows.shape[0], 1)
        ids[self.itp_mask.to(rows.device).expand_as(ids)] = itp.reshape(-1)
        return ids
