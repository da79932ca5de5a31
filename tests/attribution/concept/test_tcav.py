"""TCAV scores with known answers, pluggable classifiers, argument errors and the caller's state."""

import pytest
import torch
from torch import nn

from attribution import LayerGradientXActivation
from attribution.concept import TCAV, Classifier, Concept
from tests.attribution.concept._models import FEATURES, SmallConvNet, direction, linear_model, shifted_concepts


@pytest.mark.parametrize(("sign", "target", "expected"), [(1.0, 0, 1.0), (1.0, 1, 0.0), (-1.0, 0, 0.0)])
def test_sign_count_is_one_when_the_class_score_grows_along_the_concept(tmp_path, sign, target, expected):
    concept, random = shifted_concepts()
    tcav = TCAV(linear_model(sign), "layer", save_path=str(tmp_path))
    inputs = torch.randn(32, FEATURES)
    scores = tcav.interpret(inputs, [[concept, random]], target=target)["0-1"]["layer"]
    assert scores["sign_count"].tolist() == [expected, 1.0 - expected]
    # magnitude is the mean dot product of the CAV with the gradient (+-sign * direction for every input)
    cav = tcav.cavs["0-1"]["layer"].stats["weights"][0]
    grad = (sign if target == 0 else -sign) * direction()
    assert scores["magnitude"][0].item() == pytest.approx(float(cav @ grad), rel=1e-5)
    assert scores["magnitude"][1].item() == pytest.approx(-float(cav @ grad), rel=1e-5)


def test_scores_follow_the_order_of_each_experimental_set(tmp_path):
    concept, random = shifted_concepts()
    tcav = TCAV(linear_model(), "layer", save_path=str(tmp_path))
    inputs = torch.randn(8, FEATURES)
    scores = tcav.interpret(inputs, [[concept, random], [random, concept]], target=0)
    assert list(scores) == ["0-1", "1-0"]
    assert scores["0-1"]["layer"]["sign_count"].tolist() == [1.0, 0.0]
    assert scores["1-0"]["layer"]["sign_count"].tolist() == [0.0, 1.0]


class MeanDifference(Classifier):
    """CAVs = class means minus the mean of the other classes; records that it was used."""

    def __init__(self) -> None:
        self.calls = 0

    def train_and_eval(self, dataloader, **kwargs):
        self.calls += 1
        x, y = map(torch.cat, zip(*list(dataloader)))
        self._classes = sorted(set(y.tolist()))
        means = torch.stack([x[y == c].mean(0) for c in self._classes])
        self._weights = means - means.mean(0, keepdim=True)
        self.kwargs = kwargs
        return {"accs": torch.tensor(1.0)}

    def weights(self):
        return self._weights

    def classes(self):
        return self._classes


def test_a_custom_classifier_is_used_with_its_kwargs(tmp_path):
    concept, random = shifted_concepts()
    classifier = MeanDifference()
    tcav = TCAV(linear_model(), ["layer", "head"], classifier=classifier, save_path=str(tmp_path), flavour="x")
    tcav.compute_cavs([[concept, random]])
    assert classifier.calls == 2 and classifier.kwargs == {"flavour": "x"}
    weights = tcav.cavs["0-1"]["layer"].stats["weights"]
    expected = torch.cat(list(concept.data_iter)).mean(0) - torch.cat(list(random.data_iter)).mean(0)
    assert torch.allclose(weights[0], expected / 2, atol=1e-6)


def test_three_concepts_and_sets_of_different_lengths_score_as_when_alone(tmp_path):
    concept, random = shifted_concepts()
    other = Concept(2, "other", [torch.randn(50, FEATURES)])
    inputs = torch.randn(8, FEATURES)
    sets = [[concept, random], [other, concept, random]]
    together = TCAV(linear_model(), "layer", save_path=str(tmp_path / "a")).interpret(inputs, sets, target=0)
    alone = TCAV(linear_model(), "layer", save_path=str(tmp_path / "b")).interpret(inputs, sets[1:], target=0)
    assert together["2-0-1"]["layer"]["sign_count"].shape == (3,)
    for kind in ("sign_count", "magnitude"):
        assert torch.allclose(together["2-0-1"]["layer"][kind], alone["2-0-1"]["layer"][kind])


