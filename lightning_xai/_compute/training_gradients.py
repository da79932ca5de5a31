"""Per-example gradients of the training loss, for TracIn computed online (Pruthi et al., 2020), and their
dot products.

An example's gradient is kept as one *group* per parameter tensor, each a tuple of factors:

- a linear layer's weight in closed form, ``(g, a)`` with ``g = dL/d(output)`` and ``a`` the layer's input:
  the gradient is their outer product ``g a^T`` (the form of :class:`attribution.influence.TracInCPFast`),
  so two examples' dot product is ``(g . g') (a . a')`` and no weight gradient is ever materialised;
- any other parameter as one flat vector, from ``torch.func`` (``vmap`` over ``grad``), in chunks of
  examples cut to the memory budget.

Two examples' gradient dot product is the sum over groups of the products of their factors' dot products,
each group weighted by its parameter's learning rate. The gradients are taken on detached parameters
(``param.grad``, ``requires_grad`` and the autograd graph of training are never touched); the caller runs
this in eval mode under a forked RNG (:func:`lightning_xai._compute.explain.untouched_training_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from attribution.utils import memory_budget

LossFn = Callable[[Tensor, Tensor], Tensor]
Factors = tuple[Tensor, ...]
"""One parameter's per-example gradients: ``(N, ...)`` factors whose outer product per example is it."""


