"""The result of an LLM attribution (Captum's ``LLMAttributionResult``) and its two plots."""

from __future__ import annotations

from textwrap import shorten
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from attribution._internal.checks import ArgumentError, describe

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_COLORS = ("#93003a", "#d0365b", "#f57789", "#ffbdc3", "#ffffff", "#a4d6e1", "#73a3ca", "#4772b3", "#00429d")
"""A diverging palette: negative red, zero white, positive blue."""


def _as_tensor(value: Any) -> Tensor:
    return value if isinstance(value, Tensor) else torch.tensor(value)


def _label(token: str) -> str:
    return shorten(repr(token)[1:-1], width=50, placeholder="...")


class LLMAttributionResult:
    """Attributions of a target response to the features of a prompt.

    Args:
        input_tokens: the names of the prompt's interpretable features.
        output_tokens: the target's tokens.
        seq_attr: ``(n_input,)`` attribution to the whole target.
        token_attr: ``(n_output, n_input)`` attribution to each target token, or None.
        output_probs: ``(n_output,)`` target token probabilities, or None.

    Raises:
        ArgumentError: a tensor whose shape does not match the tokens.

    Example:
        >>> from attribution import LLMAttributionResult
        >>> res = LLMAttributionResult(input_tokens=["a", "b"], output_tokens=["c"], seq_attr=[0.5, -0.25],
        ...                            token_attr=[[0.5, -0.25]])
        >>> res.seq_attr_dict
        {'a': 0.5, 'b': -0.25}
    """

    def __init__(
        self,
        *,
        input_tokens: list[str],
        output_tokens: list[str],
        seq_attr: Any,
        token_attr: Any = None,
        output_probs: Any = None,
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.seq_attr = seq_attr
        self.token_attr = token_attr
        self.output_probs = output_probs

    @property
    def seq_attr(self) -> Tensor:
        """``(n_input,)`` attribution to the whole target."""
        return self._seq_attr

    @seq_attr.setter
    def seq_attr(self, value: Any) -> None:
        seq = _as_tensor(value)
        if seq.dim() != 1 or seq.shape[0] != len(self.input_tokens):
            raise ArgumentError(f"seq_attr: expected shape ({len(self.input_tokens)},), got {describe(seq)}")
        self._seq_attr = seq

    @property
    def token_attr(self) -> Tensor | None:
        """``(n_output, n_input)`` attribution to each target token, or None."""
        return self._token_attr

    @token_attr.setter
    def token_attr(self, value: Any) -> None:
        token = None if value is None else _as_tensor(value)
        expected = (len(self.output_tokens), len(self.input_tokens))
        if token is not None and tuple(token.shape) != expected:
            raise ArgumentError(f"token_attr: expected shape {expected}, got {describe(token)}")
        self._token_attr = token

    @property
    def output_probs(self) -> Tensor | None:
        """``(n_output,)`` probabilities of the target tokens, or None."""
        return self._output_probs

    @output_probs.setter
    def output_probs(self, value: Any) -> None:
        probs = None if value is None else _as_tensor(value)
        if probs is not None and tuple(probs.shape) != (len(self.output_tokens),):
            raise ArgumentError(f"output_probs: expected shape ({len(self.output_tokens)},), got {describe(probs)}")
        self._output_probs = probs

    @property
    def seq_attr_dict(self) -> dict[str, float]:
        """``{input token: attribution}`` (a repeated token keeps its last value)."""
        return dict(zip(self.input_tokens, self.seq_attr.cpu().tolist()))

    def plot_token_attr(self, show: bool = False) -> tuple[Figure, Axes] | None:
        """A heat map of ``token_attr``: target tokens as rows, prompt features as columns, zero in white.

        Args:
            show: show the figure (and return None) instead of returning ``(figure, axes)``.

        Returns:
            ``(figure, axes)``, or None with ``show=True``.

        Raises:
            ArgumentError: there is no token attribution (Lime, KernelShap): use ``plot_seq_attr``.
        """
        if self.token_attr is None:
            raise ArgumentError(
                "token_attr: is None (the method gives no per-token attribution); use plot_seq_attr instead"
            )
        import matplotlib.pyplot as plt
        from matplotlib.colors import LinearSegmentedColormap

        data = self.token_attr.detach().cpu().float().numpy()
        bound = float(abs(data).max()) or 1.0
        fig, ax = plt.subplots()
        ax.grid(False)
        fig.set_size_inches(max(data.shape[1] * 1.3, 6.4), max(data.shape[0] / 2.5, 4.8))
        cmap = LinearSegmentedColormap.from_list("attribution", list(_COLORS))
        im = ax.imshow(data, vmin=-bound, vmax=bound, cmap=cmap, aspect="auto")
        fig.set_facecolor("white")
        cbar = fig.colorbar(im, ax=ax)
        cbar.ax.set_ylabel("Token Attribution", rotation=-90, va="bottom")
        ax.set_xticks(range(data.shape[1]), labels=[_label(t) for t in self.input_tokens])
        ax.set_yticks(range(data.shape[0]), labels=[repr(t)[1:-1] for t in self.output_tokens])
        ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
        plt.setp(ax.get_xticklabels(), rotation=-30, ha="right", rotation_mode="anchor")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                shade = float(im.norm(float(data[i, j])))  # type: ignore[arg-type]
                color = "black" if 0.2 < shade < 0.8 else "white"
                ax.text(j, i, f"{data[i, j]:.4f}", ha="center", va="center", color=color)
        if show:
            plt.show()
            return None
        return fig, ax

    def plot_seq_attr(self, show: bool = False) -> tuple[Figure, Axes] | None:
        """A bar chart of ``seq_attr`` over the prompt features (positive blue, negative red).

        Args:
            show: show the figure (and return None) instead of returning ``(figure, axes)``.

        Returns:
            ``(figure, axes)``, or None with ``show=True``.
        """
        import matplotlib.pyplot as plt

        data = self.seq_attr.detach().cpu().float().numpy()
        fig, ax = plt.subplots()
        fig.set_size_inches(max(data.shape[0] / 2, 6.4), max(data.shape[0] / 4, 4.8))
        ax.set_xticks(range(data.shape[0]), labels=[_label(t) for t in self.input_tokens])
        ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
        plt.setp(ax.get_xticklabels(), rotation=-30, ha="right", rotation_mode="anchor")
        fig.set_facecolor("white")
        positions = range(data.shape[0])
        ax.bar(positions, data.clip(min=0), align="center", color="#4772b3")
        ax.bar(positions, data.clip(max=0), align="center", color="#d0365b")
        ax.set_ylabel("Sequence Attribution", rotation=90, va="bottom")
        if show:
            plt.show()
            return None
        return fig, ax
