"""TracIn restricted to the last fully connected layer: Captum's ``TracInCPFast`` and ``TracInCPFastRandProj``.

For ``out = W a + b`` the per-example gradient of the loss wrt ``W`` is the outer product ``g a^T`` of
``g = dloss/dout`` and the layer input ``a``, so ``<g a^T, g' a'^T> = <g, g'> <a, a'>``: one forward pass
and one gradient wrt the output per batch, no parameter gradient (the paper's fast variant; the bias
is left out, as in Captum). ``TracInCPFastRandProj`` stores the training examples' gradients once,
optionally compressed by random projections of ``g`` and ``a``, and answers queries by a matrix product.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import partial
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution._internal.chunking import memory_budget
from attribution.influence import _gradients as core
from attribution.influence.base import KMostInfluentialResults
from attribution.influence.tracincp import TensorOrResults, TracInCPBase

_REDUCTIONS = ("none", "sum", "mean")


class TracInCPFast(TracInCPBase):
    """TracIn over the weight of ``final_fc_layer``, the layer that produces the model's output.

    Args:
        model, train_dataset, checkpoints, checkpoints_load_func, batch_size: as :class:`TracInCPBase`.
        final_fc_layer: the last fully connected layer, a module of ``model`` or its name.
        loss_fn: the loss, reduction "sum" or "mean" (a "mean" loss is rescaled by the batch size, so each
            example's gradient is that of its own loss); "none" is summed. Required.
        test_loss_fn: the test examples' loss (default ``loss_fn``).
        vectorize: accepted for Captum's signature; the gradient wrt the output is always one batched call.

    Raises:
        ValueError: no ``loss_fn``, or an unknown ``final_fc_layer`` name.
        TypeError: ``final_fc_layer`` neither a module nor a name.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from attribution.influence import TracInCPFast
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> train_set = TensorDataset(torch.randn(10, 4), torch.randint(0, 3, (10,)))
        >>> folder = tempfile.mkdtemp()
        >>> torch.save(model.state_dict(), f"{folder}/epoch-1.pt")
        >>> tracin = TracInCPFast(model, "2", train_set, folder, loss_fn=nn.CrossEntropyLoss(reduction="sum"))
        >>> tracin.self_influence().shape  # one score per training example: high ones are suspects
        torch.Size([10])
    """

    def __init__(
        self,
        model: nn.Module,
        final_fc_layer: nn.Module | str,
        train_dataset: Dataset[Any] | DataLoader[Any],
        checkpoints: str | list[str] | Iterator[Any],
        checkpoints_load_func: core.LoadFunc = core.load_flexible_state_dict,
        loss_fn: core.LossFn | None = None,
        batch_size: int | None = 1,
        test_loss_fn: core.LossFn | None = None,
        vectorize: bool = False,
    ) -> None:
        super().__init__(model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size, test_loss_fn)
        self.vectorize = vectorize
        self.final_fc_layer = final_fc_layer  # the setter resolves it
        if loss_fn is None:
            raise ArgumentError(f"loss_fn: required by {self.get_name()}, got None")
        self.reduction_type = core.check_reduction(loss_fn, "loss_fn", _REDUCTIONS)
        self.test_reduction_type = (
            self.reduction_type
            if test_loss_fn is None
            else core.check_reduction(test_loss_fn, "test_loss_fn", _REDUCTIONS)
        )

    @property
    def final_fc_layer(self) -> nn.Module:
        """The last fully connected layer."""
        return self._final_fc_layer

    @final_fc_layer.setter
    def final_fc_layer(self, layer: nn.Module | str) -> None:
        if isinstance(layer, nn.Module):
            if not any(layer is m for m in self.model.modules()):
                raise ArgumentError("final_fc_layer: the module is not part of the model")
            self._final_fc_layer = layer
        elif isinstance(layer, str):
            try:
                self._final_fc_layer = core.submodule(self.model, layer, "final_fc_layer")
            except ArgumentError as error:  # Captum's wording first: code matching its message keeps working
                raise ArgumentError(f'Invalid final_fc_layer str: "{layer}" provided! {error}') from None
        else:
            raise ArgumentTypeError(
                f"final_fc_layer: expected a module of the model or its name, got {describe(layer)}"
            )

    def _factors(self, test: bool, batch: Any) -> tuple[Tensor, Tensor]:
        loss_fn, reduction = (
            (self.test_loss_fn, self.test_reduction_type) if test else (self.loss_fn, self.reduction_type)
        )
        return core.last_layer_factors(self.model, self.final_fc_layer, batch, loss_fn, reduction)

    def influence(  # type: ignore[override]  # Captum's signature
        self,
        inputs: tuple[Any, ...] | DataLoader[Any],
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> TensorOrResults:
        """As :meth:`TracInCP.influence` (without ``aggregate``), over the last layer's weight.

        Raises:
            ValueError: no ``inputs`` or a bad ``k``.
            TypeError: ``inputs`` of the wrong type.
        """
        test, train = partial(self._factors, True), partial(self._factors, False)
        return self._influence_of(inputs, test, train, k, proponents, show_progress)

    def self_influence(
        self,
        inputs: tuple[Any, ...] | DataLoader[Any] | None = None,
        show_progress: bool = False,
        outer_loop_by_checkpoints: bool = False,
    ) -> Tensor:
        """``sum_c lr_c * |g|^2 |a|^2`` per example of ``inputs`` (default: the training set); see
        :meth:`TracInCP.self_influence`."""
        return self._self_influence_of(inputs, partial(self._factors, False), show_progress, outer_loop_by_checkpoints)


class NearestNeighbors(Protocol):
    """Captum's nearest-neighbour interface: ``setup`` on the training rows, then top-``k`` inner products."""

    def setup(self, data: Tensor) -> None: ...

    def get_nearest_neighbors(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]: ...


class TracInCPFastRandProj(TracInCPFast):
    """:class:`TracInCPFast` with the training examples' gradients computed once, at construction.

    Each example's gradient at checkpoint ``c`` is ``sqrt(lr_c) * (P_g^T g) (P_a^T a)^T``, Captum's row of
    :meth:`compute_intermediate_quantities`. It is stored as its two factors, so the training set takes
    ``len(g) + len(a)`` floats per example and checkpoint instead of their product, and the influence is
    ``sum_c <g, g'> <a, a'>``: two small matrix products per checkpoint. With ``projection_dim`` set and
    smaller than the gradient's size, ``P_g`` and ``P_a`` are Gaussian random projections to
    ``min(sqrt(projection_dim), dim)`` columns each (an unbiased estimate of the scores); without it the
    scores are exact.

    The other arguments (``model``, ``final_fc_layer``, ``train_dataset``, ``checkpoints``,
    ``checkpoints_load_func``, ``loss_fn``, ``batch_size``, ``test_loss_fn``, ``vectorize``) are
    :class:`TracInCPFast`'s.

    Args:
        nearest_neighbors: an object with ``setup(data)`` and ``get_nearest_neighbors(query, k)`` (Captum's
            interface, e.g. an approximate index) for the ``k`` mode; default: exact top-``k``.
        projection_dim: the size of the projected gradient per checkpoint, or None for no projection.
        seed: seeds a private generator for the projections (the global RNG is left alone).

    Raises:
        ValueError: a bad ``projection_dim``.
        TypeError: a ``seed`` that is not an int, or a ``nearest_neighbors`` without that interface.
    """

    def __init__(
        self,
        model: nn.Module,
        final_fc_layer: nn.Module | str,
        train_dataset: Dataset[Any] | DataLoader[Any],
        checkpoints: str | list[str] | Iterator[Any],
        checkpoints_load_func: core.LoadFunc = core.load_flexible_state_dict,
        loss_fn: core.LossFn | None = None,
        batch_size: int | None = 1,
        test_loss_fn: core.LossFn | None = None,
        vectorize: bool = False,
        nearest_neighbors: NearestNeighbors | None = None,
        projection_dim: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            model,
            final_fc_layer,
            train_dataset,
            checkpoints,
            checkpoints_load_func,
            loss_fn,
            batch_size,
            test_loss_fn,
            vectorize,
        )
        check_int(projection_dim, "projection_dim", allow_none=True)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ArgumentTypeError(f"seed: expected an int, got {describe(seed)}")
        if nearest_neighbors is not None and not (
            callable(getattr(nearest_neighbors, "setup", None))
            and callable(getattr(nearest_neighbors, "get_nearest_neighbors", None))
        ):
            raise ArgumentTypeError(
                "nearest_neighbors: expected an object with setup(data) and get_nearest_neighbors(query, k), "
                f"got {describe(nearest_neighbors)}"
            )
        self.nearest_neighbors = nearest_neighbors
        self.projection_dim = projection_dim
        self.seed = seed
        self.projection_quantities = self._projections()
        self._index()

    def _projections(self) -> tuple[Tensor, Tensor] | None:
        """Gaussian projections of ``g`` and ``a`` (variance 1/columns), or None when not needed."""
        if self.projection_dim is None:
            return None
        with core.loaded_checkpoints(self.model, self.checkpoints[:1], self.checkpoints_load_func) as rates:
            for _ in rates():
                g, a = self._factors(False, next(iter(self.train_dataloader)))
        if g.shape[1] * a.shape[1] <= self.projection_dim:
            return None
        generator = torch.Generator().manual_seed(self.seed)
        side = int(self.projection_dim**0.5)

        def draw(dim: int) -> Tensor:
            columns = min(side, dim)
            matrix = torch.normal(torch.zeros(dim, columns), 1.0 / columns**0.5, generator=generator)
            return matrix.to(device=g.device, dtype=g.dtype)

        return draw(g.shape[1]), draw(a.shape[1])

    def _projected(self, test: bool, batch: Any) -> tuple[Tensor, Tensor]:
        g, a = self._factors(test, batch)
        if self.projection_quantities is not None:
            g, a = g @ self.projection_quantities[0], a @ self.projection_quantities[1]
        return g, a

    def _index(self) -> None:
        """Stores the training examples' factors; a ``nearest_neighbors`` is set up on their flattened rows."""
        self._train_factors = self._factor_quantities(self.train_dataloader, test=False)
        if self.nearest_neighbors is not None:
            self.nearest_neighbors.setup(self.src_intermediate_quantities)

    @property
    def src_intermediate_quantities(self) -> Tensor:
        """The training set's :meth:`compute_intermediate_quantities` (Captum's attribute), built on access
        from the stored factors: those take ``g + a`` floats per example and checkpoint, the rows ``g x a``."""
        return _outer_rows(self._train_factors)

    def _factor_quantities(self, inputs: tuple[Any, ...] | DataLoader[Any], test: bool) -> list[tuple[Tensor, Tensor]]:
        """Per checkpoint, ``sqrt(lr) g`` and ``a`` (projected) of every example: their outer products are the
        rows of :meth:`compute_intermediate_quantities`, and the scores are products of their dot products."""
        batches = core.as_batches(inputs)
        per_checkpoint: list[tuple[Tensor, Tensor]] = []
        with core.loaded_checkpoints(self.model, self.checkpoints, self.checkpoints_load_func) as rates:
            for c, learning_rate in enumerate(rates()):
                factors = [self._projected(test, batch) for batch in batches]
                rows = sum(g.shape[0] for g, _ in factors)
                if rows == 0:
                    raise ArgumentError("inputs: the data loader yielded no examples")
                if per_checkpoint and rows != per_checkpoint[0][0].shape[0]:
                    raise ArgumentError(
                        f"inputs: the data loader yielded {rows} examples at checkpoint {c} and "
                        f"{per_checkpoint[0][0].shape[0]} at the first; each row must be the same example throughout"
                    )
                g = torch.cat([g for g, _ in factors]).mul_(learning_rate**0.5)
                per_checkpoint.append((g, torch.cat([a for _, a in factors])))
                del factors
        return per_checkpoint

    def compute_intermediate_quantities(self, inputs: tuple[Any, ...] | DataLoader[Any], test: bool = True) -> Tensor:
        """Per example, its (projected) last-layer gradient at every checkpoint times ``sqrt(lr)``,
        concatenated: shape (n, checkpoints x projected size); influence is a product of these."""
        return _outer_rows(self._factor_quantities(inputs, test))

    def _scores(self, queries: list[tuple[Tensor, Tensor]]) -> Tensor:
        """(n_test, n_train) influence: per checkpoint ``<g, g'> <a, a'>``, never the outer products."""
        total = core.pair_scores(queries[0], self._train_factors[0])
        for query, train in zip(queries[1:], self._train_factors[1:]):
            total += core.pair_scores(query, train)
        return total

    def influence(  # type: ignore[override]  # Captum's signature: k defaults to 5
        self,
        inputs: tuple[Any, ...] | DataLoader[Any] | None = None,
        k: int | None = 5,
        proponents: bool = True,
    ) -> TensorOrResults:
        """Influence scores (``k=None``) or the ``k`` most influential training examples (Captum's default
        ``k=5``); see :meth:`TracInCP.influence`.

        Raises:
            ValueError: no ``inputs`` or a bad ``k``.
        """
        if k is not None:
            check_int(k, "k")
        queries = self._factor_quantities(inputs, test=True)  # type: ignore[arg-type]  # None is rejected there
        if k is None:
            return self._scores(queries)
        if self.nearest_neighbors is not None:
            sign = 1.0 if proponents else -1.0
            indices, scores = self.nearest_neighbors.get_nearest_neighbors(sign * _outer_rows(queries), k)
            return KMostInfluentialResults(indices, sign * scores)
        # Test rows in blocks whose score matrices fit the budget: a large test set never holds them all.
        n_test, n_train = queries[0][0].shape[0], self._train_factors[0][0].shape[0]
        step = max(1, memory_budget(queries[0][0].device) // (3 * n_train * queries[0][0].element_size()))
        found = [
            core.top_k(self._scores([(g[i : i + step], a[i : i + step]) for g, a in queries]), k, proponents)
            for i in range(0, n_test, step)
        ]
        return KMostInfluentialResults(torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found]))

    def self_influence(
        self,
        inputs: tuple[Any, ...] | DataLoader[Any] | None = None,
        show_progress: bool = False,
        outer_loop_by_checkpoints: bool = False,
    ) -> Tensor:
        """Not offered, as in Captum: projections only approximate it and save nothing here.

        Raises:
            NotImplementedError: always; use :class:`TracInCPFast` for exact self influence.
        """
        raise NotImplementedError(
            f"{self.get_name()}.self_influence: use TracInCPFast, which computes it exactly at the same cost"
        )


def _outer_rows(factors: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Per example, the flattened outer products ``g a^T`` of every checkpoint side by side, written into one
    result (no per-checkpoint copies to concatenate)."""
    rows = factors[0][0].shape[0]
    widths = [g.shape[1] * a.shape[1] for g, a in factors]
    result = factors[0][0].new_empty(rows, sum(widths))
    for (g, a), start, width in zip(factors, itertools.accumulate([0, *widths]), widths):
        block = result[:, start : start + width].view(rows, g.shape[1], a.shape[1])
        torch.mul(g.unsqueeze(2), a.unsqueeze(1), out=block)
    return result
