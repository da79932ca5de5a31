"""``attribute_future``: Captum's entry point for forwards that return ``torch.futures.Future`` values."""

import threading
import time

import pytest
import torch

from attribution import (
    ArgumentError,
    DeepLift,
    FeatureAblation,
    FeaturePermutation,
    IntegratedGradients,
    KernelShap,
    Lime,
    Occlusion,
    Saliency,
    ShapleyValues,
    ShapleyValueSampling,
)
from tests.models import MLP, seeded


def _future_of(model, delay: float = 0.0):
    """The model behind a forward that answers with a future, set from another thread after ``delay``."""

    def forward(x):
        future = torch.futures.Future()

        def answer():
            time.sleep(delay)
            try:
                future.set_result(model(x))
            except Exception as error:  # never leave the caller waiting
                future.set_exception(error)

        threading.Thread(target=answer).start()
        return future

    return forward


X = torch.rand(4, 6)


@pytest.mark.parametrize(
    "cls", [FeatureAblation, FeaturePermutation, ShapleyValueSampling, ShapleyValues], ids=lambda c: c.__name__
)
def test_a_future_forward_gives_the_attributions_of_the_plain_forward(cls):
    model = seeded(MLP)
    mask = torch.tensor([[0, 0, 1, 1, 2, 2]])
    torch.manual_seed(0)
    expected = cls(model).attribute(X, target=1, feature_mask=mask)
    torch.manual_seed(0)
    future = cls(_future_of(model, delay=0.01)).attribute_future(X, target=1, feature_mask=mask)
    assert type(future) is torch.Future  # the type Captum returns (and its tests check with "is")
    torch.testing.assert_close(future.wait(), expected)


def test_the_wrong_entry_point_is_an_argument_error_naming_forward_func():
    model = seeded(MLP)
    with pytest.raises(ArgumentError, match="forward_func.*attribute_future"):
        FeatureAblation(_future_of(model)).attribute(X, target=0)
    with pytest.raises(ArgumentError, match="forward_func.*attribute_future needs"):
        FeatureAblation(model).attribute_future(X, target=0)


def test_the_callers_object_keeps_its_forward():
    forward = _future_of(seeded(MLP))
    ablation = FeatureAblation(forward)
    ablation.attribute_future(X, target=0).wait()
    assert ablation.forward_func is forward


@pytest.mark.parametrize("cls", [Saliency, IntegratedGradients, DeepLift, Occlusion, Lime, KernelShap])
def test_other_methods_say_they_do_not_have_it(cls):
    with pytest.raises(NotImplementedError, match="attribute_future"):
        cls(seeded(MLP)).attribute_future(X, target=0)
