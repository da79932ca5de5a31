"""Bad arguments raise errors that name the argument and that both Python's and Captum's conventions catch:
``ValueError``/``TypeError`` and, as Captum asserts its arguments, ``AssertionError``."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import attribution
from attribution import (
    ArgumentError,
    ArgumentTypeError,
    FeatureAblation,
    IntegratedGradients,
    Occlusion,
    Saliency,
    registry,
)


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


# --------------------------------------------------------------------------- input the engine cannot read


class _Structured(nn.Module):
    """A classifier that returns its scores wrapped: a dict, or a Hugging Face ``ModelOutput``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        self.kind = kind

    def forward(self, x):
        logits = self.fc(torch.relu(self.conv(x)).mean((2, 3)))
        if self.kind == "dict":
            return {"logits": logits}
        modeling_outputs = pytest.importorskip("transformers.modeling_outputs")
        return modeling_outputs.SequenceClassifierOutput(logits=logits)


STRUCTURED_CALLS = {
    "integrated_gradients": lambda m: IntegratedGradients(m).attribute(X, target=1, n_steps=4),
    "saliency": lambda m: Saliency(m).attribute(X, target=1),
    "occlusion": lambda m: Occlusion(m).attribute(X, (3, 4, 4), target=1, strides=4),
    "feature_ablation": lambda m: FeatureAblation(m).attribute(X, target=1),
    "layer_gradcam": lambda m: attribution.LayerGradCam(m, "conv").attribute(X, target=1),
}


@pytest.mark.parametrize("kind", ["dict", "model_output"])
@pytest.mark.parametrize("method", sorted(STRUCTURED_CALLS))
def test_a_dict_or_model_output_is_refused_naming_model_scores(method, kind):
    from attribution.outputs import ModelScores

    model = _Structured(kind)
    with pytest.raises(ArgumentTypeError, match=r"forward_func: .*with keys \['logits'\].*outputs\.ModelScores"):
        STRUCTURED_CALLS[method](model)
    wrapped = STRUCTURED_CALLS[method](ModelScores(model))  # the fix the message names
    assert torch.isfinite(wrapped).all()


