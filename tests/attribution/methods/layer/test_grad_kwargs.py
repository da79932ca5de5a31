"""``grad_kwargs``: Captum's pass-through of options to ``torch.autograd.grad`` in the gradient layer methods."""

import pytest
import torch
from torch import nn

from attribution import (
    ArgumentError,
    ArgumentTypeError,
    InternalInfluence,
    LayerConductance,
    LayerGradCam,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    NeuronConductance,
)


class TwoHeads(nn.Module):
    """``side`` runs in every forward but the output does not depend on it: an unused layer, as in Captum's tests."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(3, 4)
        self.side = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        self.side(x)  # computed and dropped
        return self.head(torch.relu(self.body(x)))


X = torch.tensor([[0.5, 2.0, -1.0], [1.0, 0.0, 3.0]])


def _attribute(cls, model, layer, **kwargs):
    if cls is NeuronConductance:
        return cls(model, layer).attribute(X, neuron_selector=1, target=0, n_steps=4, **kwargs)
    extra = {"n_steps": 4} if cls in (InternalInfluence, LayerConductance, LayerIntegratedGradients) else {}
    return cls(model, layer).attribute(X, target=0, **extra, **kwargs)


CLASSES = [LayerGradCam, LayerGradientXActivation, InternalInfluence, LayerConductance, LayerIntegratedGradients]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_an_unused_layer_gets_zeros_and_the_options_reach_autograd(cls):
    model = TwoHeads().eval()
    default = _attribute(cls, model, model.side)
    materialized = _attribute(cls, model, model.side, grad_kwargs={"materialize_grads": True})
    assert torch.count_nonzero(default) == 0 and torch.equal(default, materialized)
    with pytest.raises(RuntimeError, match="not have been used"):
        _attribute(cls, model, model.side, grad_kwargs={"allow_unused": False})


@pytest.mark.parametrize("cls", [*CLASSES, NeuronConductance], ids=lambda c: c.__name__)
def test_options_that_change_nothing_leave_the_result_unchanged(cls):
    model = TwoHeads().eval()
    plain = _attribute(cls, model, model.body)
    torch.testing.assert_close(_attribute(cls, model, model.body, grad_kwargs={"materialize_grads": True}), plain)
    torch.testing.assert_close(_attribute(cls, model, model.body, grad_kwargs={"retain_graph": True}), plain)


@pytest.mark.parametrize(
    ("grad_kwargs", "error"),
    [
        ({"grad_outputs": None}, ArgumentError),
        ({"inputs": ()}, ArgumentError),
        ([("retain_graph", True)], ArgumentTypeError),
    ],
)
def test_arguments_the_method_sets_and_non_mappings_are_refused(grad_kwargs, error):
    model = TwoHeads().eval()
    with pytest.raises(error, match="grad_kwargs"):
        LayerGradCam(model, model.body).attribute(X, target=0, grad_kwargs=grad_kwargs)
