"""A list of layers for LayerActivation and LayerGradientXActivation (Captum's ModuleOrModuleList)."""

import pytest
import torch

from attribution import ArgumentError, ArgumentTypeError, LayerActivation, LayerGradCam, LayerGradientXActivation
from tests.models import SmallCNN, TwoInput, seeded

X = torch.rand(2, 3, 8, 8)


@pytest.mark.parametrize("cls", [LayerActivation, LayerGradientXActivation], ids=lambda c: c.__name__)
def test_a_list_gives_a_list_of_what_each_layer_gives_alone(cls):
    model = seeded(SmallCNN)
    kwargs = {} if cls is LayerActivation else {"target": 1}
    layers = [model.conv1, "conv2", model.fc]
    together = cls(model, layers).attribute(X, **kwargs)
    assert isinstance(together, list) and len(together) == 3
    for layer, got in zip(layers, together):
        torch.testing.assert_close(got, cls(model, layer).attribute(X, **kwargs))
    assert isinstance(cls(model, model.conv1).attribute(X, **kwargs), torch.Tensor)  # one layer: no list


def test_layers_with_several_inputs_and_extra_arguments():
    model = seeded(TwoInput)
    inputs = (torch.rand(2, 1, 6, 6), torch.rand(2, 5))
    got = LayerGradientXActivation(model, [model.fc_img, model.fc_tab]).attribute(
        inputs, target=2, additional_forward_args=(3.0,)
    )
    for layer, value in zip((model.fc_img, model.fc_tab), got):
        expected = LayerGradientXActivation(model, layer).attribute(inputs, target=2, additional_forward_args=(3.0,))
        torch.testing.assert_close(value, expected)


def test_an_empty_list_and_lists_where_captum_takes_none_are_refused():
    model = seeded(SmallCNN)
    with pytest.raises(ArgumentError, match="layer"):
        LayerActivation(model, [])
    with pytest.raises(ArgumentTypeError, match="layer"):
        LayerGradCam(model, [model.conv1, model.conv2])


def test_matches_captum():
    captum = pytest.importorskip("captum.attr")
    model = seeded(SmallCNN)
    ours = LayerGradientXActivation(model, [model.conv1, model.fc]).attribute(X, target=0)
    theirs = captum.LayerGradientXActivation(model, [model.conv1, model.fc]).attribute(X, target=0)
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t)


def test_layer_integrated_gradients_moves_the_listed_layers_together_and_is_complete():
    from attribution import LayerIntegratedGradients

    model = seeded(TwoInput)
    inputs = (torch.rand(2, 1, 6, 6), torch.rand(2, 5))
    lig = LayerIntegratedGradients(model, [model.fc_img, model.fc_tab])
    attrs, delta = lig.attribute(inputs, target=1, n_steps=64, return_convergence_delta=True)
    assert isinstance(attrs, list) and [a.shape for a in attrs] == [(2, 3), (2, 3)]
    assert delta.abs().max() < 1e-4  # together they explain f(x) - f(0)
    (alone,) = LayerIntegratedGradients(model, [model.fc_img]).attribute(inputs, target=1, n_steps=64)
    torch.testing.assert_close(
        alone, LayerIntegratedGradients(model, model.fc_img).attribute(inputs, target=1, n_steps=64)
    )


def test_layer_integrated_gradients_with_a_list_matches_captum():
    captum = pytest.importorskip("captum.attr")
    from attribution import LayerIntegratedGradients

    model = seeded(TwoInput)
    inputs = (torch.rand(2, 1, 6, 6), torch.rand(2, 5))
    ours = LayerIntegratedGradients(model, [model.fc_img, model.fc_tab]).attribute(inputs, target=0, n_steps=20)
    theirs = captum.LayerIntegratedGradients(model, [model.fc_img, model.fc_tab]).attribute(
        inputs, target=0, n_steps=20
    )
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t)
