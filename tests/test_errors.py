"""Bad arguments raise errors that name the argument and that both Python's and Captum's conventions catch:
``ValueError``/``TypeError`` and, as Captum asserts its arguments, ``AssertionError``."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import attribution
from attribution import ArgumentError, ArgumentTypeError, FeatureAblation, IntegratedGradients, Occlusion, Saliency


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()


X = torch.rand(2, 3, 8, 8)

BAD_CALLS = {
    "target out of range": (lambda: Saliency(_model()).attribute(X, target=7), ArgumentError, "target"),
    "n_steps zero": (lambda: IntegratedGradients(_model()).attribute(X, target=0, n_steps=0), ArgumentError, "n_steps"),
    "window larger than the input": (
        lambda: Occlusion(_model()).attribute(X, target=0, sliding_window_shapes=(3, 9, 9)),
        ArgumentError,
        "sliding_window_shapes",
    ),
    "feature mask of another shape": (
        lambda: FeatureAblation(_model()).attribute(
            X, target=0, feature_mask=torch.zeros(1, 1, 4, 4, dtype=torch.long)
        ),
        ArgumentError,
        "feature_mask",
    ),
    "forward_func not callable": (lambda: Saliency(3), ArgumentTypeError, "forward_func"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments_are_value_or_type_errors_and_assertion_errors_naming_the_argument(case):
    call, kind, name = BAD_CALLS[case]
    with pytest.raises(kind, match=name) as raised:
        call()
    assert isinstance(raised.value, AssertionError)
    assert isinstance(raised.value, ValueError if kind is ArgumentError else TypeError)


def test_the_engine_raises_no_bare_value_or_type_errors():
    """Every argument error in the engine goes through the two classes, so none escapes Captum-style
    ``assertRaises(AssertionError)`` by being raised as a plain ValueError or TypeError."""
    root = Path(attribution.__file__).parent
    bare = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                if node.exc.func.id in ("ValueError", "TypeError"):
                    bare.append(f"{path.relative_to(root)}:{node.lineno}")
    assert bare == []