def scores_of(output: Any) -> Tensor:
    """The class scores in a model's output: a tensor, or the first item of a tuple."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(
            "InfluenceMonitor: the model must return a tensor of scores (or a tuple, scores first), got "
            f"{type(output).__name__}"
        )
    return output


def _checked_losses(losses: Tensor, count: int) -> Tensor:
    if losses.shape != (count,):
        raise ValueError(
            "InfluenceMonitor: loss_fn must return one loss per example (reduction='none'), shape "
            f"{(count,)}; got {tuple(losses.shape)}"
        )
    return losses


@contextmanager
def _output_as_leaf(layer: nn.Module) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Capture ``(layer input, layer output as a new leaf)`` of each call; the hook is removed on exit."""
    seen: list[tuple[Tensor, Tensor]] = []

    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        seen.append((args[0].detach(), leaf))
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def linear_weight_factors(
    model: nn.Module, layer: nn.Linear, inputs: Tensor, labels: Tensor, loss_fn: LossFn
) -> Factors:
    """Per example, ``(dL/d(layer output), layer input)``: the layer's weight gradient is their outer product.

    The layer's output is replaced by a leaf, so autograd runs only through what follows the layer.
    ``loss_fn(scores, labels)`` must give one loss per example (``reduction="none"``).

    Raises:
        ValueError: the layer is not called exactly once, its input or output is not 2-D, or the loss is
            not one value per example.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    with torch.enable_grad(), _output_as_leaf(layer) as seen:
        output = scores_of(functional_call(model, params, (inputs,)))
        if len(seen) != 1:
            raise ValueError(
                f"InfluenceMonitor: the layer must be called once per forward, it was called {len(seen)} times"
            )
        layer_input, leaf = seen[0]
        losses = _checked_losses(loss_fn(output, labels), len(inputs))
        (output_grad,) = torch.autograd.grad(losses.sum(), leaf)
    if output_grad.dim() != 2 or layer_input.dim() != 2:
        raise ValueError(
            "InfluenceMonitor: the layer must be a linear layer with 2-D input and output (N, features); got "
            f"input {tuple(layer_input.shape)} and output {tuple(output_grad.shape)}; name layers= to take "
            "per-example gradients of any parameters instead"
        )
    return output_grad.float(), layer_input.float()


def parameter_gradients(
    model: nn.Module, names: Sequence[str], inputs: Tensor, labels: Tensor, loss_fn: LossFn, chunk_size: int
) -> list[Factors]:
    """Per example, the flat gradient of its loss wrt each parameter in ``names``: one ``(N, numel)`` factor
    per parameter, computed ``chunk_size`` examples at a time by ``vmap`` over ``grad``."""
    parameters = dict(model.named_parameters())
    active = {name: parameters[name].detach() for name in names}
    frozen = {name: p.detach() for name, p in parameters.items() if name not in active}
    buffers = dict(model.named_buffers())

    def example_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        scores = scores_of(functional_call(model, (params, frozen, buffers), (x.unsqueeze(0),)))
        return _checked_losses(loss_fn(scores, y.unsqueeze(0)), 1).sum()

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
    chunks: list[dict[str, Tensor]] = []
    with torch.enable_grad():
        for start in range(0, len(inputs), chunk_size):
            end = start + chunk_size
            chunks.append(per_example(active, inputs[start:end], labels[start:end]))
    return [(torch.cat([c[name].flatten(1) for c in chunks]).float(),) for name in names]


def _dots(left: Factors, right: Factors) -> Tensor:
    """``(n_left, n_right)`` dot products of the per-example gradients that two factor tuples stand for."""
    score = left[0] @ right[0].T
    for a, b in zip(left[1:], right[1:]):
        score = score * (a @ b.T)
    return score


def _own(factors: Factors) -> Tensor:
    """Each example's gradient dot itself: the product of its factors' squared norms."""
    score = factors[0].pow(2).sum(1)
    for f in factors[1:]:
        score = score * f.pow(2).sum(1)
    return score


@dataclass(frozen=True)
class StepScores:
    """One training step's TracIn terms: ``pairs`` ``(n_probe, n_batch)`` and ``own`` ``(n_batch,)``, each a
    sum over parameters of ``lr * grad . grad``."""

    pairs: Tensor
    own: Tensor


class TrainingGradients:
    """The parameters whose per-example gradients TracIn sums over, and how they are taken.

    Args:
        model: the model being trained.
        parameters: names of the parameters, or ``None``: the weight of ``layer`` in closed form.
        layer: the linear layer whose weight is used when ``parameters`` is ``None``.
        loss_fn: ``loss_fn(scores, labels)``, one loss per example.
    """

    def __init__(
        self, model: nn.Module, parameters: Sequence[str] | None, layer: nn.Linear | None, loss_fn: LossFn
    ) -> None:
        if (parameters is None) == (layer is None):
            raise ValueError("TrainingGradients: give either parameters or a layer")
        self.model, self.layer, self.loss_fn = model, layer, loss_fn
        named = dict(model.named_parameters())
        if parameters is None:
            assert layer is not None
            self.names = [next(n for n, p in named.items() if p is layer.weight)]
        else:
            self.names = list(parameters)
        self.tensors = [named[n] for n in self.names]
        self.numel = sum(p.numel() for p in self.tensors)

    def chunk_size(self, device: torch.device) -> int:
        """Examples whose flat gradients (about three copies each while ``vmap`` runs) fit the memory budget."""
        return max(1, memory_budget(device) // max(1, 3 * 4 * self.numel))

    def factors(self, inputs: Tensor, labels: Tensor) -> list[Factors]:
        """One factor tuple per parameter, for a batch of examples."""
        if self.layer is not None:
            return [linear_weight_factors(self.model, self.layer, inputs, labels, self.loss_fn)]
        chunk = self.chunk_size(inputs.device)
        return parameter_gradients(self.model, self.names, inputs, labels, self.loss_fn, chunk)

    def step_scores(
        self, probe: tuple[Tensor, Tensor], inputs: Tensor, labels: Tensor, rates: Sequence[float]
    ) -> StepScores:
        """``lr * grad . grad`` of the probe against a training batch and of the batch against itself, summed
        over the parameters (``rates[i]`` is the learning rate of ``self.names[i]``).

        The training batch goes in chunks for flat gradients: the memory is that of the probe's gradients
        and one chunk's.
        """
        if self.layer is not None:  # one forward for both (eval mode: no example affects another)
            both = self.factors(torch.cat([probe[0], inputs]), torch.cat([probe[1], labels]))
            n = len(probe[0])
            probe_factors, train_factors = (
                [tuple(f[:n] for f in p) for p in both],
                [tuple(f[n:] for f in p) for p in both],
            )
            return StepScores(
                sum(rate * _dots(p, t) for rate, p, t in zip(rates, probe_factors, train_factors)),  # type: ignore[arg-type]
                sum(rate * _own(t) for rate, t in zip(rates, train_factors)),  # type: ignore[arg-type]
            )
        probe_factors = self.factors(*probe)
        step = self.chunk_size(inputs.device)
        pairs, own = [], []
        for start in range(0, len(inputs), step):
            train = self.factors(inputs[start : start + step], labels[start : start + step])
            pairs.append(sum(rate * _dots(p, t) for rate, p, t in zip(rates, probe_factors, train)))
            own.append(sum(rate * _own(t) for rate, t in zip(rates, train)))
        return StepScores(torch.cat(pairs, 1), torch.cat(own))  # type: ignore[arg-type]  # sums of tensors
