"""What the surrogate methods fit and call: batched linear solvers, and adapters for Captum-style callables.

Interpretable models are batched, ``fit(X (n, S, F), y (n, S), weights (n, S)) -> (coef (n, F), intercept
(n,))`` for every example at once (the solvers below; the classes are in :mod:`attribution.surrogate`), or
Captum-style, ``fit(DataLoader)`` then ``representation()``, fitted once per example (:func:`model_fit`).
User functions are batched or Captum's per-sample ones (:func:`function_form`); the adapters below turn
either into the batched callables the core runs, on copies ``(P, *x.shape)`` and samples ``(P, rows, F)``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import numbers
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from attribution._canonical import TensorOrTuple, describe
from attribution._checks import ArgumentError, ArgumentTypeError

Fit = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``fit(X (n, S, F), y (n, S), weights (n, S)) -> (coef (n, F), intercept (n,))``."""

Weigh = Callable[[tuple[Tensor, ...], Tensor], Tensor]
"""``weigh(copies (each (P, *x.shape)), design (P, rows, F)) -> weights (P, rows)``."""

# --------------------------------------------------------------------------- batched weighted linear solvers


def _fit_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _centered(X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Weighted-centered data scaled by sqrt(weight): ``(A, b, x_mean, y_mean, total_weight)``."""
    dtype = _fit_dtype(X.device)
    X, y, weights = X.to(dtype), y.to(dtype), weights.to(dtype)
    total = weights.sum(1)
    x_mean = (weights[..., None] * X).sum(1) / total[:, None]
    y_mean = (weights * y).sum(1) / total
    root = weights.sqrt()
    return (X - x_mean[:, None]) * root[..., None], (y - y_mean[:, None]) * root, x_mean, y_mean, total


def _result(coef: Tensor, x_mean: Tensor, y_mean: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    dtype = y.dtype if y.is_floating_point() else torch.float32
    return coef.to(dtype), (y_mean - (x_mean * coef).sum(-1)).to(dtype)


def least_squares(X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted least squares with an intercept, per example; the minimum-norm solution when rank-deficient.

    Args:
        X: ``(n, S, F)`` designs; y: ``(n, S)`` targets; weights: ``(n, S)`` sample weights > 0.

    Returns:
        ``(coef (n, F), intercept (n,))``.
    """
    A, b, x_mean, y_mean, _ = _centered(X, y, weights)
    coef = (torch.linalg.pinv(A) @ b[..., None])[..., 0]
    return _result(coef, x_mean, y_mean, y)


def ridge(X: Tensor, y: Tensor, weights: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Weighted ridge regression with an intercept: ``sum_i w_i (y_i - X_i beta - c)^2 + alpha |beta|^2``."""
    A, b, x_mean, y_mean, _ = _centered(X, y, weights)
    samples, count = A.shape[-2:]
    if count <= samples:
        eye = torch.eye(count, dtype=A.dtype, device=A.device)
        coef = torch.linalg.solve(A.mT @ A + alpha * eye, A.mT @ b[..., None])[..., 0]
    else:  # the dual form needs only an S x S system
        eye = torch.eye(samples, dtype=A.dtype, device=A.device)
        coef = (A.mT @ torch.linalg.solve(A @ A.mT + alpha * eye, b[..., None]))[..., 0]
    return _result(coef, x_mean, y_mean, y)


def lasso(
    X: Tensor, y: Tensor, weights: Tensor, alpha: float, *, tol: float = 1e-7, max_iter: int = 10_000
) -> tuple[Tensor, Tensor]:
    """Weighted lasso with an intercept (scikit-learn's objective with ``sample_weight``):
    ``1 / (2 sum(w)) * sum_i w_i (y_i - X_i beta - c)^2 + alpha |beta|_1``.

    Solved by FISTA with adaptive restart on the weighted-centered data, all examples at once.  Every
    10 iterations the duality gap is checked (one device sync); iteration stops when it is below
    ``tol * |y_centered|^2`` for every example (scikit-learn's criterion, there with ``tol=1e-4``).
    """
    A, b, x_mean, y_mean, total = _centered(X, y, weights)
    samples, count = A.shape[-2:]
    lam = (alpha * total)[:, None]  # the same problem scaled by sum(w): 0.5 |b - A beta|^2 + lam |beta|_1
    corr = (A.mT @ b[..., None])[..., 0]
    step = 1 / torch.linalg.matrix_norm(A, ord=2).square().clamp_min(torch.finfo(A.dtype).tiny)[:, None]
    if count <= samples:
        gram = A.mT @ A
        at_residual = lambda beta: corr - (gram @ beta[..., None])[..., 0]  # noqa: E731
    else:  # no F x F Gram matrix for many features
        at_residual = lambda beta: (A.mT @ (b - (A @ beta[..., None])[..., 0])[..., None])[..., 0]  # noqa: E731
    bb = b.square().sum(-1)

    def gap(beta: Tensor) -> Tensor:
        a_r = at_residual(beta)  # A^T r, with r = b - A beta
        r_b = bb - (beta * corr).sum(-1)
        r_r = r_b - (beta * a_r).sum(-1)
        s = torch.clamp(lam[:, 0] / a_r.abs().amax(-1).clamp_min(torch.finfo(A.dtype).tiny), max=1.0)
        return 0.5 * r_r + lam[:, 0] * beta.abs().sum(-1) - (s * r_b - 0.5 * s.square() * r_r)

    beta = torch.zeros_like(corr)
    z, t = beta, torch.ones_like(lam)
    for iteration in range(1, max_iter + 1):
        v = z + step * at_residual(z)
        new = v.sign() * (v.abs() - lam * step).clamp_min(0)
        restart = ((z - new) * (new - beta)).sum(-1, keepdim=True) > 0  # momentum points uphill
        t = torch.where(restart, 1.0, t)
        t_next = (1 + torch.sqrt(1 + 4 * t.square())) / 2
        z = new + torch.where(restart, 0.0, (t - 1) / t_next) * (new - beta)
        beta, t = new, t_next
        if iteration % 10 == 0 and bool((gap(beta) <= tol * bb).all()):
            break
    else:
        warnings.warn(
            f"lasso: no convergence to tol={tol} in max_iter={max_iter} iterations; "
            "raise max_iter or alpha, or use more samples",
            stacklevel=2,
        )
    return _result(beta, x_mean, y_mean, y)


# --------------------------------------------------------------------------- Captum-style models


@dataclass(frozen=True)
class CaptumModelFit:
    """A Captum-style ``interpretable_model`` as a batched fit: one ``fit(DataLoader)`` per example (the
    model holds one fitted state at a time), each followed by ``representation()``.

    Returns ``(representations (n, *representation.shape), intercepts (n,))``; as in Captum the data are
    float32, in one batch of ``(X, y, weights)``.
    """

    model: Any

    def __call__(self, X: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        representations, intercepts = [], []
        for r in range(X.shape[0]):
            data = TensorDataset(*(t[r].float().contiguous() for t in (X, y, weights)))
            # Iterating a DataLoader draws a seed from its generator: a private one leaves the global RNG alone.
            self.model.fit(DataLoader(data, batch_size=X.shape[1], generator=torch.Generator()))
            representation = self.model.representation()
            if not isinstance(representation, Tensor):
                raise ArgumentTypeError(
                    f"interpretable_model: representation() must return a tensor, got {describe(representation)}"
                )
            bias = self.model.bias() if callable(getattr(self.model, "bias", None)) else None
            representations.append(representation.detach().to(X.device))
            intercepts.append(bias.detach().reshape(-1)[0].cpu() if isinstance(bias, Tensor) else torch.zeros(()))
        return torch.stack(representations), torch.stack(intercepts).to(X.device)


def model_fit(model: Any) -> Fit:
    """The batched fit of ``interpretable_model``: a Captum-style model (it has ``representation()``) is
    wrapped in :class:`CaptumModelFit`; any other must have a batched ``fit(X, y, weights)``.

    Raises:
        ArgumentTypeError: a model of neither kind.
    """
    if callable(getattr(model, "representation", None)) and callable(getattr(model, "fit", None)):
        return CaptumModelFit(model)
    fit = getattr(model, "fit", None)
    try:
        inspect.signature(fit).bind(None, None, None)
    except (TypeError, ValueError):
        raise ArgumentTypeError(
            f"interpretable_model: expected an object with fit(X (n, S, F), y (n, S), weights (n, S)) "
            f"-> (coef (n, F), intercept (n,)) (batched), such as Lasso(), Ridge() or LinearRegression() from "
            f"attribution.surrogate, or a Captum-style model with fit(DataLoader) and representation() "
            f"(such as Captum's SkLearnLasso), got {describe(model)}"
        ) from None
    return fit


# --------------------------------------------------------------------------- the two forms of user functions

BATCHED = "batched"
PER_SAMPLE = "per_sample"
_FORM = "__surrogate_form__"


def _marked(func: Callable[..., Any], form: str) -> Callable[..., Any]:
    if not callable(func):
        raise ArgumentTypeError(f"func: expected a callable to mark as {form}, got {describe(func)}")

    @functools.wraps(func)
    def marked(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    setattr(marked, _FORM, form)  # on a wrapper: the caller's function stays as it was
    return marked


def batched(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` marked as taking the batched form: every copy of every example in one call."""
    return _marked(func, BATCHED)


def per_sample(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` marked as taking Captum's per-sample form: one copy of one example per call."""
    return _marked(func, PER_SAMPLE)


def function_form(func: Callable[..., Any], default: str) -> str:
    """Which form ``func`` takes: the one it was marked with (:func:`batched`, :func:`per_sample`); else
    per-sample for a generator function or one that accepts ``**kwargs`` (Captum passes keyword arguments
    to such functions, so a Captum-style one accepts them); else ``default``."""
    marked = getattr(func, _FORM, None)
    if marked is not None:
        return marked
    if inspect.isgeneratorfunction(inspect.unwrap(func)):
        return PER_SAMPLE
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return default
    return PER_SAMPLE if any(p.kind is p.VAR_KEYWORD for p in parameters) else default


@dataclass(frozen=True)
class Examples:
    """The examples of one ``attribute`` call as the user's functions see them.

    ``rows`` examples get a surrogate each: every example of the batch, or the whole batch as one for a
    forward that returns one value per batch (``aggregate``).  Batched functions see the inputs as given
    and ``batched_kwargs``; per-sample ones see example ``r`` (``x[r:r+1]``, the whole batch when aggregate)
    and ``sample_kwargs`` with tensors of ``n`` rows cut to row ``r``, as Captum's Lime cuts its arguments.
    """

    inputs: tuple[Tensor, ...]
    as_tensor: bool
    aggregate: bool
    batched_kwargs: dict[str, Any] = field(default_factory=dict)
    sample_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return 1 if self.aggregate else self.inputs[0].shape[0]

    @property
    def given(self) -> TensorOrTuple:  # the inputs as the user gave them
        return self.restore(self.inputs)

    def restore(self, values: Sequence[Tensor]) -> TensorOrTuple:
        return values[0] if self.as_tensor else tuple(values)

    def view(self, batch: tuple[Tensor, ...], dim: int) -> TensorOrTuple:
        """As batched functions see it: a batch explained as one example gets a dim of 1 at ``dim``."""
        return self.restore([b.unsqueeze(dim) if self.aggregate else b for b in batch])

    def example(self, r: int, batch: tuple[Tensor, ...] | None = None) -> TensorOrTuple:
        """Example ``r`` of ``batch`` (default: of the inputs)."""
        return self.restore([b if self.aggregate else b[r : r + 1] for b in batch or self.inputs])

    def kwargs(self, r: int) -> dict[str, Any]:
        """``sample_kwargs`` for example ``r``."""
        n = self.inputs[0].shape[0]

        def cut(value: Any) -> Any:
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
                return value[r : r + 1]
            return type(value)(cut(v) for v in value) if isinstance(value, (tuple, list)) else value

        return self.sample_kwargs if self.rows == 1 else {key: cut(v) for key, v in self.sample_kwargs.items()}

    def each(self, count: int, call: Callable[[int, int], Any]) -> list[list[Any]]:
        """``call(p, r)`` for copy ``p`` of every example ``r``, as ``[r][p]``."""
        return [[call(p, r) for p in range(count)] for r in range(self.rows)]

    def copy(self, value: Any, r: int, name: str) -> tuple[Tensor, ...]:
        """A per-sample function's copy of example ``r``, checked against the example's shapes."""
        parts = (value,) if isinstance(value, Tensor) else value
        wanted = [tuple(x.shape) if self.aggregate else (1, *x.shape[1:]) for x in self.inputs]
        if not isinstance(parts, (tuple, list)) or [tuple(getattr(p, "shape", ())) for p in parts] != wanted:
            raise ArgumentError(f"{name}: expected a copy of the example, shaped {wanted}, got {describe(value)}")
        return tuple(p.to(x.device) for p, x in zip(parts, self.inputs))

    def stacked(self, value: Any, count: int, name: str) -> tuple[Tensor, ...]:
        """A batched function's ``count`` copies of the batch as ``(count, *x.shape)`` tensors."""
        parts = (value,) if isinstance(value, Tensor) else value
        if (
            not isinstance(parts, (tuple, list))
            or len(parts) != len(self.inputs)
            or any(not isinstance(p, Tensor) or p.numel() != count * x.numel() for p, x in zip(parts, self.inputs))
        ):
            wanted = [(count, *x.shape) for x in self.inputs]
            raise ArgumentError(f"{name}: expected {count} copies of the inputs, {wanted}, got {describe(value)}")
        return tuple(p.reshape(count, *x.shape).to(x.device) for p, x in zip(parts, self.inputs))

    def assemble(self, per_row: list[list[tuple[Tensor, ...]]]) -> tuple[Tensor, ...]:
        """Copies of single examples (``[r][p]``) as copies of the batch, ``(P, *x.shape)``."""
        count = len(per_row[0])
        return tuple(
            torch.stack([torch.cat([row[p][i] for row in per_row]) for p in range(count)])
            if count
            else x.new_empty(0, *x.shape)
            for i, x in enumerate(self.inputs)
        )

    def design(self, per_row: list[list[Any]], count: int | None, name: str) -> Tensor:
        """Per-sample interpretable samples (``[r][p]``, each ``(1, F)``) as ``(P, rows, F)``; ``count`` is
        ``F`` when known."""
        for value in itertools.chain.from_iterable(per_row):
            count = _checked_design(value, (count,) if count is not None else None, name).numel()
        rows = [torch.stack([v.reshape(-1) for v in row]) if row else torch.zeros(0, count or 0) for row in per_row]
        return torch.stack(rows, dim=1).to(self.inputs[0].device)


def _checked_design(value: Any, shape: tuple[int, ...] | None, name: str) -> Tensor:
    """Interpretable samples: batched ``(P, rows, F)`` with ``shape`` its leading sizes; per-sample
    (``shape`` of one entry or None) one sample of ``F`` values."""
    if isinstance(value, Tensor):
        if shape is None or (len(shape) == 1 and value.numel() == shape[0]):
            return value
        if len(shape) > 1 and value.dim() == 3 and tuple(value.shape[: len(shape)]) == shape:
            return value
    if shape is None or len(shape) == 1:
        wanted = f"(1, {'num_interp_features' if shape is None else shape[0]})"
    else:
        wanted = f"({', '.join(map(str, shape))}, ...)"
    raise ArgumentError(f"{name}: expected interpretable samples of shape {wanted}, got {describe(value)}")


def _draws(func: Callable[..., Any], examples: Examples, n_samples: int) -> list[list[Any]]:
    """``n_samples`` per-sample draws for every example (``[r][p]``); a generator is drawn from (as in
    Captum), and when one ends early every example keeps as many draws as the shortest."""
    draws = []
    for r in range(examples.rows):
        example, kwargs = examples.example(r), examples.kwargs(r)
        first = func(example, **kwargs)
        if isinstance(first, Iterator):
            draws.append(list(itertools.islice(first, n_samples)))
        else:
            draws.append([first] + [func(example, **kwargs) for _ in range(n_samples - 1)])
    shortest = min(len(d) for d in draws)
    if shortest < n_samples:
        warnings.warn(f"perturb_func: the generator ended after {shortest} of n_samples={n_samples}", stacklevel=3)
    return [d[:shortest] for d in draws]


def draw_design(
    func: Callable[..., Any], form: str, examples: Examples, n_samples: int, count: int | None = None
) -> Tensor:
    """Interpretable samples ``(S, rows, F)`` from a perturbation function in the interpretable space:
    batched ``func(inputs, n_samples, **kwargs) -> (n_samples, rows, F)``, or per-sample ``func(example,
    **kwargs) -> (1, F)`` (or a generator of those).  ``count`` is ``F`` when known."""
    if form == BATCHED:
        value = func(examples.given, n_samples, **examples.batched_kwargs)
        shape = (n_samples, examples.rows) + (() if count is None else (count,))
        return _checked_design(value, shape, "perturb_func").to(examples.inputs[0].device)
    return examples.design(_draws(func, examples, n_samples), count, "perturb_func")


def draw_copies(func: Callable[..., Any], form: str, examples: Examples, n_samples: int) -> tuple[Tensor, ...]:
    """Copies of the batch, each ``(S, *x.shape)``, from a perturbation function in the input space: batched
    ``func(inputs, n_samples, **kwargs)``, or per-sample ``func(example, **kwargs)`` (or a generator)."""
    if form == BATCHED:
        return examples.stacked(func(examples.given, n_samples, **examples.batched_kwargs), n_samples, "perturb_func")
    draws = _draws(func, examples, n_samples)
    return examples.assemble([[examples.copy(d, r, "perturb_func") for d in row] for r, row in enumerate(draws)])


def from_interpretable(func: Callable[..., Any], form: str, examples: Examples) -> Callable[[Tensor], tuple]:
    """``design (P, rows, F) -> copies`` by ``from_interp_rep_transform``: batched ``func(design, inputs,
    **kwargs)``, or per-sample ``func(sample (1, F), example, **kwargs)`` giving one copy of the example."""
    name = "from_interp_rep_transform"

    def transform(design: Tensor) -> tuple[Tensor, ...]:
        if form == BATCHED:
            return examples.stacked(func(design, examples.given, **examples.batched_kwargs), design.shape[0], name)
        return examples.assemble(
            examples.each(
                design.shape[0],
                lambda p, r: examples.copy(
                    func(design[p, r][None], examples.example(r), **examples.kwargs(r)), r, name
                ),
            )
        )

    return transform


def to_interpretable(func: Callable[..., Any], form: str, examples: Examples) -> Callable[[tuple], Tensor]:
    """``copies -> design (P, rows, F)`` by ``to_interp_rep_transform``: batched ``func(copies, inputs,
    **kwargs)``, or per-sample ``func(copy of example r, example r, **kwargs) -> (1, F)``."""
    name = "to_interp_rep_transform"
    width: list[int] = []  # F, once the first chunk has told it

    def transform(copies: tuple[Tensor, ...]) -> Tensor:
        count = copies[0].shape[0]
        if form == BATCHED:
            value = func(examples.restore(copies), examples.given, **examples.batched_kwargs)
            design = _checked_design(value, (count, examples.rows, *width), name).to(examples.inputs[0].device)
        else:
            per_row = examples.each(
                count,
                lambda p, r: func(
                    examples.example(r, tuple(c[p] for c in copies)), examples.example(r), **examples.kwargs(r)
                ),
            )
            design = examples.design(per_row, width[0] if width else None, name)
        width[:] = [design.shape[-1]]
        return design

    return transform


def similarity_weights(func: Callable[..., Any], form: str, examples: Examples) -> Weigh:
    """Sample weights ``(P, rows)`` by ``similarity_func``: batched ``func(inputs, perturbed (P, ...),
    design (P, rows, F), **kwargs) -> (P, rows)``, or per-sample ``func(example, copy of the example,
    sample (1, F), **kwargs) -> a number``."""
    name = "similarity_func"

    def weigh(copies: tuple[Tensor, ...], design: Tensor) -> Tensor:
        count = design.shape[0]
        if form == BATCHED:
            weights = func(
                examples.view(examples.inputs, 0), examples.view(copies, 1), design, **examples.batched_kwargs
            )
            if not isinstance(weights, Tensor) or weights.shape != (count, examples.rows):
                raise ArgumentError(
                    f"{name}: expected weights of shape ({count}, {examples.rows}) (copies, examples), "
                    f"got {describe(weights)}"
                )
            return weights
        per_row = examples.each(
            count,
            lambda p, r: func(
                examples.example(r),
                examples.example(r, tuple(c[p] for c in copies)),
                design[p, r][None],
                **examples.kwargs(r),
            ),
        )
        for value in itertools.chain.from_iterable(per_row):
            if not isinstance(value, (numbers.Real, Tensor)) or (isinstance(value, Tensor) and value.numel() != 1):
                raise ArgumentError(f"{name}: expected a number (one weight per sample), got {describe(value)}")
        return torch.tensor([[float(v) for v in row] for row in per_row], device=examples.inputs[0].device).t()

    return weigh
