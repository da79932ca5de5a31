import warnings

import pytest
import torch
from torch import nn

from attribution import IntegratedGradients, LayerGradCam, registry
from attribution.utils import token_grid_reshape


def test_registry_builds_methods_by_name(cnn):
    assert isinstance(registry.build("integrated_gradients", cnn), IntegratedGradients)
    cam = registry.build("layer_gradcam", cnn, layer="conv2")
    assert isinstance(cam, LayerGradCam) and cam.layer is cnn.conv2
    assert registry.record("layer_gradcam").needs_layer and not registry.record("occlusion").needs_layer
    assert registry.build("integrated_gradients", cnn, multiply_by_inputs=False).multiplies_by_inputs is False


def test_unknown_names_list_the_choices(cnn):
    with pytest.raises(ValueError, match="did you mean 'integrated_gradients'.*choose one of"):
        registry.get("integrated_gradient")
    with pytest.raises(ValueError, match="layer: method 'layer_gradcam' attributes to a layer"):
        registry.build("layer_gradcam", cnn)


def test_registered_names_match_the_class_attribute():
    for name in registry.available():
        assert registry.get(name).registry_name == name


def test_registering_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("saliency")(type("Other", (IntegratedGradients,), {}))
    assert registry.get("saliency").__name__ == "Saliency"


# --------------------------------------------------------------------------- traits against behaviour


class _Tokens(nn.Module):
    """A vision transformer in miniature: (N, 3, 8, 8) images as a class token and 2 x 2 patch tokens of
    width 6, a linear block on the tokens (N, 5, 6), a head on the class token."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 6, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.block = nn.Linear(6, 6)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.patches(x).flatten(2).transpose(1, 2)], 1)
        return self.head(torch.relu(self.block(tokens))[:, 0])


def _call_options(record, x):
    options = record.probe_options(x)  # cheap settings: few steps, samples and feature groups
    if record.takes_target:
        options["target"] = 1
    if record.takes_neuron_selector:
        options["neuron_selector"] = (1, 2, 3)  # (channel, row, column) of a convolution's output
    return options


def test_draws_random_numbers_says_whether_attribute_changes_the_global_generator(cnn):
    x = torch.randn(2, 3, 8, 8)
    drawing = set()
    for name in registry.available():
        record = registry.record(name)
        explainer = registry.build(name, cnn, layer="conv2")
        state = torch.get_rng_state()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DeepLift's incompleteness warnings
            explainer.attribute(x, **_call_options(record, x))
        if not torch.equal(torch.get_rng_state(), state):
            drawing.add(name)
    assert drawing == {name for name in registry.available() if registry.record(name).draws_random_numbers}
    assert "gradient_shap" in drawing and "lime" in drawing


def test_needs_spatial_layer_methods_refuse_a_layer_of_tokens_and_the_others_take_it():
    torch.manual_seed(0)
    model, x = _Tokens(), torch.randn(2, 3, 8, 8)
    spatial = set()
    for name in registry.available():
        record = registry.record(name)
        if not record.needs_layer:
            continue
        options = _call_options(record, x)
        if record.takes_neuron_selector:
            options["neuron_selector"] = (0, 1)
        explainer = registry.build(name, model, layer="block")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = explainer.attribute(x, **options)
            except ValueError as error:
                assert "spatial map" in str(error), name
                spatial.add(name)
                continue
        attributions = result[0] if isinstance(result, tuple) else result
        if attributions.numel() == 0 and any("spatial" in str(w.message) for w in caught):
            spatial.add(name)  # GuidedGradCam, as Captum: an empty map and a warning
        else:
            assert attributions.shape in ((2, 5, 6), x.shape), name
    assert spatial == {name for name in registry.available() if registry.record(name).needs_spatial_layer}
    assert spatial == {"layer_gradcam", "guided_gradcam"}


def test_takes_reshape_transform_says_whether_the_constructor_takes_one():
    torch.manual_seed(0)
    model, x = _Tokens(), torch.randn(2, 3, 8, 8)
    grid = token_grid_reshape(2, 2)
    for name in registry.available():
        if registry.record(name).takes_reshape_transform:
            explainer = registry.build(name, model, layer="block", reshape_transform=grid)
            assert explainer.attribute(x, target=1).shape == (2, 1, 2, 2), name  # a map over the patch grid
        else:
            with pytest.raises(TypeError, match="reshape_transform"):
                registry.build(name, model, layer="block", reshape_transform=grid)
    assert registry.record("layer_gradcam").takes_reshape_transform
