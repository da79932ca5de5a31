import pytest

from attribution import IntegratedGradients, LayerGradCam, registry


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
