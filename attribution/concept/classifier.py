"""Concept classifiers (Captum's ``Classifier`` interface) and our default, a ridge linear classifier in
torch: closed form, deterministic given its seed, no scikit-learn."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from attribution._internal.checks import ArgumentError


class Classifier(ABC):
    """What TCAV needs of a concept classifier: train on labelled activations, then give one weight row
    per class (the CAVs) and the class (concept id) of each row.

    Any object with these three methods serves (TCAV does not check the base class), so a Captum
    ``Classifier`` subclass works too.
    """

    @abstractmethod
    def __init__(self) -> None:
        pass

    @abstractmethod
    def train_and_eval(self, dataloader: Iterable[tuple[Tensor, Tensor]], **kwargs: Any) -> dict[str, Any] | None:
        """Train on the ``(activations (B, F), concept ids (B,))`` batches of ``dataloader``.

        Returns:
            Statistics to keep with the CAV (e.g. ``{"accs": accuracy}``), or None.
        """

    @abstractmethod
    def weights(self) -> Tensor:
        """The ``(C, F)`` weights, one row per class, in the order of :meth:`classes`."""

    @abstractmethod
    def classes(self) -> list[int]:
        """The class (concept id) of each row of :meth:`weights`."""


class DefaultClassifier(Classifier):
    """A one-vs-rest ridge classifier: ``W = argmin ||X W - Y||^2 + lambda ||W||^2`` on centred
    activations, ``Y`` the +-1 class codes, solved in closed form (in the dual when there are more
    features than examples).

    Captum's default is scikit-learn's ``SGDClassifier``; ours is deterministic (the train/test split is
    drawn from its own generator, the global RNG is untouched) and has no dependency. For two concepts
    the rows are ``[-w, w]``, as in Captum.

    Args:
        alpha: the ridge penalty relative to the mean non-zero eigenvalue of the centred activations' Gram
            matrix; large values shrink the CAV towards the difference of the class means (robust with few
            examples in many dimensions), small ones towards the least-squares (LDA-like) direction.
        seed: seeds the train/test split.
    """

    def __init__(self, alpha: float = 1.0, seed: int = 0) -> None:
        if not alpha >= 0:
            raise ArgumentError(f"alpha: expected a number >= 0, got {alpha!r}")
        self.alpha = alpha
        self.seed = seed
        self._weights: Tensor | None = None
        self._classes: list[int] = []

    def train_and_eval(
        self, dataloader: Iterable[tuple[Tensor, Tensor]], test_split_ratio: float = 0.33, **kwargs: Any
    ) -> dict[str, Any] | None:
        """Fit on a random ``1 - test_split_ratio`` share of the examples and measure the accuracy on the rest.

        Returns:
            ``{"accs": accuracy on the held-out share}`` (on the training share when nothing is held out).

        Raises:
            ValueError: ``test_split_ratio`` outside ``[0, 1)``, or fewer than two classes.
        """
        if not 0 <= test_split_ratio < 1:
            raise ArgumentError(f"test_split_ratio: expected a number in [0, 1), got {test_split_ratio!r}")
        batches = list(dataloader)
        x = torch.cat([b[0] for b in batches]).flatten(1)
        y = torch.cat([b[1] for b in batches]).to(x.device)
        classes = torch.unique(y)
        if classes.numel() < 2:
            raise ArgumentError(
                f"dataloader: expected examples of at least two concepts, got classes {classes.tolist()}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(x.shape[0], generator=generator).to(x.device)
        n_test = int(test_split_ratio * x.shape[0])
        test, train = order[:n_test], order[n_test:]
        weights, bias = fit_ridge(x[train], y[train], classes, self.alpha)
        self._weights, self._classes = weights, [int(c) for c in classes.tolist()]
        held_out = test if n_test > 0 else train
        predicted = classes[(x[held_out].to(weights) @ weights.T + bias).argmax(dim=1)]
        return {"accs": (predicted == y[held_out]).float().mean()}

    def weights(self) -> Tensor:
        """The ``(C, F)`` CAVs (``C = 2`` for two concepts: ``[-w, w]``).

        Raises:
            ValueError: before :meth:`train_and_eval`.
        """
        if self._weights is None:
            raise ArgumentError("DefaultClassifier: call train_and_eval before weights")
        return self._weights

    def classes(self) -> list[int]:
        """The concept id of each row of :meth:`weights`, ascending."""
        return list(self._classes)


def fit_ridge(x: Tensor, y: Tensor, classes: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """One-vs-rest ridge regression of the +-1 codes of ``classes`` on ``x``.

    Args:
        x: ``(N, F)`` features.
        y: ``(N,)`` labels.
        classes: the ``C`` distinct labels.
        alpha: the penalty relative to the mean non-zero eigenvalue of ``Xc^T Xc`` (``Xc`` the centred ``x``).

    Returns:
        ``(weights (C, F), bias (C,))``.
    """
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    codes = (y[:, None] == classes[None, :]).to(x) * 2 - 1  # (N, C)
    x_mean, code_mean = x.mean(dim=0), codes.mean(dim=0)
    xc, yc = x - x_mean, codes - code_mean
    n, f = xc.shape
    # relative to the mean non-zero eigenvalue of Xc^T Xc: alpha=1 shrinks the noise directions by about half
    penalty = alpha * float(xc.pow(2).sum()) / max(min(n, f), 1) + 1e-12
    if f > n:  # dual: W = Xc^T (Xc Xc^T + lambda I)^-1 Yc
        gram = xc @ xc.T
        gram.diagonal().add_(penalty)
        weights = (xc.T @ torch.linalg.solve(gram, yc)).T
    else:
        gram = xc.T @ xc
        gram.diagonal().add_(penalty)
        weights = torch.linalg.solve(gram, xc.T @ yc).T
    return weights, code_mean - weights @ x_mean
