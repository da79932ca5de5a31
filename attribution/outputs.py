"""Class scores from what models return, for models whose output is not an ``(N, C)`` tensor.

The engine explains a forward function with an ``(N, C)`` output (or a
callable ``target``).  :class:`ModelScores` turns any model into one:

- Hugging Face models return a ``ModelOutput`` (``.logits``), torchvision
  segmentation models a dict (``"out"``), many models a tuple (logits first):
  :func:`default_output_transform` finds the scores in all of these.
- A segmentation map ``(N, C, H, W)`` becomes each class's score summed over
  the pixels, or over a region mask per example (Captum's recipe for
  segmentation: explain the class score over the pixels of interest).
- A single logit ``(N,)`` or ``(N, 1)`` is a binary classifier: it becomes the
  two scores ``(-z, z)``, so the prediction (the arg-max) is ``z > 0``, class 1
  explains the logit and class 0 its negation.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from attribution import LayerIntegratedGradients
    >>> from attribution.outputs import ModelScores
    >>> _ = torch.manual_seed(0)
    >>> word_embeddings, head = nn.Embedding(10, 4), nn.Linear(4, 2)
    >>> def bert(input_ids, attention_mask):  # a Hugging Face-style classifier: keywords in, "logits" out
    ...     hidden = word_embeddings(input_ids) * attention_mask[..., None]
    ...     return {"logits": head(hidden.mean(1))}
    >>> input_ids, attention_mask = torch.randint(1, 10, (2, 5)), torch.ones(2, 5)
    >>> scores = ModelScores(bert, input_key="input_ids", forward_keys=("attention_mask",))
    >>> scores(input_ids, attention_mask).shape  # (N, C)
    torch.Size([2, 2])
    >>> lig = LayerIntegratedGradients(scores, word_embeddings)
    >>> attr = lig.attribute(input_ids, target=1, additional_forward_args=(attention_mask,))
    >>> attr.shape  # per token and embedding dimension
    torch.Size([2, 5, 4])
    >>> segmentation = nn.Conv2d(3, 2, 1)  # (N, 2, H, W) maps: each class's score is summed over the pixels
    >>> ModelScores(lambda x: {"out": segmentation(x)})(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attribution._internal.checks import ArgumentError, ArgumentTypeError

OUTPUT_KEYS = ("logits", "out")
"""Keys of a mapping output, in order of preference."""


def default_output_transform(output: Any) -> Tensor:
    """The scores tensor in a model's output: the tensor itself, the first element of a tuple or
    list, ``"logits"`` then ``"out"`` of a mapping, or the ``.logits`` of an object (a Hugging Face
    ``ModelOutput``).

    Raises:
        TypeError: when none of these holds a tensor; pass your own ``output_transform``.
    """
    found = output
    if isinstance(found, Mapping):
        found = next((found[k] for k in OUTPUT_KEYS if k in found), None)
    elif isinstance(found, Sequence) and not isinstance(found, Tensor) and found:
        found = found[0]
    elif not isinstance(found, Tensor) and isinstance(getattr(found, "logits", None), Tensor):
        found = found.logits
    if not isinstance(found, Tensor):
        raise ArgumentTypeError(
            f"output_transform: cannot find the scores in a model output of type {type(output).__name__}; "
            f"expected a tensor, a tuple/list (scores first), a mapping with one of the keys {list(OUTPUT_KEYS)} "
            f"or an object with .logits; pass output_transform=<callable from the output to (N, C) scores>"
        )
    return found


def class_scores(scores: Tensor, region: Tensor | None = None) -> Tensor:
    """``(N, C)`` class scores from classifier, binary or segmentation outputs.

    Args:
        scores: ``(N, C)``; ``(N,)`` or ``(N, 1)`` (one logit: becomes ``(-z, z)``); or ``(N, C, *spatial)``
            (summed over the spatial dims).
        region: for spatial scores, a mask ``(N, *spatial)`` (any dtype; resized with nearest
            neighbours when its size differs) that weights the pixels summed; None sums all pixels.

    Raises:
        ValueError: a scalar output, or a region for scores without spatial dims.
    """
    if scores.dim() == 0:
        raise ArgumentError("output_transform: the model returned a scalar; expected scores with the batch in dim 0")
    if scores.dim() == 1 or (scores.dim() == 2 and scores.shape[1] == 1):
        logit = scores.reshape(-1, 1)
        return torch.cat((-logit, logit), dim=1)
    if scores.dim() == 2:
        if region is not None:
            raise ArgumentError("region: a region mask needs spatial scores (N, C, H, W), got (N, C)")
        return scores
    if region is None:
        return scores.flatten(2).sum(2)
    weights = _region_like(region, scores)
    return (scores * weights.unsqueeze(1)).flatten(2).sum(2)


def _region_like(region: Tensor, scores: Tensor) -> Tensor:
    """The region as weights ``(rows, *spatial)`` matching ``scores``: rows repeated, size matched."""
    weights = region.to(scores.dtype)
    if weights.dim() == scores.dim():  # (N, 1, H, W)
        weights = weights[:, 0]
    if tuple(weights.shape[1:]) != tuple(scores.shape[2:]):
        weights = F.interpolate(weights[:, None], size=scores.shape[2:], mode="nearest")[:, 0]
    rows = scores.shape[0]
    if rows != weights.shape[0]:  # stacked copies of the batch: row r belongs to example r % N
        weights = weights.repeat(rows // weights.shape[0], *([1] * (weights.dim() - 1)))
    return weights


@dataclass(frozen=True)
class ModelScores:
    """A forward function that calls ``model`` and returns ``(N, C)`` class scores.

    Args:
        model: the model (any callable).
        output_transform: from the model's output to its scores (see :func:`default_output_transform`);
            the result goes through :func:`class_scores`.
        input_key: pass the attributed input by this keyword (``model(input_ids=x)``) instead of first.
        forward_keys: names of further tensors the model takes by keyword; they are given, in this
            order, as the first ``additional_forward_args`` (so the engine expands them with the batch).
        with_region: the last additional argument is a region mask for segmentation outputs
            (see :func:`class_scores`).
    """

    model: Callable[..., Any]
    output_transform: Callable[[Any], Tensor] = default_output_transform
    input_key: str | None = None
    forward_keys: tuple[str, ...] = ()
    with_region: bool = False

    def __call__(self, inputs: Tensor, *args: Any) -> Tensor:
        region = args[-1] if self.with_region else None
        tensors = args[:-1] if self.with_region else args
        if len(tensors) < len(self.forward_keys):
            raise ArgumentError(
                f"additional_forward_args: expected the tensors {list(self.forward_keys)}"
                + (" and a region mask" if self.with_region else "")
                + f", got {len(args)} arguments"
            )
        keywords = dict(zip(self.forward_keys, tensors))
        positional = tensors[len(self.forward_keys) :]
        if self.input_key is None:
            output = self.model(inputs, *positional, **keywords)
        else:
            output = self.model(*positional, **{self.input_key: inputs}, **keywords)
        return class_scores(self.output_transform(output), region)
