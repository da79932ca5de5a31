"""Bad arguments raise ``ValueError`` / ``TypeError`` (also ``AssertionError``, as Captum's asserts) naming the
argument."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from attribution.module import BinaryConcreteStochasticGates, GaussianStochasticGates

CASES = [
    (BinaryConcreteStochasticGates, {"n_gates": 0}, ValueError, "n_gates"),
    (GaussianStochasticGates, {"n_gates": 2.5}, ValueError, "n_gates"),
    (BinaryConcreteStochasticGates, {"n_gates": 3, "mask": torch.tensor([0, 0, 1])}, ValueError, "mask"),
    (GaussianStochasticGates, {"n_gates": 2, "mask": torch.tensor([-1, 0, 1])}, ValueError, "mask"),
    (GaussianStochasticGates, {"n_gates": 2, "mask": torch.tensor([0.0, 1.0])}, TypeError, "mask"),
    (GaussianStochasticGates, {"n_gates": 2, "mask": [0, 1]}, TypeError, "mask"),
    (BinaryConcreteStochasticGates, {"n_gates": 2, "mask": torch.tensor([], dtype=torch.long)}, ValueError, "mask"),
    (BinaryConcreteStochasticGates, {"n_gates": 2, "reg_reduction": "max"}, ValueError, "reg_reduction"),
    (GaussianStochasticGates, {"n_gates": 2, "reg_weight": "1"}, TypeError, "reg_weight"),
    (BinaryConcreteStochasticGates, {"n_gates": 2, "temperature": 1.0}, ValueError, "temperature"),
    (BinaryConcreteStochasticGates, {"n_gates": 2, "lower_bound": 0.0}, ValueError, "lower_bound"),
    (BinaryConcreteStochasticGates, {"n_gates": 2, "upper_bound": 1.0}, ValueError, "upper_bound"),
    (BinaryConcreteStochasticGates, {"n_gates": 2, "eps": 0.5}, ValueError, "eps"),
    (GaussianStochasticGates, {"n_gates": 2, "std": 0.0}, ValueError, "std"),
    (GaussianStochasticGates, {"n_gates": 2, "std": None}, TypeError, "std"),
]


@pytest.mark.parametrize(("kind", "kwargs", "error", "name"), CASES)
def test_bad_constructor_argument_is_named(kind: type, kwargs: dict[str, Any], error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        kind(**kwargs)
    with pytest.raises(AssertionError):  # what Captum's asserts raise
        kind(**kwargs)


@pytest.mark.parametrize("kind", [BinaryConcreteStochasticGates, GaussianStochasticGates])
def test_bad_input_is_named(kind: type) -> None:
    with pytest.raises(ValueError, match="input_tensor.*batch"):
        kind(3)(torch.randn(3))
    with pytest.raises(ValueError, match=r"input_tensor.*one element per gate \(3\).*4 elements"):
        kind(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"mask: shape \(3,\) does not broadcast"):
        kind(2, mask=torch.tensor([0, 1, 1]))(torch.randn(2, 4))
    with pytest.raises(TypeError, match="input_tensor"):
        kind(3)([[0.0, 1.0, 2.0]])


@pytest.mark.parametrize(
    ("kind", "name"), [(BinaryConcreteStochasticGates, "log_alpha_param"), (GaussianStochasticGates, "mu")]
)
def test_bad_pretrained_parameter_is_named(kind: Any, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        kind._from_pretrained(torch.zeros(2, 2))
    with pytest.raises(TypeError, match=name):
        kind._from_pretrained(torch.tensor([1, 2]))
