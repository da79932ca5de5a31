"""TracIn with checkpoints (Pruthi et al., 2020): Captum's ``TracInCPBase`` and ``TracInCP``.

The influence of a training example on a test example is the sum over checkpoints of the learning rate
times the dot product of their loss gradients. The computation lives in
:mod:`attribution.influence._gradients`; these classes hold the configuration.

Checkpoints are loaded into ``model`` through ``checkpoints_load_func`` (as in Captum); each call restores
the model's original parameters and buffers when it is done.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution.influence import _gradients as core
from attribution.influence.base import DataInfluence, KMostInfluentialResults, as_dataloader

TensorOrResults = Tensor | KMostInfluentialResults


class TracInCPBase(DataInfluence):
    """What the TracIn methods share: checkpoints, their load function, the losses and the training batches.

    Args:
        model: the model; checkpoints are loaded into it during each call, then its state is restored.
        train_dataset: the training examples, a ``Dataset`` (batched by ``batch_size``) or a ``DataLoader``
            of batches ``(inputs..., labels)``; its order defines the training indices.
        checkpoints: a directory (its files), a glob pattern, or a list of paths, naturally sorted
            ("ckpt-10" after "ckpt-9"); or an iterable of objects that ``checkpoints_load_func`` accepts.
        checkpoints_load_func: ``(model, checkpoint) -> learning rate``; it loads the checkpoint into the
            model. Default: a ``torch.save``'d state dict, learning rate its ``"learning_rate"`` entry or 1.0.
        loss_fn: the training loss ``loss_fn(output, labels)``; None: the sum of the model's output.
        batch_size: the batch size for a ``Dataset`` (ignored for a ``DataLoader``).
        test_loss_fn: the loss of the test examples (default ``loss_fn``).

    Raises:
        TypeError: a ``train_dataset``, ``checkpoints`` or ``checkpoints_load_func`` of the wrong type.
        ValueError: no checkpoint found, or a bad ``batch_size``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset[Any] | DataLoader[Any],
        checkpoints: str | list[str] | Iterator[Any],
        checkpoints_load_func: core.LoadFunc = core.load_flexible_state_dict,
        loss_fn: core.LossFn | None = None,
        batch_size: int | None = 1,
        test_loss_fn: core.LossFn | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"model: expected a torch.nn.Module, got {describe(model)}")
        if not callable(checkpoints_load_func):
            raise ArgumentTypeError(
                f"checkpoints_load_func: expected a callable (model, checkpoint) -> learning rate, got "
                f"{describe(checkpoints_load_func)}"
            )
        super().__init__(model, train_dataset)
        self.checkpoints = checkpoints  # the setter resolves it
        self.checkpoints_load_func = checkpoints_load_func
        self.loss_fn = loss_fn
        self.test_loss_fn = loss_fn if test_loss_fn is None else test_loss_fn
        self.batch_size = batch_size
        # as_dataloader rejects a batch size that is not an int >= 1 when it has to batch a Dataset.
        self.train_dataloader = as_dataloader(train_dataset, cast(int, batch_size))

    @property
    def checkpoints(self) -> list[Any]:
        """The checkpoints, in the order they are summed."""
        return self._checkpoints

    @checkpoints.setter
    def checkpoints(self, checkpoints: str | list[str] | Iterator[Any]) -> None:
        self._checkpoints = core.resolve_checkpoints(checkpoints)

    @abstractmethod
    def self_influence(
        self,
        inputs: tuple[Any, ...] | DataLoader[Any] | None = None,
        show_progress: bool = False,
        outer_loop_by_checkpoints: bool = False,
    ) -> Tensor:
        """Each example's influence on itself (default: the training examples), a 1D tensor."""

    @abstractmethod
    def influence(  # type: ignore[override]  # Captum's signature, narrower than DataInfluence's
        self,
        inputs: tuple[Any, ...] | DataLoader[Any],
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> TensorOrResults:
        """Influence scores (``k`` None) or the ``k`` most influential training examples per test example."""

    def _k_most(self, scores: Tensor, k: int, proponents: bool) -> KMostInfluentialResults:
        check_int(k, "k")
        return KMostInfluentialResults(*core.top_k(scores, k, proponents))

    def _influence_of(
        self,
        inputs: Any,
        test_features: core.Features,
        train_features: core.Features,
        k: int | None,
        proponents: bool,
        show_progress: bool,
        aggregate: bool = False,
    ) -> TensorOrResults:
        """What every subclass's ``influence`` does, given how it turns a batch into per-example factors."""
        query = core.TracInQuery(
            self.model,
            self.checkpoints,
            self.checkpoints_load_func,
            core.as_batches(inputs),
            self.train_dataloader,
            test_features,
            train_features,
            aggregate=aggregate,
            show_progress=show_progress,
            description=core.influence_description(self.get_name(), k, proponents),
        )
        if k is None:
            return core.tracin_influence(query)
        check_int(k, "k")
        return KMostInfluentialResults(*core.tracin_top_k(query, k, proponents))

    def _self_influence_of(
        self, inputs: Any, features: core.Features, show_progress: bool, outer_loop_by_checkpoints: bool
    ) -> Tensor:
        """What every subclass's ``self_influence`` does, given its per-example factors."""
        batches = self.train_dataloader if inputs is None else core.as_batches(inputs)
        return core.tracin_self_influence(
            self.model,
            self.checkpoints,
            self.checkpoints_load_func,
            batches,
            features,
            outer_loop_by_checkpoints=outer_loop_by_checkpoints,
            show_progress=show_progress,
            description=self.get_name(),
        )


class TracInCP(TracInCPBase):
    """TracIn over the gradients of all parameters (or of ``layers``), one checkpoint at a time.

    Per-example gradients come from one ``torch.func.vmap(grad(...))`` per batch; memory is
    ``batch_size x (number of parameters)`` per batch, plus the test examples' gradients.

    Args:
        model, train_dataset, checkpoints, checkpoints_load_func, batch_size: as :class:`TracInCPBase`.
        layers: names of submodules whose parameters are used (default: every parameter that requires grad).
        loss_fn: with ``sample_wise_grads_per_batch=False`` a per-example loss (``reduction="none"``);
            with True a "sum" or "mean" reduction. Each example's loss is evaluated alone, so the
            reduction only has to match the flag, as Captum checks.
        test_loss_fn: the test examples' loss, under the same rule.
        sample_wise_grads_per_batch: which reduction ``loss_fn`` has (see above).

    Raises:
        ValueError: an unknown layer name, or a loss reduction that does not match the flag.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from attribution.influence import TracInCP
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(3, 1)
        >>> train_set = TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
        >>> folder = tempfile.mkdtemp()
        >>> torch.save(model.state_dict(), f"{folder}/epoch-1.pt")  # one checkpoint of the trajectory
        >>> tracin = TracInCP(model, train_set, folder, loss_fn=nn.MSELoss(reduction="none"), batch_size=4)
        >>> tracin.influence((torch.randn(2, 3), torch.randn(2, 1))).shape  # (test examples, training examples)
        torch.Size([2, 8])
        >>> tracin.influence((torch.randn(2, 3), torch.randn(2, 1)), k=3).indices.shape  # 3 proponents each
        torch.Size([2, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset[Any] | DataLoader[Any],
        checkpoints: str | list[str] | Iterator[Any],
        checkpoints_load_func: core.LoadFunc = core.load_flexible_state_dict,
        layers: list[str] | None = None,
        loss_fn: core.LossFn | None = None,
        batch_size: int | None = 1,
        test_loss_fn: core.LossFn | None = None,
        sample_wise_grads_per_batch: bool = False,
    ) -> None:
        super().__init__(model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size, test_loss_fn)
        self.sample_wise_grads_per_batch = sample_wise_grads_per_batch
        allowed, hint = (
            (("sum", "mean"), " when sample_wise_grads_per_batch is True")
            if sample_wise_grads_per_batch
            else (("none",), " (a per-example loss) when sample_wise_grads_per_batch is False")
        )
        self.reduction_type = core.check_reduction(loss_fn, "loss_fn", allowed, hint)
        self.test_reduction_type = (
            self.reduction_type
            if test_loss_fn is None
            else core.check_reduction(test_loss_fn, "test_loss_fn", allowed, hint)
        )
        self.layers = layers
        self.parameter_names = _parameter_names(model, layers)

    def _gradients(self, loss_fn: core.LossFn | None, batch: Any) -> tuple[Tensor]:
        return (core.per_example_gradients(self.model, self.parameter_names, batch, loss_fn),)

    def influence(  # type: ignore[override]  # Captum's TracInCP adds ``aggregate``
        self,
        inputs: tuple[Any, ...] | DataLoader[Any],
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
        aggregate: bool = False,
    ) -> TensorOrResults:
        """The influence of every training example on every test example, or the ``k`` most influential.

        Args:
            inputs: one test batch ``(inputs..., labels)`` or a DataLoader of such batches.
            k: None: return all scores, shape (n_test, n_train). An int: return
                ``KMostInfluentialResults(indices, influence_scores)``, each (n_test, k), sorted.
            proponents: the largest scores (True) or the smallest, the opponents (False).
            show_progress: a progress bar over the training batches (Captum's text).
            aggregate: sum the test examples' gradients first: one row, the influence on their total loss.

        Raises:
            ValueError: no ``inputs`` or a bad ``k``.
            TypeError: ``inputs`` of the wrong type.
        """
        test, train = partial(self._gradients, self.test_loss_fn), partial(self._gradients, self.loss_fn)
        return self._influence_of(inputs, test, train, k, proponents, show_progress, aggregate)

    def self_influence(
        self,
        inputs: tuple[Any, ...] | DataLoader[Any] | None = None,
        show_progress: bool = False,
        outer_loop_by_checkpoints: bool = False,
    ) -> Tensor:
        """``sum_c lr_c * |grad loss(z)|^2`` for each example of ``inputs`` (default: the training set).

        Args:
            inputs: one batch, a DataLoader, or None for ``train_dataset``.
            show_progress: a progress bar.
            outer_loop_by_checkpoints: Captum's choice of progress bars (one over checkpoints with one over
                batches inside, or one over batches); each checkpoint is loaded once either way.
        """
        features = partial(self._gradients, self.loss_fn)
        return self._self_influence_of(inputs, features, show_progress, outer_loop_by_checkpoints)

    def compute_intermediate_quantities(
        self, inputs: tuple[Any, ...] | DataLoader[Any], aggregate: bool = False
    ) -> Tensor:
        """Per example, its gradients at every checkpoint times that checkpoint's learning rate, concatenated
        (Captum's layout: shape (n, checkpoints x parameters); ``aggregate`` sums the examples: one row)."""
        rows = []
        with core.loaded_checkpoints(self.model, self.checkpoints, self.checkpoints_load_func) as rates:
            for learning_rate in rates():
                (grads,) = core.batch_features(core.as_batches(inputs), partial(self._gradients, self.loss_fn))
                rows.append(learning_rate * (grads.sum(dim=0, keepdim=True) if aggregate else grads))
        return torch.cat(rows, dim=1)


def _parameter_names(model: nn.Module, layers: list[str] | None) -> list[str]:
    """The parameters TracInCP differentiates: those of ``layers``, else all that require grad."""
    if layers is None:
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        if not names:
            raise ArgumentError("model: no parameter requires grad; pass `layers` to choose parameters")
        return names
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ArgumentError(f"layers: expected a non-empty list of module names, got {layers!r}")
    names = []
    for layer in layers:
        prefix = f"{layer}." if layer else ""
        owned = [prefix + name for name, _ in core.submodule(model, layer, "layers").named_parameters()]
        if not owned:
            raise ArgumentError(f"layers: module {layer!r} has no parameters")
        names.extend(n for n in owned if n not in names)
    return names
