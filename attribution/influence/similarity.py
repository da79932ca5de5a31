"""Similarity influence (Captum's ``SimilarityInfluence``): the training examples whose layer activations are
closest to a test example's, by a pairwise similarity metric.

The core is plain functions: the two metrics Captum ships, the activations of named layers, and a running
top-k over the training set read batch by batch (so neither the activations nor the similarity matrix of the
whole training set are held at once). The class stores the configuration and caches the training activations
under ``activation_dir`` in Captum's layout (``av/<model_id>/src/<layer>/<batch>.pt``).
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from attribution._internal.canonical import describe, format_additional_args, format_inputs
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice, check_int
from attribution.influence._gradients import natural_key, submodule
from attribution.influence.base import DataInfluence, as_dataloader, split_batch

SimilarityMetric = Callable[[Tensor, Tensor], Tensor]
"""``(test (n, *), train (m, *)) -> (n, m)`` pairwise similarities."""


def euclidean_distance(test: Tensor, train: Tensor) -> Tensor:
    """Pairwise euclidean distances ``(n, m)`` between the flattened rows of ``test`` ``(n, ...)`` and ``train``
    ``(m, ...)``."""
    return torch.cdist(test.reshape(len(test), -1), train.reshape(len(train), -1))


def cosine_similarity(test: Tensor, train: Tensor, replace_nan: float = 0) -> Tensor:
    """Pairwise cosine similarities ``(n, m)`` between the flattened rows of ``test`` and ``train``.

    A pair with an all-zero row has no angle; its similarity is ``replace_nan``. (Captum instead fills the
    zero row with ``replace_nan`` before the product, which gives ``replace_nan`` times the sum of the other
    unit vector, a value that depends on the other example.)
    """
    test = test.reshape(len(test), -1)
    train = train.reshape(len(train), -1)
    test_norm = torch.linalg.vector_norm(test, dim=1, keepdim=True)
    train_norm = torch.linalg.vector_norm(train, dim=1, keepdim=True)
    # Dividing by 1 where the norm is 0 keeps the product finite; those pairs are replaced below.
    similarity = (test / test_norm.where(test_norm != 0, 1)) @ (train / train_norm.where(train_norm != 0, 1)).T
    undefined = (test_norm == 0) | (train_norm == 0).T
    result: Tensor = similarity.masked_fill(undefined, replace_nan)
    return result


@contextmanager
def _recorded_outputs(modules: Sequence[nn.Module]) -> Iterator[list[list[Tensor]]]:
    """Record each module's outputs during the forwards inside the block; hooks removed on exit."""
    records: list[list[Tensor]] = [[] for _ in modules]

    def recorder(i: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            records[i].append(output)

        return hook

    handles = [module.register_forward_hook(recorder(i)) for i, module in enumerate(modules)]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def layer_activations(
    model: nn.Module, layers: Sequence[str], inputs: tuple[Any, ...], additional_forward_args: Any = None
) -> list[Tensor]:
    """The outputs of the named ``layers`` in one forward of ``model(*inputs, *additional_forward_args)``.

    Raises:
        ValueError: a layer that is not a submodule, that does not run exactly once, or whose output is not a tensor.
    """
    modules = [submodule(model, name, "layers") for name in layers]
    with torch.no_grad(), _recorded_outputs(modules) as records:
        model(*inputs, *format_additional_args(additional_forward_args))
    for name, outputs in zip(layers, records):
        if len(outputs) != 1:
            raise ArgumentError(f"layers: {name!r} ran {len(outputs)} times in one forward; it must run exactly once")
        if not isinstance(outputs[0], Tensor):
            raise ArgumentError(f"layers: {name!r} returned {describe(outputs[0])}; similarity needs a tensor output")
    return [outputs[0].detach() for outputs in records]


def top_k_similar(
    test: Tensor,
    train_batches: Iterable[Tensor],
    metric: SimilarityMetric,
    top_k: int,
    largest: bool = True,
    undefined_value: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``top_k`` most similar training rows of each test row, over training activations read batch by batch.

    Returns:
        ``(indices, scores, undefined)``: ``(n, k)`` training indices and their similarities, best first
        (``k = min(top_k, number of training rows)``), and the ``[test, train]`` index pairs whose similarity
        equals ``undefined_value`` (a zero activation under cosine similarity).

    Raises:
        ValueError: a metric whose output is not ``(test rows, batch rows)``.
    """
    best_scores = test.new_empty(len(test), 0)
    best_indices = torch.empty(len(test), 0, dtype=torch.long, device=test.device)
    undefined = [torch.empty(0, 2, dtype=torch.long, device=test.device)]
    offset = 0
    for batch in train_batches:
        batch = batch.to(test.device)
        similarity = metric(test, batch)
        if not isinstance(similarity, Tensor) or similarity.shape != (len(test), len(batch)):
            got = describe(similarity)
            raise ArgumentError(
                f"similarity_metric: expected a tensor of shape {(len(test), len(batch))} (test examples, "
                f"training examples in the batch), got {got}"
            )
        if undefined_value is not None:
            pairs = (similarity == undefined_value).nonzero()
            undefined.append(pairs + torch.tensor([0, offset], device=pairs.device))
        indices = torch.arange(offset, offset + len(batch), device=test.device).expand(len(test), -1)
        scores = torch.cat((best_scores, similarity.to(best_scores.dtype)), dim=1)
        indices = torch.cat((best_indices, indices), dim=1)
        best_scores, order = torch.topk(scores, min(top_k, scores.shape[1]), dim=1, largest=largest, sorted=True)
        best_indices = indices.gather(1, order)
        offset += len(batch)
    return best_indices, best_scores, torch.cat(undefined)


class SimilarityInfluence(DataInfluence):
    """The training examples whose activations at ``layers`` are most similar to a test example's (Captum's name).

    Args:
        module: the model.
        layers: a layer name, or a list of them (names of submodules, as ``named_modules`` gives them).
        influence_src_dataset: the examples searched, a ``Dataset`` (batched by ``batch_size``) or a
            ``DataLoader``; an item is the model's input, or a tuple ``(inputs..., label)``.
        activation_dir: the folder where the training activations are cached, in Captum's layout
            ``<activation_dir>/av/<model_id>/src/<layer>/<batch>.pt``.
        model_id: a name for the model's version; activations are cached under it.
        similarity_metric: ``(test (n, *), train (m, *)) -> (n, m)`` similarities; :func:`cosine_similarity`
            (the default) or :func:`euclidean_distance` (with ``similarity_direction="min"``), or your own.
        similarity_direction: ``"max"`` when a higher metric means more similar, ``"min"`` for a distance.
        batch_size: the batch size for reading ``influence_src_dataset``.
        **kwargs: ``replace_nan``, the cosine similarity given to an all-zero activation (default -2 for
            ``"max"`` and 2 for ``"min"``, so that those examples come last).

    Raises:
        TypeError: a module, layer name, dataset or metric of the wrong type.
        ValueError: an unknown ``similarity_direction``, an empty ``layers`` or a bad ``batch_size``.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from attribution.influence import SimilarityInfluence
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> train_set = TensorDataset(torch.randn(10, 4), torch.zeros(10))
        >>> sim = SimilarityInfluence(model, "1", train_set, tempfile.mkdtemp(), batch_size=5)
        >>> indices, scores = sim.influence(torch.randn(2, 4), top_k=3)["1"]
        >>> indices.shape, scores.shape  # the 3 most similar training examples per test example
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        module: nn.Module,
        layers: str | list[str],
        influence_src_dataset: Dataset[Any] | DataLoader[Any],
        activation_dir: str,
        model_id: str = "",
        similarity_metric: SimilarityMetric = cosine_similarity,
        similarity_direction: str = "max",
        batch_size: int = 1,
        **kwargs: Any,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ArgumentTypeError(f"module: expected a torch.nn.Module, got {describe(module)}")
        layer_list = [layers] if isinstance(layers, str) else layers
        if not isinstance(layer_list, (list, tuple)) or not all(isinstance(name, str) for name in layer_list):
            raise ArgumentTypeError(f"layers: expected a layer name or a list of them, got {describe(layers)}")
        if not layer_list:
            raise ArgumentError("layers: expected at least one layer name, got an empty list")
        for name in layer_list:
            submodule(module, name, "layers")
        if not isinstance(activation_dir, (str, os.PathLike)):
            raise ArgumentTypeError(f"activation_dir: expected a folder path, got {describe(activation_dir)}")
        if not isinstance(model_id, str):
            raise ArgumentTypeError(f"model_id: expected a str, got {describe(model_id)}")
        if not callable(similarity_metric):
            raise ArgumentTypeError(f"similarity_metric: expected a callable, got {describe(similarity_metric)}")
        check_choice(similarity_direction, "similarity_direction", ("max", "min"))
        check_int(batch_size, "batch_size")
        super().__init__(module, influence_src_dataset)
        self.module = module
        self.layers = list(layer_list)
        self.influence_src_dataset = influence_src_dataset
        self.influence_src_dataloader = as_dataloader(influence_src_dataset, batch_size, "influence_src_dataset")
        self.activation_dir = os.fspath(activation_dir)
        self.model_id = model_id
        self.batch_size = batch_size
        self.similarity_direction = similarity_direction
        self.similarity_metric = similarity_metric
        self.replace_nan: float | None = None
        if similarity_metric is cosine_similarity:
            self.replace_nan = kwargs.get("replace_nan", -2 if similarity_direction == "max" else 2)
            replace_nan = self.replace_nan
            self.similarity_metric = lambda test, train: cosine_similarity(test, train, replace_nan=replace_nan)

    def influence(  # type: ignore[override]
        self,
        inputs: Tensor | tuple[Tensor, ...],
        top_k: int = 1,
        additional_forward_args: Any = None,
        load_src_from_disk: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The ``top_k`` most similar training examples of each test example, per layer.

        Args:
            inputs: the test batch, a tensor or a tuple of tensors passed to the model.
            top_k: how many training examples to return per test example.
            additional_forward_args: further arguments of the test forward, after ``inputs``.
            load_src_from_disk: reuse training activations cached under ``activation_dir``; False recomputes
                them (and overwrites the cache).

        Returns:
            A dict mapping each layer name to ``(indices, scores)``, both ``(len(inputs), k)`` with the best
            first (``k = min(top_k, training set size)``). Under cosine similarity, a layer with all-zero
            activations adds ``"zero_acts-<layer>"``: the ``[test, train]`` index pairs given ``replace_nan``
            (with a ``RuntimeWarning``).

        Raises:
            TypeError: inputs that are not a tensor or tuple of tensors.
            ValueError: a bad ``top_k``, or a metric whose output has the wrong shape.
        """
        inputs_tuple, _ = format_inputs(inputs)
        check_int(top_k, "top_k")
        test_activations = layer_activations(self.module, self.layers, inputs_tuple, additional_forward_args)
        train_activations = self._train_activations(load_src_from_disk)
        largest = self.similarity_direction == "max"
        influences: dict[str, Any] = {}
        for layer, test, train in zip(self.layers, test_activations, train_activations):
            indices, scores, undefined = top_k_similar(
                test, train, self.similarity_metric, top_k, largest, self.replace_nan
            )
            influences[layer] = (indices, scores)
            if len(undefined):
                warnings.warn(
                    f"layer {layer!r} has all-zero activations, where cosine similarity is undefined; the "
                    f"[test, train] index pairs are under the key 'zero_acts-{layer}' and score {self.replace_nan}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                influences[f"zero_acts-{layer}"] = undefined
        return influences

    def _layer_dir(self, layer: str) -> str:
        return os.path.join(self.activation_dir, "av", self.model_id, "src", layer)

    def _train_activations(self, load_from_disk: bool) -> list[Iterator[Tensor]]:
        """Per layer, the training activations batch by batch (read lazily from the cache, computed and saved
        first where the cache lacks them or ``load_from_disk`` is False)."""
        cached = {layer: self._cached_files(layer) for layer in self.layers}
        missing = [layer for layer in self.layers if not (load_from_disk and cached[layer])]
        if missing:
            for layer in missing:
                for path in cached[layer]:
                    os.remove(path)
                os.makedirs(self._layer_dir(layer), exist_ok=True)
            # Iterating a DataLoader draws a seed from the global RNG; the caller's is left as it was.
            with torch.random.fork_rng(devices=[]):
                for i, batch in enumerate(self.influence_src_dataloader):
                    inputs, _ = split_batch(batch, "influence_src_dataset batch")
                    for layer, activation in zip(missing, layer_activations(self.module, missing, inputs)):
                        torch.save(activation, os.path.join(self._layer_dir(layer), f"{i}.pt"))
            cached.update({layer: self._cached_files(layer) for layer in missing})
        return [(torch.load(path) for path in cached[layer]) for layer in self.layers]

    def _cached_files(self, layer: str) -> list[str]:
        return sorted(glob.glob(os.path.join(glob.escape(self._layer_dir(layer)), "*.pt")), key=natural_key)
