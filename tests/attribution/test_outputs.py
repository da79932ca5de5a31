"""attribution.outputs: class scores from what models return, and the engine on top of them."""

from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from attribution import IntegratedGradients, LayerGradCam, Occlusion
from attribution.outputs import ModelScores, class_scores, default_output_transform
from attribution.utils import channels_last_reshape, token_grid_reshape

LOGITS = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])


@pytest.mark.parametrize(
    "output",
    [
        LOGITS,
        (LOGITS, torch.zeros(2)),
        [LOGITS],
        {"logits": LOGITS, "out": torch.zeros(1)},
        OrderedDict(out=LOGITS, aux=torch.zeros(1)),
        SimpleNamespace(logits=LOGITS, loss=None),  # a Hugging Face ModelOutput has .logits
    ],
    ids=["tensor", "tuple", "list", "mapping-logits", "mapping-out", "object-logits"],
)
def test_the_default_transform_finds_the_scores(output):
    assert default_output_transform(output) is LOGITS


def test_an_output_without_scores_names_output_transform():
    with pytest.raises(TypeError, match="output_transform: cannot find the scores .* type dict"):
        default_output_transform({"hidden": LOGITS})


def test_one_logit_is_a_binary_classifier():
    logit = torch.tensor([2.0, -0.5, 0.0])
    for shape in ((3,), (3, 1)):
        scores = class_scores(logit.view(shape))
        assert torch.equal(scores, torch.stack([-logit, logit], dim=1))  # class 0 explains the negation
        assert scores.argmax(1).tolist() == [1, 0, 0]  # the prediction is logit > 0


def test_segmentation_scores_sum_over_pixels_or_a_region():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).view(2, 3, 4, 4)
    torch.testing.assert_close(class_scores(maps), maps.sum((2, 3)))
    region = torch.zeros(2, 4, 4, dtype=torch.bool)
    region[0, :2] = True
    region[1, :, 3] = True
    expected = torch.stack([maps[0, :, :2].sum((1, 2)), maps[1, :, :, 3].sum(1)])
    torch.testing.assert_close(class_scores(maps, region), expected)
    stacked = torch.cat([maps, maps, maps])  # methods evaluate copies of the batch: row r is example r % 2
    torch.testing.assert_close(class_scores(stacked, region), expected.repeat(3, 1))
    half = region[:, ::2, ::2]  # a region at another resolution is resized with nearest neighbours
    assert class_scores(maps, half).shape == (2, 3)
    with pytest.raises(ValueError, match="region: a region mask needs spatial scores"):
        class_scores(LOGITS, region)


class _Segmenter(nn.Module):
    """A linear per-pixel classifier returning torchvision's {"out": (N, C, H, W)}."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return {"out": self.head(x)}


def test_integrated_gradients_on_a_segmentation_model_explain_the_masked_class_score():
    torch.manual_seed(0)
    model, x = _Segmenter(), torch.rand(2, 3, 6, 6)
    region = torch.rand(2, 6, 6) > 0.5
    scores = ModelScores(model, with_region=True)
    attr, delta = IntegratedGradients(scores).attribute(
        x, target=2, additional_forward_args=(region,), return_convergence_delta=True
    )
    # The model is linear per pixel: IG is w_c[channel] * x where the region is on, and 0 elsewhere.
    expected = model.head.weight[2, :, 0, 0].view(1, 3, 1, 1) * x * region[:, None]
    torch.testing.assert_close(attr, expected.detach(), rtol=1e-5, atol=1e-6)
    assert delta.abs().max() < 1e-5


class _TokenModel(nn.Module):
    """Takes input_ids and attention_mask by keyword and returns an object with .logits."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids=None, attention_mask=None):
        hidden = self.embed(input_ids) * attention_mask[..., None]
        return SimpleNamespace(logits=self.head(hidden.sum(1)))


def test_keyword_tensors_travel_with_the_batch():
    torch.manual_seed(0)
    model = _TokenModel()
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = (ids != 0).long()
    scores = ModelScores(model, input_key="input_ids", forward_keys=("attention_mask",))
    torch.testing.assert_close(scores(ids, mask), model(input_ids=ids, attention_mask=mask).logits)
    attr = Occlusion(scores).attribute(ids, (1,), target=1, additional_forward_args=(mask,))
    assert attr.is_floating_point()  # token ids in, float attributions out (pad id 0 is the baseline)
    assert (attr[mask == 0] == 0).all()  # masked tokens cannot change the output
    with pytest.raises(ValueError, match="additional_forward_args: expected the tensors \\['attention_mask'\\]"):
        scores(ids)


def test_layer_gradcam_reshapes_tokens_and_channels_last_maps():
    torch.manual_seed(0)
    grid = torch.rand(2, 5, 3, 4)  # (N, C, h, w)

    class Tokens(nn.Module):  # emits (N, 1 + h*w, C) tokens, then pools them
        def __init__(self):
            super().__init__()
            self.blocks = nn.Identity()
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            tokens = torch.cat([x.mean((2, 3))[:, None], x.flatten(2).transpose(1, 2)], dim=1)
            return self.head(self.blocks(tokens)[:, 1:].mean(1))

    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Identity()
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            return self.head(self.blocks(x.permute(0, 2, 3, 1)).mean((1, 2)))

    class ChannelsFirst(nn.Module):
        def __init__(self, head):
            super().__init__()
            self.blocks = nn.Identity()
            self.head = head

        def forward(self, x):
            return self.head(self.blocks(x).mean((2, 3)))

    tokens, last = Tokens(), ChannelsLast()
    last.head = tokens.head
    reference = LayerGradCam(ChannelsFirst(tokens.head), "blocks").attribute(grid, target=1)
    from_tokens = LayerGradCam(tokens, "blocks", reshape_transform=token_grid_reshape(3, 4)).attribute(grid, target=1)
    from_last = LayerGradCam(last, "blocks", reshape_transform=channels_last_reshape).attribute(grid, target=1)
    assert reference.shape == (2, 1, 3, 4)
    torch.testing.assert_close(from_tokens, reference)
    torch.testing.assert_close(from_last, reference)
    with pytest.raises(ValueError, match=r"reshape_transform: expected tokens \(N, 1 \+ 4\*4, D\)"):
        LayerGradCam(tokens, "blocks", reshape_transform=token_grid_reshape(4, 4)).attribute(grid, target=1)
    with pytest.raises(TypeError, match="reshape_transform: expected a callable"):
        LayerGradCam(tokens, "blocks", reshape_transform="vit")
