"""Influence functions (Koh & Liang, 2017) with Captum's ``captum.influence`` names: the influence of a
training example ``z`` on a test example ``x`` is ``grad L(x)' H^-1 grad L(z)``, ``H`` the Hessian of the
total training loss with respect to the parameters of ``layers``.

Both methods keep a low-rank factor ``R`` with ``H^-1 ~ R R'`` from the top eigenpairs of ``H``, so that an
example's "embedding" ``grad L(x)' R`` makes every influence score a dot product: ``NaiveInfluenceFunction``
forms ``H`` explicitly (for small parameter counts, and as the reference for approximations),
``ArnoldiInfluenceFunction`` finds the eigenpairs from Hessian-vector products alone. The core is plain
functions over a flat parameter vector: per-example gradients with ``vmap(grad)``, the Hessian with
``torch.func.hessian``, Hessian-vector products with ``jvp`` of ``grad``, all through ``functional_call``, so
neither the model's parameters nor their ``.grad`` or ``requires_grad`` change.

Each example's loss is the loss function on that example alone (summed), and the Hessian is that of the sum of
the per-example losses, so ``loss_fn``'s reduction ("none", "sum" or "mean") gives the same result, as in
Captum, which rescales a "mean" batch loss by the batch size.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, hessian, jvp, vmap
from torch.utils.data import DataLoader, Dataset

from attribution._internal.canonical import describe
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int
from attribution._internal.progress import progress_bar
from attribution.influence.base import DataInfluence, KMostInfluentialResults, as_dataloader, split_batch

LossFn = Callable[[Any, Any], Tensor]
"""``loss_fn(outputs, labels)``; or None when the model's output is itself the loss."""
Batch = Sequence[Any]
"""Captum's batch: the model's inputs, then the labels last."""


# ---- the core: flat parameters, per-example gradients, the Hessian, the inverse-Hessian factor ----


def selected_parameters(model: nn.Module, layers: Sequence[str] | None) -> dict[str, Tensor]:
    """The parameters of the named ``layers`` (all of the model's when None), by their names in ``model``.

    Raises:
        ValueError: a name that is not a submodule, or layers without parameters.
    """
    if layers is None:
        chosen = dict(model.named_parameters())
    else:
        known = [name for name, _ in model.named_modules() if name]
        wanted: set[int] = set()
        for name in layers:
            if name not in known:
                raise ArgumentError(f"layers: {name!r} is not a submodule of the model; its submodules are {known}")
            wanted.update(id(p) for p in model.get_submodule(name).parameters())
        chosen = {name: p for name, p in model.named_parameters() if id(p) in wanted}
    if not chosen:
        raise ArgumentError(f"layers: {layers!r} hold no parameters; influence is taken over parameters")
    return {name: p.detach() for name, p in chosen.items()}


