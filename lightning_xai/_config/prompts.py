"""The language-model monitor's configuration: its probe of ``(prompt, target)`` pairs (with an optional mask
of the prompt tokens a check watches), checked once at construction, and its closed choices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lightning.fabric.utilities.exceptions import MisconfigurationException

PromptMethod = Literal["feature_ablation", "layer_integrated_gradients"]
"""``LanguageModelMonitor(method=...)``: ``LLMAttribution(FeatureAblation)``, one forward per prompt token, or
``LLMGradientAttribution(LayerIntegratedGradients)`` on the input embeddings."""
PromptStatistic = Literal["mask_share"]
"""``PromptAttributionCheck(metric=...)``: what the check reads from the monitor's points."""


@dataclass(frozen=True)
class PromptPair:
    """One probe entry: the prompt, the continuation whose log-probability is explained, the watched tokens."""

    prompt: str
    target: str
    mask: tuple[bool, ...] | tuple[str, ...] | None = None


def prompt_pairs(probe: Any, owner: str) -> list[PromptPair]:
    """``probe`` as a list of :class:`PromptPair`: each entry ``(prompt, target)`` or ``(prompt, target, mask)``.

    Raises:
        MisconfigurationException: naming the entry, what was expected and what was given.
    """
    expected = "a non-empty list of (prompt, target) or (prompt, target, mask) tuples of strings"
    if isinstance(probe, (str, bytes)) or not isinstance(probe, Sequence) or not probe:
        raise MisconfigurationException(f"{owner}: probe must be {expected}, got {probe!r}")
    pairs = []
    for i, entry in enumerate(probe):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) not in (2, 3):
            raise MisconfigurationException(f"{owner}: probe[{i}] must be (prompt, target[, mask]), got {entry!r}")
        prompt, target = entry[0], entry[1]
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(target, str) or not target.strip():
            raise MisconfigurationException(
                f"{owner}: probe[{i}] must hold a non-empty prompt and target string, got {prompt!r}, {target!r}"
            )
        pairs.append(PromptPair(prompt, target, _mask(entry[2], i, owner) if len(entry) == 3 else None))
    return pairs


def _mask(mask: Any, index: int, owner: str) -> tuple[bool, ...] | tuple[str, ...] | None:
    if mask is None:
        return None
    if isinstance(mask, str):
        return (mask,)
    if isinstance(mask, Sequence) and mask and all(isinstance(m, str) for m in mask):
        return tuple(mask)
    if isinstance(mask, Sequence) and mask and all(isinstance(m, bool) or m in (0, 1) for m in mask):
        return tuple(bool(m) for m in mask)
    raise MisconfigurationException(
        f"{owner}: probe[{index}]'s mask must be None, a token string, a list of token strings or one 0/1 flag per "
        f"prompt token, got {mask!r}"
    )
