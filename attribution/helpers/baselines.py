"""``ProductBaselines``: baselines drawn from the Cartesian product of per-feature candidate values."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Union

from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_int

BaselineValues = Union[Sequence[Sequence[Any]], dict[Union[str, tuple[str, ...]], Sequence[Any]]]


class ProductBaselines:
    """A baselines argument that draws one candidate per feature, independently, on every call.

    Pass the object itself as ``baselines``: methods call a baselines function with no parameters to get
    the values, so each ``attribute`` call uses a fresh draw.  With a list, a draw is a list with one value
    per entry, e.g. one baseline per input of a tuple; with a dict, a dict ``feature name -> value``.  A
    tuple of names as a key draws jointly for features whose baselines go together: its candidates are
    tuples with one value per name.

    Draws come from a private generator (seeded with ``seed``), never from Python's global ``random``
    state, so using the baselines does not shift anyone else's random numbers.

    Args:
        baseline_values: a list of candidate lists, or a dict ``name (or tuple of names) -> candidates``.
        seed: seed of the private generator; None draws a fresh seed from the operating system.

    Raises:
        TypeError: ``baseline_values`` is neither a list nor a dict, a key is not a string or a tuple of
            strings, or candidates are not a list.
        ValueError: an empty candidate list, or a joint candidate whose length differs from its key's.

    Example:
        >>> import torch
        >>> from attribution import FeatureAblation, ProductBaselines
        >>> baselines = ProductBaselines([[0.0, 0.5], [-1.0, 1.0]], seed=0)
        >>> baselines()  # one draw: a baseline for each of the two inputs
        [0.5, 1.0]
        >>> model = lambda x1, x2: x1.sum(1) + 2 * x2.sum(1)  # two inputs, one output per example
        >>> x1, x2 = torch.rand(2, 3), torch.rand(2, 4)
        >>> attr = FeatureAblation(model).attribute((x1, x2), baselines=baselines)  # a fresh draw per call
        >>> [a.shape for a in attr]
        [torch.Size([2, 3]), torch.Size([2, 4])]
    """

    def __init__(self, baseline_values: BaselineValues, *, seed: int | None = None) -> None:
        if isinstance(baseline_values, dict):
            self.dict_keys: list[str | tuple[str, ...]] = list(baseline_values)
            values = [baseline_values[key] for key in self.dict_keys]
        elif isinstance(baseline_values, (list, tuple)):
            self.dict_keys = []
            values = list(baseline_values)
        else:
            raise ArgumentTypeError(
                f"baseline_values: expected a list of candidate lists or a dict of them, got "
                f"{type(baseline_values).__name__}"
            )
        from_dict = isinstance(baseline_values, dict)
        for i, candidates in enumerate(values):
            _check_candidates(candidates, self.dict_keys[i] if from_dict else i, from_dict)
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        self.baseline_values = values
        self._random = random.Random(seed)

    def sample(self) -> list[Any] | dict[str, Any]:
        """One draw: a candidate per feature (a list, or a dict by feature name)."""
        drawn = [self._random.choice(candidates) for candidates in self.baseline_values]
        if not self.dict_keys:
            return drawn
        baselines: dict[str, Any] = {}
        for key, value in zip(self.dict_keys, drawn):
            if isinstance(key, tuple):
                baselines.update(zip(key, value))
            else:
                baselines[key] = value
        return baselines

    def __call__(self) -> list[Any] | dict[str, Any]:
        """:meth:`sample`: the object is a baselines function."""
        return self.sample()


def _check_candidates(candidates: Any, key: Any, from_dict: bool) -> None:
    name = f"baseline_values[{key!r}]"
    if from_dict and not (isinstance(key, str) or (isinstance(key, tuple) and all(isinstance(k, str) for k in key))):
        raise ArgumentTypeError(f"baseline_values: expected feature names (strings) or tuples of them, got {key!r}")
    if isinstance(candidates, str) or not (hasattr(candidates, "__len__") and hasattr(candidates, "__getitem__")):
        raise ArgumentTypeError(f"{name}: expected a list of candidate values, got {type(candidates).__name__}")
    if len(candidates) == 0:
        raise ArgumentError(f"{name}: expected at least one candidate value, got none")
    if from_dict and isinstance(key, tuple):
        wrong = [c for c in candidates if not isinstance(c, (tuple, list)) or len(c) != len(key)]
        if wrong:
            raise ArgumentError(
                f"{name}: expected candidates with {len(key)} values each (one per name), got {wrong[0]!r}"
            )