class _Tokens(nn.Module):
    """A vision transformer in miniature: 4x4 patches of a 16x32 image, a class token, one block."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)  # (N, 1 + 4*8, 8)
        return self.head(self.block(tokens).mean(1))


def test_layer_gradcam_on_tokens_asks_for_a_reshape_transform():
    from attribution.utils import token_grid_reshape

    model, image = _Tokens(), torch.rand(2, 3, 16, 32)
    message = r"layer: Sequential outputs shape \(2, 33, 8\), tokens .*\(N, C, h, w\).*token_grid_reshape\(4, 8, 1\)"
    with pytest.raises(ArgumentError, match=message):
        attribution.LayerGradCam(model, model.block).attribute(image, target=0)
    cam = attribution.LayerGradCam(model, model.block, reshape_transform=token_grid_reshape(4, 8, 1)).attribute(
        image, target=0
    )
    assert cam.shape == (2, 1, 4, 8)
    assert attribution.LayerAttribution.interpolate(cam, image.shape[2:]).shape == (2, 1, 16, 32)
    with pytest.warns(UserWarning, match="GuidedGradCam"):  # as in Captum: no map to upsample, an empty tensor
        assert attribution.GuidedGradCam(model, model.block).attribute(image, target=0).numel() == 0
    # A token "map" read as (N, C, L), as other code may make one, fails with a hint too, not inside torch.
    with pytest.raises(ArgumentError, match=r"interpolate_dims: expected 1 size\(s\).*token_grid_reshape"):
        attribution.LayerAttribution.interpolate(torch.zeros(2, 1, 8), image.shape[2:])


@pytest.mark.parametrize(
    "maps, size, mode, error, match",
    [
        (
            torch.zeros(2, 1, 4, 4),
            (0, 8),
            "nearest",
            ArgumentError,
            r"interpolate_dims: expected sizes >= 1, got \(0, 8\)",
        ),
        (torch.zeros(2, 1, 4, 4), -3, "nearest", ArgumentError, "interpolate_dims: expected sizes >= 1, got -3"),
        (torch.zeros(2, 1, 4, 4), (8,), "nearest", ArgumentError, r"interpolate_dims: expected 2 size\(s\)"),
        (torch.zeros(2, 1, 4, 4), 2.5, "nearest", ArgumentTypeError, "interpolate_dims: expected an int"),
        (torch.zeros(2, 1), (8, 8), "nearest", ArgumentError, "layer_attribution: expected maps"),
        (torch.zeros(2, 1, 4, 4), (8, 8), "trilinear", ArgumentError, "interpolate_mode: 'trilinear'"),
        (torch.zeros(2, 1, 4, 4), (8, 8), "cubic", ArgumentError, "interpolate_mode: unknown value 'cubic'"),
    ],
)
def test_interpolate_refuses_sizes_and_maps_it_cannot_resize(maps, size, mode, error, match):
    with pytest.raises(error, match=match):
        attribution.LayerAttribution.interpolate(maps, size, mode)


def _tabular_model(calls):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))

    def forward(x):
        calls.append(x.shape)
        return net(x)

    return net, forward


def _record(class_name):
    return registry.record(getattr(attribution, class_name).registry_name)


FLOAT_MASK_CALLS = {
    "FeatureAblation": lambda f, net, mask: attribution.FeatureAblation(f).attribute(XT, target=0, feature_mask=mask),
    "FeaturePermutation": lambda f, net, mask: attribution.FeaturePermutation(f).attribute(
        XT, target=0, feature_mask=mask
    ),
    "ShapleyValueSampling": lambda f, net, mask: attribution.ShapleyValueSampling(f).attribute(
        XT, target=0, feature_mask=mask, n_samples=2
    ),
    "ShapleyValues": lambda f, net, mask: attribution.ShapleyValues(f).attribute(XT, target=0, feature_mask=mask),
    "Lime": lambda f, net, mask: attribution.Lime(f).attribute(XT, target=0, feature_mask=mask, n_samples=5),
    "KernelShap": lambda f, net, mask: attribution.KernelShap(f).attribute(
        XT, target=0, feature_mask=mask, n_samples=5
    ),
    "LayerFeatureAblation": lambda f, net, mask: attribution.LayerFeatureAblation(net, net[0]).attribute(
        XT, target=0, layer_mask=mask[:, :4]
    ),
    "LayerFeaturePermutation": lambda f, net, mask: attribution.LayerFeaturePermutation(net, net[0]).attribute(
        XT, target=0, layer_mask=mask[:, :4]
    ),
    "NeuronFeatureAblation": lambda f, net, mask: attribution.NeuronFeatureAblation(net, net[0]).attribute(
        XT, neuron_selector=1, feature_mask=mask
    ),
}
XT = torch.randn(3, 6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
@pytest.mark.parametrize("method", sorted(FLOAT_MASK_CALLS))
def test_float_and_bool_feature_masks_are_refused_before_any_forward(method, dtype):
    calls = []
    net, forward = _tabular_model(calls)
    name = "layer_mask" if _record(method).attributes_to_layer else "feature_mask"
    whole = torch.tensor([[0, 0, 1, 1, 2, 2]]) if dtype != torch.bool else torch.tensor([[0, 0, 1, 1, 0, 1]])
    with pytest.raises(ArgumentTypeError, match=rf"{name}: expected an integer tensor .*{name}\.long\(\)"):
        FLOAT_MASK_CALLS[method](forward, net, whole.to(dtype))
    assert calls == []
    assert FLOAT_MASK_CALLS[method](forward, net, whole).shape[0] == 3  # the integer mask works


def _meta_models():
    from attribution.outputs import ModelScores

    with torch.device("meta"):
        built_on_meta = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    bare = nn.Linear(3, 2, device="meta")
    return {"device=meta": bare, "under torch.device": built_on_meta, "ModelScores": ModelScores(bare)}


@pytest.mark.parametrize(
    "make",
    [
        lambda m: attribution.Saliency(m),
        lambda m: attribution.IntegratedGradients(m),
        lambda m: attribution.Occlusion(m),
        lambda m: attribution.FeatureAblation(m),
        lambda m: attribution.LayerGradCam(m, m if isinstance(m, nn.Module) else m.model),
        lambda m: attribution.NeuronGradient(m, m if isinstance(m, nn.Module) else m.model),
    ],
    ids=["Saliency", "IntegratedGradients", "Occlusion", "FeatureAblation", "LayerGradCam", "NeuronGradient"],
)
@pytest.mark.parametrize("kind", ["device=meta", "under torch.device", "ModelScores"])
def test_a_model_on_the_meta_device_is_refused_with_how_to_materialise_it(make, kind):
    model = _meta_models()[kind]
    with pytest.raises(ArgumentError, match=r"forward_func: the parameters of .* are on the meta device.*to_empty"):
        make(model)
    materialised = nn.Linear(3, 2, device="meta").to_empty(device="cpu")
    make(materialised)  # no error once the parameters hold data


# --------------------------------------------------------------------------- layers that receive no gradient


class _CheckpointedCNN(nn.Module):
    """A CNN whose middle block runs inside gradient checkpointing (or under no_grad), or plainly."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        h = torch.relu(self.conv1(x))
        if self.mode in ("reentrant", "non_reentrant"):
            h = checkpoint(self.block, h, use_reentrant=self.mode == "reentrant")
        elif self.mode == "no_grad":
            with torch.no_grad():
                h = self.block(h)
        else:
            h = self.block(h)
        return self.fc(h.mean((2, 3)))