def test_a_custom_layer_method_matches_the_fused_default(tmp_path):
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    concepts = [Concept(i, f"c{i}", [torch.rand(10, 1, 6, 6) + i]) for i in range(2)]
    inputs = torch.rand(5, 1, 6, 6)
    layers = ["conv1", "relu", "conv2"]  # relu runs twice
    with pytest.raises(ValueError, match="ran 2 times"):
        TCAV(model, layers, save_path=str(tmp_path / "x")).interpret(inputs, [concepts], target=1)
    layers = ["conv1", "conv2", "fc"]
    fused = TCAV(model, layers, classifier=MeanDifference(), save_path=None).interpret(inputs, [concepts], target=1)
    method = LayerGradientXActivation(model, "conv1", multiply_by_inputs=False)
    looped = TCAV(model, layers, classifier=MeanDifference(), layer_attr_method=method, save_path=None)
    scores = looped.interpret(inputs, [concepts], target=1, grad_kwargs=None)
    for layer in layers:
        for kind in ("sign_count", "magnitude"):
            assert torch.allclose(fused["0-1"][layer][kind], scores["0-1"][layer][kind], atol=1e-6)


def test_the_callers_model_state_is_left_alone_and_no_hook_remains(tmp_path):
    torch.manual_seed(0)
    model = SmallConvNet().train()
    model.bn.eval()  # a module frozen by the caller
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    concepts = [Concept(i, f"c{i}", [torch.rand(10, 1, 6, 6) + i]) for i in range(2)]
    tcav = TCAV(model, ["conv1", "conv2"], save_path=str(tmp_path))
    with torch.no_grad():  # gradients are switched on inside
        tcav.interpret(torch.rand(4, 1, 6, 6), [concepts], target=0)
    assert model.training and not model.bn.training
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight)) and model.conv2.weight.grad is None
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())

    def broken(x):
        raise RuntimeError("boom")

    model.fc.forward = broken
    with pytest.raises(RuntimeError, match="boom"):
        tcav.compute_cavs([concepts], force_train=True)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_attribute_to_layer_input_uses_the_layers_input(tmp_path):
    concept, random = shifted_concepts()
    model = linear_model()
    tcav = TCAV(model, "head", attribute_to_layer_input=True, classifier=MeanDifference(), save_path=None)
    scores = tcav.interpret(torch.randn(6, FEATURES), [[concept, random]], target=0)
    assert scores["0-1"]["head"]["sign_count"].tolist() == [1.0, 0.0]
    assert tcav.activations["shifted-0"]["head"].shape == (400, FEATURES)


def test_errors_name_the_argument(tmp_path):
    model = linear_model()
    with pytest.raises(ValueError, match="model_id"):
        TCAV(model, "layer", model_id="", save_path=str(tmp_path))
    with pytest.raises(ValueError, match="close matches"):
        TCAV(model, "layr", save_path=str(tmp_path))
    tcav = TCAV(model, "layer", save_path=str(tmp_path))
    a, b = Concept(0, "a", [torch.randn(4, FEATURES)]), Concept(0, "b", [torch.randn(4, FEATURES)])
    with pytest.raises(AssertionError, match="id 0"):  # Captum raises AssertionError; ours is also a ValueError
        tcav.compute_cavs([[a, b]])
    with pytest.raises(ValueError, match="constructor"):
        tcav.interpret(torch.randn(2, FEATURES), [[a]], attribute_to_layer_input=True)
    with pytest.raises(ValueError, match="data_iter"):
        tcav.generate_activation("layer", Concept(3, "empty", None))


def test_a_custom_layer_method_is_called_once_per_layer(tmp_path):
    calls = []

    class Recording(LayerGradientXActivation):
        def attribute(self, *args, **kwargs):
            calls.append(self.layer)
            return super().attribute(*args, **kwargs)

    model = linear_model()
    concept, random = shifted_concepts()
    method = Recording(model, "layer", multiply_by_inputs=False)
    TCAV(model, ["layer", "head"], layer_attr_method=method, save_path=None).interpret(
        torch.randn(3, FEATURES), [[concept, random]], target=0
    )
    assert calls == [model.layer, model.head]


def test_an_object_that_is_no_classifier_is_refused():
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(TypeError):
        TCAV(model, "0", classifier=object(), save_path=None)