def _unflatten(flat: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    sizes = [p.numel() for p in like.values()]
    return {name: part.view_as(p) for (name, p), part in zip(like.items(), torch.split(flat, sizes))}


def _example_loss(
    model: nn.Module, like: dict[str, Tensor], loss_fn: LossFn | None
) -> Callable[[Tensor, tuple[Any, ...], Any], Tensor]:
    """``(flat parameters, one example's inputs, its label) -> its loss``, the example as a batch of one."""

    def loss(flat: Tensor, inputs: tuple[Any, ...], label: Any) -> Tensor:
        batched = tuple(x.unsqueeze(0) if isinstance(x, Tensor) else x for x in inputs)
        outputs = functional_call(model, _unflatten(flat, like), batched)
        value = outputs if loss_fn is None else loss_fn(outputs, _unsqueeze(label))
        return value.sum()

    return loss


def _unsqueeze(label: Any) -> Any:
    return label.unsqueeze(0) if isinstance(label, Tensor) else label


def _in_dims(values: Sequence[Any]) -> tuple[int | None, ...]:
    # Tensors are batched along their first dimension; anything else is shared by the whole batch.
    return tuple(0 if isinstance(v, Tensor) else None for v in values)


def per_example_gradients(model: nn.Module, params: dict[str, Tensor], batch: Batch, loss_fn: LossFn | None) -> Tensor:
    """``(batch size, number of parameters)``: each example's loss gradient, flattened."""
    inputs, labels = split_batch(batch)
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    per_example = vmap(
        grad(_example_loss(model, params, loss_fn)), in_dims=(None, _in_dims(inputs), _label_dim(labels))
    )
    with torch.no_grad():  # grad transforms ignore it; it keeps frozen parameters out of any graph
        gradients: Tensor = per_example(flat, inputs, labels)
    return gradients


def rng_kept(batches: Iterable[Batch]) -> Iterator[Batch]:
    """The batches, with the global RNG restored afterwards: iterating a DataLoader draws a seed from it."""
    with torch.random.fork_rng(devices=[]):
        yield from batches


def _label_dim(labels: Any) -> int | None:
    return 0 if isinstance(labels, Tensor) else None


def dataset_hessian(
    model: nn.Module, params: dict[str, Tensor], batches: Iterable[Batch], loss_fn: LossFn | None
) -> Tensor:
    """The Hessian of the summed per-example losses over ``batches``, ``(P, P)`` for ``P`` parameters."""
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    example_loss = _example_loss(model, params, loss_fn)
    total = flat.new_zeros(flat.numel(), flat.numel())
    for batch in rng_kept(batches):
        inputs, labels = split_batch(batch)
        summed = _summed_loss(example_loss, _in_dims(inputs), _label_dim(labels))
        with torch.no_grad():  # grad transforms ignore it; it keeps frozen parameters out of any graph
            total += hessian(summed)(flat, inputs, labels)
    return total


def _summed_loss(
    example_loss: Callable[[Tensor, tuple[Any, ...], Any], Tensor],
    input_dims: tuple[int | None, ...],
    label_dim: int | None,
) -> Callable[[Tensor, tuple[Any, ...], Any], Tensor]:
    losses = vmap(example_loss, in_dims=(None, input_dims, label_dim))
    return lambda theta, inputs, labels: losses(theta, inputs, labels).sum()


def inverse_hessian_factor(
    H: Tensor, projection_dim: int | None, hessian_reg: float, hessian_inverse_tol: float
) -> Tensor:
    """``R`` (P, k) with ``H^-1 ~ R R'``, from the top ``projection_dim`` eigenpairs of ``H + hessian_reg * I``
    whose eigenvalues exceed ``hessian_inverse_tol`` (small or negative ones are dropped, not inverted).

    Raises:
        ValueError: no eigenvalue above the tolerance.
    """
    H = (H + H.T) / 2  # symmetric up to rounding; eigh reads one triangle
    values, vectors = torch.linalg.eigh(H + hessian_reg * torch.eye(len(H), dtype=H.dtype, device=H.device))
    keep = values > hessian_inverse_tol
    values, vectors = values[keep], vectors[:, keep]
    if projection_dim is not None:
        values, vectors = values[-projection_dim:], vectors[:, -projection_dim:]
    if values.numel() == 0:
        raise ArgumentError(
            f"hessian_inverse_tol: no eigenvalue of the Hessian (+ hessian_reg={hessian_reg}) exceeds "
            f"{hessian_inverse_tol}, so it cannot be inverted; raise hessian_reg or lower hessian_inverse_tol"
        )
    factor: Tensor = vectors * values.rsqrt()
    return factor


def dataset_hvp(
    model: nn.Module, params: dict[str, Tensor], batches: Iterable[Batch], loss_fn: LossFn | None
) -> Callable[[Tensor], Tensor]:
    """``v -> H v``, ``H`` the Hessian of :func:`dataset_hessian`, without forming it (forward-over-reverse)."""
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    example_loss = _example_loss(model, params, loss_fn)

    def product(v: Tensor) -> Tensor:
        total = torch.zeros_like(v)
        for batch in rng_kept(batches):
            inputs, labels = split_batch(batch)
            summed = _summed_loss(example_loss, _in_dims(inputs), _label_dim(labels))
            with torch.no_grad():
                total += jvp(_gradient_at(summed, inputs, labels), (flat,), (v,))[1]
        return total

    return product


def _gradient_at(
    summed: Callable[[Tensor, tuple[Any, ...], Any], Tensor], inputs: tuple[Any, ...], labels: Any
) -> Callable[[Tensor], Tensor]:
    gradient = grad(summed)
    return lambda theta: gradient(theta, inputs, labels)


def arnoldi(hvp: Callable[[Tensor], Tensor], start: Tensor, steps: int, tol: float) -> tuple[Tensor, Tensor]:
    """An orthonormal basis ``Q`` (P, m) of the Krylov space of ``start`` (at most ``steps`` vectors; it stops
    when a new direction's norm falls below ``tol``) and the restriction ``Q' H Q`` (m, m).

    Raises:
        ValueError: a zero start vector.
    """
    norm = torch.linalg.vector_norm(start)
    if norm == 0:
        raise ArgumentError("arnoldi: the start vector is zero; the Krylov space is empty")
    basis = [start / norm]
    restriction = start.new_zeros(steps, steps)
    for k in range(steps):
        v = hvp(basis[k])
        for i, q in enumerate(basis):  # modified Gram-Schmidt
            restriction[i, k] = q @ v
            v = v - restriction[i, k] * q
        residual = torch.linalg.vector_norm(v)
        if k + 1 == steps or residual < tol:
            break
        restriction[k + 1, k] = residual
        basis.append(v / residual)
    m = len(basis)
    return torch.stack(basis, dim=1), restriction[:m, :m]


# ---- the classes: configuration, batching of the data, Captum's modes ----


def _load_state_dict(model: nn.Module, path: str) -> float:
    """Load a checkpoint saved as a state dict (possibly under ``"model_state_dict"``, possibly saved from a
    ``DataParallel`` with ``module.`` prefixes) into ``model``; return its ``"learning_rate"`` (default 1)."""
    checkpoint = torch.load(path, map_location="cpu")
    learning_rate = float(checkpoint.pop("learning_rate", 1.0))
    state = checkpoint.get("model_state_dict", checkpoint)
    state = {name.removeprefix("module."): value for name, value in state.items()}
    model.load_state_dict(state)
    return learning_rate


def _as_batches(data: Batch | DataLoader[Any], name: str) -> DataLoader[Any] | list[Batch]:
    """A single batch (a tuple, labels last) or a DataLoader of them, as something to iterate over."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)):
        split_batch(data, name)
        return [data]
    raise ArgumentTypeError(f"{name}: expected a tuple (inputs..., labels) or a DataLoader, got {describe(data)}")


def _with_progress(batches: Iterable[Batch], enabled: bool, description: str) -> Iterator[Batch]:
    total = len(batches) if isinstance(batches, (list, DataLoader)) else 0
    with progress_bar(enabled, total, description) as update:
        for batch in rng_kept(batches):
            yield batch
            if update is not None:
                update(1)


def _check_loss_fn(loss_fn: Any, name: str) -> None:
    if loss_fn is not None and not callable(loss_fn):
        raise ArgumentTypeError(
            f"{name}: expected a loss module or callable (outputs, labels), got {describe(loss_fn)}"
        )
    reduction = getattr(loss_fn, "reduction", "none")
    if reduction not in ("none", "sum", "mean"):
        raise ArgumentError(f"{name}: reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


def _check_float(value: Any, name: str, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ArgumentError(f"{name}: expected a finite number >= {minimum}, got {value!r}")


def _check_number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name}: expected a number, got {describe(value)}")


class InfluenceFunctionBase(DataInfluence):
    """Base of the influence-function methods (Captum's name): the data, the loss functions and the layers.

    Args:
        model: the trained model.
        train_dataset: the examples scored, a ``Dataset`` (batched by ``batch_size``) or a ``DataLoader``; a
            batch is a tuple whose last element holds the labels.
        checkpoint: a path to a state dict loaded into ``model`` with ``checkpoints_load_func`` (as Captum
            does); None uses the model's current parameters.
        checkpoints_load_func: ``(model, path) -> learning rate``, loading the checkpoint.
        layers: names of the submodules whose parameters the gradients and the Hessian are taken over
            (None: all parameters).
        loss_fn: ``loss_fn(outputs, labels)``, with reduction "none", "sum" or "mean"; None when the
            model's output is the per-example loss.
        batch_size: the batch size for a ``Dataset``.
        hessian_dataset: the data of the Hessian (default ``train_dataset``).
        test_loss_fn: the loss of the test examples (default ``loss_fn``).
        sample_wise_grads_per_batch: accepted for Captum's signature; per-example gradients always come from
            ``torch.func.vmap``, whatever the loss's reduction.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset[Any] | DataLoader[Any],
        checkpoint: str | None = None,
        checkpoints_load_func: Callable[[nn.Module, str], float] = _load_state_dict,
        layers: list[str] | None = None,
        loss_fn: LossFn | None = None,
        batch_size: int | None = 1,
        hessian_dataset: Dataset[Any] | DataLoader[Any] | None = None,
        test_loss_fn: LossFn | None = None,
        sample_wise_grads_per_batch: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"model: expected a torch.nn.Module, got {describe(model)}")
        if layers is not None and (
            not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers) or not layers
        ):
            raise ArgumentTypeError(f"layers: expected None or a non-empty list of layer names, got {describe(layers)}")
        _check_loss_fn(loss_fn, "loss_fn")
        _check_loss_fn(test_loss_fn, "test_loss_fn")
        super().__init__(model, train_dataset)
        self.checkpoint = checkpoint
        self.checkpoints_load_func = checkpoints_load_func
        if checkpoint is not None:
            checkpoints_load_func(model, checkpoint)
        self.layers = None if layers is None else list(layers)
        self.params = selected_parameters(model, self.layers)
        self.loss_fn = loss_fn
        self.test_loss_fn = loss_fn if test_loss_fn is None else test_loss_fn
        self.batch_size = batch_size
        self.sample_wise_grads_per_batch = sample_wise_grads_per_batch
        self.train_dataloader = as_dataloader(train_dataset, batch_size, "train_dataset")  # type: ignore[arg-type]
        self.hessian_dataloader = (
            self.train_dataloader
            if hessian_dataset is None
            else as_dataloader(hessian_dataset, batch_size, "hessian_dataset")  # type: ignore[arg-type]
        )
        self.model_device = next(iter(self.params.values())).device

    @abstractmethod
    def self_influence(
        self, inputs_dataset: Batch | DataLoader[Any] | None = None, show_progress: bool = False
    ) -> Tensor:
        """The influence of each example on itself."""

    @abstractmethod
    def _influence(self, inputs: Batch | DataLoader[Any], show_progress: bool = False) -> Tensor:
        """``(test examples, training examples)`` influence scores."""

    def _get_k_most_influential(
        self, inputs: Batch | DataLoader[Any], k: int = 5, proponents: bool = True, show_progress: bool = False
    ) -> KMostInfluentialResults:
        scores = self._influence(inputs, show_progress)
        values, indices = scores.topk(min(k, scores.shape[1]), dim=1, largest=proponents)
        return KMostInfluentialResults(indices, values)

    @overload  # type: ignore[override]
    def influence(
        self, inputs: Batch | DataLoader[Any], k: None = None, proponents: bool = True, show_progress: bool = False
    ) -> Tensor: ...

    @overload
    def influence(
        self, inputs: Batch | DataLoader[Any], k: int, proponents: bool = True, show_progress: bool = False
    ) -> KMostInfluentialResults: ...

    def influence(
        self,
        inputs: Batch | DataLoader[Any],
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> Tensor | KMostInfluentialResults:
        """The influence of every training example on each test example, or the ``k`` most influential.

        Args:
            inputs: the test examples: a batch (a tuple, labels last) or a DataLoader of batches.
            k: None for all scores; else the number of proponents (or opponents) per test example.
            proponents: the ``k`` highest scores (True) or the ``k`` lowest (False).
            show_progress: show a progress bar over the training batches.

        Returns:
            With ``k`` None, ``(test examples, training examples)`` scores; else
            :class:`KMostInfluentialResults` ``(indices, influence_scores)``, each ``(test examples, k)``.

        Raises:
            TypeError: inputs that are not a tuple batch or a DataLoader.
            ValueError: a bad ``k``.
        """
        check_int(k, "k", allow_none=True)
        if k is None:
            return self._influence(inputs, show_progress)
        return self._get_k_most_influential(inputs, k, proponents, show_progress)


class IntermediateQuantitiesInfluenceFunction(InfluenceFunctionBase):
    """An influence function whose scores are dot products of per-example vectors (Captum's name)."""

    @abstractmethod
    def compute_intermediate_quantities(
        self,
        inputs_dataset: Batch | DataLoader[Any],
        aggregate: bool = False,
        show_progress: bool = False,
        return_on_cpu: bool = True,
        test: bool = False,
    ) -> Tensor:
        """``(examples, d)`` vectors whose dot products are the influence scores."""

    def _influence(self, inputs: Batch | DataLoader[Any], show_progress: bool = False) -> Tensor:
        test = self.compute_intermediate_quantities(inputs, test=True, return_on_cpu=False)
        train = self.compute_intermediate_quantities(
            self.train_dataloader, show_progress=show_progress, return_on_cpu=False
        )
        return (test @ train.T).cpu()

    def self_influence(
        self, inputs_dataset: Batch | DataLoader[Any] | None = None, show_progress: bool = False
    ) -> Tensor:
        """The influence of each example of ``inputs_dataset`` (default: the training set) on itself, the
        squared norm of its vector."""
        data = self.train_dataloader if inputs_dataset is None else inputs_dataset
        vectors = self.compute_intermediate_quantities(data, show_progress=show_progress)
        return (vectors**2).sum(dim=1)


class _LowRankInfluenceFunction(IntermediateQuantitiesInfluenceFunction):
    """An influence function with ``H^-1 ~ R R'`` (``R``: parameters x d); an example's vector is
    ``grad L(x)' R``. Subclasses set ``R``."""

    R: Tensor

    def compute_intermediate_quantities(
        self,
        inputs_dataset: Batch | DataLoader[Any],
        aggregate: bool = False,
        show_progress: bool = False,
        return_on_cpu: bool = True,
        test: bool = False,
    ) -> Tensor:
        """Each example's vector ``grad L(x)' R``, whose dot products are the influence scores.

        Args:
            inputs_dataset: a batch (a tuple, labels last) or a DataLoader of batches.
            aggregate: return the sum of the vectors, ``(1, d)`` (the influence on a total loss).
            show_progress: show a progress bar over the batches.
            return_on_cpu: return on the CPU rather than the model's device.
            test: use ``test_loss_fn`` instead of ``loss_fn``.

        Returns:
            ``(examples, d)`` vectors (``d`` the number of eigenpairs kept), or ``(1, d)`` with ``aggregate``.
        """
        batches = _as_batches(inputs_dataset, "inputs_dataset")
        loss_fn = self.test_loss_fn if test else self.loss_fn
        R = self.R.to(self.model_device)
        vectors = [
            per_example_gradients(self.model, self.params, batch, loss_fn) @ R
            for batch in _with_progress(batches, show_progress, "intermediate quantities over batches")
        ]
        result = torch.cat(vectors) if vectors else R.new_zeros(0, R.shape[1])
        if aggregate:
            result = result.sum(dim=0, keepdim=True)
        return result.cpu() if return_on_cpu else result


class NaiveInfluenceFunction(_LowRankInfluenceFunction):
    """Influence functions with the Hessian formed explicitly (Captum's name); for models (or ``layers``) with
    few parameters, and as the exact reference for approximations.

    ``H`` is the Hessian of the total loss over ``hessian_dataset`` (default: the training set); the inverse
    is ``R R'`` with ``R = V diag(l)^-1/2``, ``(l, V)`` the top ``projection_dim`` eigenpairs of
    ``H + hessian_reg * I`` above ``hessian_inverse_tol``. The score of training example ``z`` on test example
    ``x`` is ``grad L_test(x)' R R' grad L(z)`` (positive: ``z`` helps ``x``, Captum's sign).

    Args (besides :class:`InfluenceFunctionBase`'s):
        projection_dim: how many eigenpairs to keep (None: all above the tolerance).
        seed: accepted for Captum's signature; nothing here is random and the global RNG is left alone.
        hessian_reg: added to the Hessian's diagonal before the eigendecomposition.
        hessian_inverse_tol: eigenvalues at or below it are dropped rather than inverted.
        projection_on_cpu: keep ``R`` on the CPU.
        show_progress: show a progress bar while the Hessian is formed.

    Raises:
        TypeError, ValueError: bad arguments, named; ValueError also when no eigenvalue exceeds the tolerance.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from attribution.influence import NaiveInfluenceFunction
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(3, 1)
        >>> train_set = TensorDataset(torch.randn(12, 3), torch.randn(12, 1))
        >>> fn = NaiveInfluenceFunction(model, train_set, loss_fn=nn.MSELoss(reduction="none"), hessian_reg=1e-3)
        >>> fn.influence((torch.randn(2, 3), torch.randn(2, 1))).shape  # (test examples, training examples)
        torch.Size([2, 12])
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset[Any] | DataLoader[Any],
        checkpoint: str | None = None,
        checkpoints_load_func: Callable[[nn.Module, str], float] = _load_state_dict,
        layers: list[str] | None = None,
        loss_fn: LossFn | None = None,
        batch_size: int | None = 1,
        hessian_dataset: Dataset[Any] | DataLoader[Any] | None = None,
        test_loss_fn: LossFn | None = None,
        sample_wise_grads_per_batch: bool = False,
        projection_dim: int | None = 50,
        seed: int = 42,
        hessian_reg: float = 1e-6,
        hessian_inverse_tol: float = 1e-5,
        projection_on_cpu: bool = True,
        show_progress: bool = False,
    ) -> None:
        check_int(projection_dim, "projection_dim", allow_none=True)
        _check_float(hessian_reg, "hessian_reg")
        _check_number(hessian_inverse_tol, "hessian_inverse_tol")
        super().__init__(
            model,
            train_dataset,
            checkpoint,
            checkpoints_load_func,
            layers,
            loss_fn,
            batch_size,
            hessian_dataset,
            test_loss_fn,
            sample_wise_grads_per_batch,
        )
        self.projection_dim = projection_dim
        self.seed = seed
        self.hessian_reg = hessian_reg
        self.hessian_inverse_tol = hessian_inverse_tol
        self.projection_on_cpu = projection_on_cpu
        batches = _with_progress(self.hessian_dataloader, show_progress, "Hessian over hessian_dataset batches")
        H = dataset_hessian(model, self.params, batches, loss_fn)
        R = inverse_hessian_factor(H, projection_dim, hessian_reg, hessian_inverse_tol)
        self.R = R.cpu() if projection_on_cpu else R


class ArnoldiInfluenceFunction(_LowRankInfluenceFunction):
    """Influence functions with the top Hessian eigenpairs from an Arnoldi iteration (Schioppa et al., 2022;
    Captum's name): only Hessian-vector products, never the Hessian, so it scales to many parameters.

    The iteration builds an orthonormal basis ``Q`` of up to ``arnoldi_dim`` vectors of the Krylov space of a
    random start vector (drawn from ``seed`` with a private generator), and ``R = Q V diag(l)^-1/2`` from the top
    ``projection_dim`` eigenpairs ``(l, V)`` of ``Q' H Q + hessian_reg * I`` above ``hessian_inverse_tol``. When
    ``arnoldi_dim`` reaches the number of parameters it equals :class:`NaiveInfluenceFunction`. (Captum drops
    the basis' last vector before the eigendecomposition; this keeps it.)

    Args (besides :class:`InfluenceFunctionBase`'s):
        projection_dim: how many eigenpairs to keep.
        seed: the seed of the start vector.
        arnoldi_dim: the most basis vectors (Hessian-vector products over ``hessian_dataset``).
        arnoldi_tol: stop when a new direction's norm falls below it.
        hessian_reg: added to the restricted Hessian's diagonal.
        hessian_inverse_tol: eigenvalues at or below it are dropped rather than inverted.
        projection_on_cpu: keep ``R`` on the CPU.
        show_progress: show a progress bar over the iteration.

    Raises:
        TypeError, ValueError: bad arguments, named; ValueError also when no eigenvalue exceeds the tolerance.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from attribution.influence import ArnoldiInfluenceFunction
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        >>> train_set = TensorDataset(torch.randn(12, 4), torch.randn(12, 1))
        >>> fn = ArnoldiInfluenceFunction(model, train_set, loss_fn=nn.MSELoss(reduction="none"), arnoldi_dim=20,
        ...                               projection_dim=5)
        >>> fn.influence((torch.randn(2, 4), torch.randn(2, 1)), k=3).indices.shape  # 3 proponents each
        torch.Size([2, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset[Any] | DataLoader[Any],
        checkpoint: str | None = None,
        checkpoints_load_func: Callable[[nn.Module, str], float] = _load_state_dict,
        layers: list[str] | None = None,
        loss_fn: LossFn | None = None,
        batch_size: int | None = 1,
        hessian_dataset: Dataset[Any] | DataLoader[Any] | None = None,
        test_loss_fn: LossFn | None = None,
        sample_wise_grads_per_batch: bool = False,
        projection_dim: int = 50,
        seed: int = 0,
        arnoldi_dim: int = 200,
        arnoldi_tol: float = 1e-1,
        hessian_reg: float = 1e-3,
        hessian_inverse_tol: float = 1e-4,
        projection_on_cpu: bool = True,
        show_progress: bool = False,
    ) -> None:
        check_int(projection_dim, "projection_dim")
        check_int(arnoldi_dim, "arnoldi_dim")
        check_int(seed, "seed", minimum=0)
        _check_float(arnoldi_tol, "arnoldi_tol")
        _check_float(hessian_reg, "hessian_reg")
        _check_number(hessian_inverse_tol, "hessian_inverse_tol")
        super().__init__(
            model,
            train_dataset,
            checkpoint,
            checkpoints_load_func,
            layers,
            loss_fn,
            batch_size,
            hessian_dataset,
            test_loss_fn,
            sample_wise_grads_per_batch,
        )
        self.projection_dim = projection_dim
        self.seed = seed
        self.arnoldi_dim = arnoldi_dim
        self.arnoldi_tol = arnoldi_tol
        self.hessian_reg = hessian_reg
        self.hessian_inverse_tol = hessian_inverse_tol
        self.projection_on_cpu = projection_on_cpu
        flat = torch.cat([p.reshape(-1) for p in self.params.values()])
        generator = torch.Generator(device=flat.device).manual_seed(seed)
        start = torch.randn(flat.shape, generator=generator, device=flat.device, dtype=flat.dtype)
        hvp = dataset_hvp(model, self.params, self.hessian_dataloader, loss_fn)
        with progress_bar(show_progress, arnoldi_dim, "Arnoldi iteration") as update:
            counted = hvp if update is None else _counting(hvp, update)
            basis, restriction = arnoldi(counted, start, arnoldi_dim, arnoldi_tol)
        R = basis @ inverse_hessian_factor(restriction, projection_dim, hessian_reg, hessian_inverse_tol)
        self.R = R.cpu() if projection_on_cpu else R


def _counting(hvp: Callable[[Tensor], Tensor], update: Callable[[int], None]) -> Callable[[Tensor], Tensor]:
    def counted(v: Tensor) -> Tensor:
        update(1)
        return hvp(v)

    return counted