LAYER_GRADIENT_CALLS = {
    "LayerGradCam": lambda m, layer: attribution.LayerGradCam(m, layer).attribute(X, target=0),
    "LayerConductance": lambda m, layer: attribution.LayerConductance(m, layer).attribute(X, target=0, n_steps=4),
    "LayerIntegratedGradients": lambda m, layer: attribution.LayerIntegratedGradients(m, layer).attribute(
        X, target=0, n_steps=4
    ),
    "LayerGradientXActivation": lambda m, layer: attribution.LayerGradientXActivation(m, layer).attribute(X, target=0),
    "InternalInfluence": lambda m, layer: attribution.InternalInfluence(m, layer).attribute(X, target=0, n_steps=4),
    "LayerLRP": lambda m, layer: attribution.LayerLRP(m, layer).attribute(X, target=0),
    "NeuronGradient": lambda m, layer: attribution.NeuronGradient(m, layer).attribute(X, (0, 1, 1)),
    "NeuronIntegratedGradients": lambda m, layer: attribution.NeuronIntegratedGradients(m, layer).attribute(
        X, (0, 1, 1), n_steps=4
    ),
    "NeuronConductance": lambda m, layer: attribution.NeuronConductance(m, layer).attribute(
        X, (0, 1, 1), target=0, n_steps=4
    ),
}
NO_GRADIENT = r"layer: the output of \w+ does not require grad during the forward.*use_reentrant=False"


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # torch's, for layer IG's rows
@pytest.mark.parametrize("method", sorted(LAYER_GRADIENT_CALLS))
def test_a_layer_inside_reentrant_checkpointing_raises_instead_of_giving_zeros(method):
    model = _CheckpointedCNN("reentrant")
    for layer in (model.block, model.block[0]):
        with pytest.raises(ArgumentError, match=NO_GRADIENT):
            LAYER_GRADIENT_CALLS[method](model, layer)


@pytest.mark.parametrize("method", sorted(LAYER_GRADIENT_CALLS))
def test_non_reentrant_checkpointing_gives_the_plain_models_attributions(method):
    plain, checkpointed = _CheckpointedCNN("plain"), _CheckpointedCNN("non_reentrant")
    for name in ("block", "block.0"):
        expected = LAYER_GRADIENT_CALLS[method](plain, name)
        got = LAYER_GRADIENT_CALLS[method](checkpointed, name)
        assert torch.count_nonzero(expected) > 0
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("method", sorted(LAYER_GRADIENT_CALLS))
def test_no_grad_inside_the_forward(method):
    plain, frozen = _CheckpointedCNN("plain"), _CheckpointedCNN("no_grad")
    if _record(method).takes_neuron_selector:  # the unit's value is cut from the inputs
        with pytest.raises(ArgumentError, match=NO_GRADIENT):
            LAYER_GRADIENT_CALLS[method](frozen, "block")
    else:  # what follows the frozen block still depends on its output: the gradient is defined
        torch.testing.assert_close(
            LAYER_GRADIENT_CALLS[method](frozen, "block"), LAYER_GRADIENT_CALLS[method](plain, "block")
        )
    with pytest.raises(ArgumentError, match=NO_GRADIENT):  # block[1] runs without autograd after it
        LAYER_GRADIENT_CALLS[method](frozen, "block.0")
