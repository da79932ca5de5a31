"""Attributing to token embeddings, Captum's way: reference token sequences and interpretable embeddings.

Integer token ids have no gradient, so attributions are computed over their embeddings. Two ways:

- :class:`attribution.LayerIntegratedGradients` on the embedding layer (recommended: the model is left as
  it is and takes token ids);
- swap the embedding layer for a pass-through (:func:`configure_interpretable_embedding_layer`), compute the
  embeddings outside the model (:meth:`InterpretableEmbeddingBase.indices_to_embeddings`), attribute to
  them with any primary method, and put the layer back (:func:`remove_interpretable_embedding_layer`).

Both give the same attributions; :class:`TokenReferenceBase` makes the baseline sequence (e.g. all padding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attribution._internal.autograd import resolve_layer
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int


class TokenReferenceBase:
    """Reference (baseline) token sequences made of one token, typically padding.

    Args:
        reference_token_idx: the token's index in the vocabulary.

    Raises:
        ValueError: ``reference_token_idx`` is not an int >= 0.
    """

    def __init__(self, reference_token_idx: int = 0) -> None:
        check_int(reference_token_idx, "reference_token_idx", minimum=0)
        self.reference_token_idx = reference_token_idx

    def generate_reference(self, sequence_length: int, device: torch.device | str | None = None) -> Tensor:
        """A sequence of ``sequence_length`` reference tokens.

        Args:
            sequence_length: the number of tokens.
            device: where to create it.

        Returns:
            An int64 tensor of shape ``(sequence_length,)``; add a batch dimension with ``unsqueeze(0)``.

        Raises:
            ValueError: ``sequence_length`` is not an int >= 0.
        """
        check_int(sequence_length, "sequence_length", minimum=0)
        return torch.full((sequence_length,), self.reference_token_idx, dtype=torch.long, device=device)


class InterpretableEmbeddingBase(nn.Module):
    """A pass-through put in place of an embedding layer: the model then takes embeddings, not ids.

    The original layer stays reachable as :attr:`embedding` (it remains a submodule, so the model's
    parameters are unchanged) and computes the embeddings outside the model with
    :meth:`indices_to_embeddings`.

    Args:
        embedding: the original embedding layer (any module).
        full_name: its dotted name in the model, where :func:`remove_interpretable_embedding_layer` puts it back.

    Attributes:
        embedding: the original embedding layer.
        full_name: its dotted name in the model.
    """

    def __init__(self, embedding: nn.Module, full_name: str) -> None:
        super().__init__()
        self.num_embeddings = getattr(embedding, "num_embeddings", None)
        self.embedding_dim = getattr(embedding, "embedding_dim", None)
        self.embedding = embedding
        self.full_name = full_name

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """Return the precomputed embeddings: the first positional argument, else the first keyword one.

        Raises:
            ValueError: no argument at all.
        """
        if inputs:
            return inputs[0]
        if kwargs:
            return next(iter(kwargs.values()))
        raise ArgumentError(
            f"inputs: the interpretable embedding layer {self.full_name!r} expects the embeddings as its first "
            "argument (positional or keyword), got no argument"
        )

    def indices_to_embeddings(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """The original layer's output for ``inputs`` (token ids and whatever else it takes)."""
        embedded: Tensor = self.embedding(*inputs, **kwargs)
        return embedded


def _submodule(model: nn.Module, name: str) -> nn.Module:
    """The module at dotted ``name``, also where it is shared under several names."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        return resolve_layer(model, name)  # raises, listing close matches


def _parent_and_attribute(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attribute = name.rpartition(".")
    return _submodule(model, parent_name), attribute


def configure_interpretable_embedding_layer(
    model: nn.Module, embedding_layer_name: str = "embedding"
) -> InterpretableEmbeddingBase:
    """Replace ``model``'s embedding layer by an :class:`InterpretableEmbeddingBase`, so that the model
    takes embeddings where it took token ids.  Undo with :func:`remove_interpretable_embedding_layer`.

    Args:
        model: the model; changed in place.
        embedding_layer_name: the layer's dotted name (``"embedding"``, ``"encoder.embed_tokens"``).

    Returns:
        The pass-through now in the model; its :meth:`~InterpretableEmbeddingBase.indices_to_embeddings`
        computes embeddings with the original layer.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or the name is not a string.
        ValueError: no such layer (close matches are listed), or it is already configured.

    Example:
        >>> from collections import OrderedDict
        >>> import torch
        >>> from torch import nn
        >>> from attribution import IntegratedGradients, LayerIntegratedGradients
        >>> from attribution import configure_interpretable_embedding_layer, remove_interpretable_embedding_layer
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(OrderedDict(embedding=nn.Embedding(10, 4), flat=nn.Flatten(), fc=nn.Linear(20, 2)))
        >>> ids = torch.randint(1, 10, (2, 5))  # 5 tokens; id 0 is padding
        >>> emb = configure_interpretable_embedding_layer(model, "embedding")
        >>> try:
        ...     inputs, pads = emb.indices_to_embeddings(ids), emb.indices_to_embeddings(torch.zeros_like(ids))
        ...     attr = IntegratedGradients(model).attribute(inputs, baselines=pads, target=1)
        ... finally:
        ...     remove_interpretable_embedding_layer(model, emb)
        >>> attr.shape
        torch.Size([2, 5, 4])
        >>> lig = LayerIntegratedGradients(model, model.embedding)  # the same, with the model left as it is
        >>> torch.allclose(attr, lig.attribute(ids, baselines=0, target=1), atol=1e-6)
        True
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(embedding_layer_name, str):
        raise ArgumentTypeError(
            f"embedding_layer_name: expected a dotted module name, got {type(embedding_layer_name).__name__}"
        )
    layer = _submodule(model, embedding_layer_name)
    if isinstance(layer, InterpretableEmbeddingBase):
        raise ArgumentError(
            f"embedding_layer_name: {embedding_layer_name!r} is already an interpretable embedding layer; "
            "remove it first with remove_interpretable_embedding_layer"
        )
    wrapper = InterpretableEmbeddingBase(layer, embedding_layer_name)
    wrapper.train(layer.training)  # the model's train/eval flags read the same as before
    parent, attribute = _parent_and_attribute(model, embedding_layer_name)
    setattr(parent, attribute, wrapper)
    return wrapper


def remove_interpretable_embedding_layer(model: nn.Module, interpretable_emb: InterpretableEmbeddingBase) -> None:
    """Put the original embedding layer (the same module object) back where ``interpretable_emb`` is.

    Args:
        model: the model given to :func:`configure_interpretable_embedding_layer`.
        interpretable_emb: what that call returned.

    Raises:
        TypeError: ``interpretable_emb`` is not an :class:`InterpretableEmbeddingBase`.
        ValueError: ``interpretable_emb`` is not in ``model`` at its name (removed already, or another model).
    """
    if not isinstance(interpretable_emb, InterpretableEmbeddingBase):
        raise ArgumentTypeError(
            f"interpretable_emb: expected the InterpretableEmbeddingBase that "
            f"configure_interpretable_embedding_layer returned, got {type(interpretable_emb).__name__}"
        )
    name = interpretable_emb.full_name
    try:
        current = model.get_submodule(name)
    except AttributeError:
        current = None
    if current is not interpretable_emb:
        raise ArgumentError(
            f"interpretable_emb: the model holds no interpretable embedding layer at {name!r} "
            "(removed already, or configured on another model)"
        )
    parent, attribute = _parent_and_attribute(model, name)
    setattr(parent, attribute, interpretable_emb.embedding)
