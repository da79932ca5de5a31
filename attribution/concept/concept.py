"""Concepts (Captum's ``Concept``): a named set of examples, and the interface of concept interpreters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn


class Concept:
    """A human-friendly idea ("striped", "ceo") given by examples of it.

    Args:
        id: the concept's unique integer id; it labels the concept's examples when CAVs are trained and
            names the CAV files (``"0-1-layer.pkl"``).
        name: the concept's name.
        data_iter: the examples: a ``DataLoader`` or any iterable of batches (a tensor, or a tuple of
            tensors for a model with several inputs); ``[examples]`` serves a batch already in memory.
            None for a concept read back from a CAV file.

    Example:
        >>> import torch
        >>> from attribution.concept import Concept
        >>> stripes = Concept(0, "striped", [torch.rand(8, 3, 32, 32)])
        >>> stripes, stripes.identifier
        (Concept(0, 'striped'), 'striped-0')
    """

    def __init__(self, id: int, name: str, data_iter: Iterable[Any] | None) -> None:
        self.id = id
        self.name = name
        self.data_iter = data_iter

    @property
    def identifier(self) -> str:
        """``"<name>-<id>"``: the folder of the concept's activations (Captum's layout)."""
        return f"{self.name}-{self.id}"

    def __repr__(self) -> str:
        return f"Concept({self.id!r}, {self.name!r})"


class ConceptInterpreter:
    """Base of concept-based interpreters (Captum's name): they hold a model and implement ``interpret``.

    Args:
        model: the model to interpret.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def interpret(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Concept-based scores for ``inputs`` (each interpreter documents its own arguments)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement interpret")


def concepts_to_str(concepts: Sequence[Concept]) -> str:
    """The key of an experimental set: its concept ids joined by hyphens (``"0-1"``), as in Captum."""
    return "-".join(str(c.id) for c in concepts)
