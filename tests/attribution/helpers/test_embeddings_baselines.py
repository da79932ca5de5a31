"""TokenReferenceBase, interpretable embeddings (configure / remove) and ProductBaselines."""

import random

import pytest
import torch
from torch import nn

from attribution import (
    ArgumentError,
    ArgumentTypeError,
    FeatureAblation,
    IntegratedGradients,
    InterpretableEmbeddingBase,
    LayerIntegratedGradients,
    ProductBaselines,
    TokenReferenceBase,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)


class TextClassifier(nn.Module):
    """Token ids -> embeddings -> nonlinear encoder -> mean over tokens -> 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.text = nn.ModuleDict({"positions": nn.Embedding(6, 4)})
        self.fc = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = self.text["positions"](torch.arange(ids.shape[1]))
        return self.fc(self.encoder(self.embedding(ids) + positions).mean(1))


def _model() -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier().eval()


IDS = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])


# --------------------------------------------------------------------------- TokenReferenceBase


def test_token_reference_is_a_sequence_of_the_reference_token():
    reference = TokenReferenceBase(reference_token_idx=7).generate_reference(5, device=torch.device("cpu"))
    assert reference.dtype == torch.long and reference.tolist() == [7] * 5
    assert TokenReferenceBase().generate_reference(0, "cpu").shape == (0,)
    with pytest.raises(ArgumentError, match="reference_token_idx"):
        TokenReferenceBase(-1)
    with pytest.raises(ArgumentError, match="sequence_length"):
        TokenReferenceBase().generate_reference(2.5, "cpu")


# --------------------------------------------------------------------------- interpretable embeddings


def test_configured_model_takes_embeddings_and_gives_the_same_outputs():
    model = _model()
    expected = model(IDS)
    emb = configure_interpretable_embedding_layer(model, "embedding")
    try:
        assert model.embedding is emb and isinstance(emb, InterpretableEmbeddingBase)
        assert (emb.num_embeddings, emb.embedding_dim, emb.full_name) == (10, 4, "embedding")
        embeddings = emb.indices_to_embeddings(IDS)
        assert embeddings.shape == (2, 5, 4)
        torch.testing.assert_close(model(embeddings), expected)
    finally:
        remove_interpretable_embedding_layer(model, emb)


def test_integrated_gradients_on_the_configured_model_equals_layer_integrated_gradients():
    model = _model()
    reference = TokenReferenceBase(0).generate_reference(IDS.shape[1], IDS.device).expand_as(IDS)
    layer_attr = LayerIntegratedGradients(model, model.embedding).attribute(
        IDS, baselines=reference, target=1, n_steps=20
    )
    emb = configure_interpretable_embedding_layer(model, "embedding")
    try:
        inputs, baselines = emb.indices_to_embeddings(IDS), emb.indices_to_embeddings(reference)
        attr, delta = IntegratedGradients(model).attribute(
            inputs, baselines=baselines, target=1, n_steps=20, return_convergence_delta=True
        )
    finally:
        remove_interpretable_embedding_layer(model, emb)
    torch.testing.assert_close(attr, layer_attr)
    assert delta.abs().max() < 1e-3


def test_remove_restores_the_same_module_object_and_the_model_exactly():
    model = _model()
    original, expected = model.embedding, model(IDS)
    parameters = dict(model.named_parameters())
    modes = {name: m.training for name, m in model.named_modules()}
    model.embedding.train()  # a flag of its own, which configure and remove keep
    emb = configure_interpretable_embedding_layer(model, "embedding")
    assert emb.training and not model.training
    remove_interpretable_embedding_layer(model, emb)
    assert model.embedding is original and model.embedding.training
    model.embedding.eval()
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert dict(model.named_parameters()).keys() == parameters.keys()
    assert all(p is parameters[name] for name, p in model.named_parameters())
    torch.testing.assert_close(model(IDS), expected)


def test_nested_names_and_layers_inside_containers():
    model = _model()
    expected = model(IDS)
    emb = configure_interpretable_embedding_layer(model, "text.positions")
    assert model.text["positions"] is emb
    torch.testing.assert_close(emb.indices_to_embeddings(torch.arange(5)), emb.embedding.weight[:5])
    remove_interpretable_embedding_layer(model, emb)
    torch.testing.assert_close(model(IDS), expected)
    sequential = nn.Sequential(nn.Embedding(10, 3), nn.Flatten())
    emb = configure_interpretable_embedding_layer(sequential, "0")
    torch.testing.assert_close(sequential(emb.indices_to_embeddings(IDS)), sequential[1](emb.embedding(IDS)))
    remove_interpretable_embedding_layer(sequential, emb)
    assert isinstance(sequential[0], nn.Embedding)


def test_forward_takes_the_embeddings_positionally_or_by_keyword():
    emb = InterpretableEmbeddingBase(nn.Embedding(3, 2), "embedding")
    x = torch.randn(2, 2)
    assert emb(x, "ignored") is x and emb(embeddings=x, other=1) is x
    with pytest.raises(ArgumentError, match="embedding"):
        emb()


def test_misuse_is_refused_naming_the_argument():
    model = _model()
    with pytest.raises(ArgumentError, match="embeding.*close matches.*'embedding'"):
        configure_interpretable_embedding_layer(model, "embeding")
    emb = configure_interpretable_embedding_layer(model, "embedding")
    with pytest.raises(ArgumentError, match="already"):
        configure_interpretable_embedding_layer(model, "embedding")
    with pytest.raises(ArgumentError, match="interpretable_emb"):
        remove_interpretable_embedding_layer(_model(), emb)  # another model
    remove_interpretable_embedding_layer(model, emb)
    with pytest.raises(ArgumentError, match="interpretable_emb"):
        remove_interpretable_embedding_layer(model, emb)  # twice
    with pytest.raises(ArgumentTypeError, match="interpretable_emb"):
        remove_interpretable_embedding_layer(model, model.embedding)
    with pytest.raises(ArgumentTypeError, match="model"):
        configure_interpretable_embedding_layer(lambda x: x, "embedding")


def test_embedding_parity_with_captum():
    captum_base = pytest.importorskip("captum.attr._models.base")
    ours_model, theirs_model = _model(), _model()
    ours = configure_interpretable_embedding_layer(ours_model, "embedding")
    with pytest.warns(UserWarning):
        theirs = captum_base.configure_interpretable_embedding_layer(theirs_model, "embedding")
    torch.testing.assert_close(ours.indices_to_embeddings(IDS), theirs.indices_to_embeddings(IDS))
    x = ours.indices_to_embeddings(IDS).detach()
    torch.testing.assert_close(ours_model(x), theirs_model(x))
    remove_interpretable_embedding_layer(ours_model, ours)
    captum_base.remove_interpretable_embedding_layer(theirs_model, theirs)
    assert type(ours_model.embedding) is type(theirs_model.embedding) is nn.Embedding


# --------------------------------------------------------------------------- ProductBaselines


def test_draws_come_only_from_the_given_values_and_cover_the_product():
    values = [[1, 2, 3], [4, 5, 6, 7], [8, 9]]
    baselines = ProductBaselines(values, seed=0)
    draws = [baselines() for _ in range(400)]
    assert all(isinstance(d, list) and all(v in vs for v, vs in zip(d, values)) for d in draws)
    assert len({tuple(d) for d in draws}) == 3 * 4 * 2


def test_dict_and_joint_keys():
    values = {("f1", "f2"): [(1, "1"), (2, "2"), (3, "3")], "f3": [4, 5]}
    draws = [ProductBaselines(values, seed=s).sample() for s in range(30)]
    for draw in draws:
        assert list(draw) == ["f1", "f2", "f3"]
        assert (draw["f1"], draw["f2"]) in values[("f1", "f2")] and draw["f3"] in values["f3"]
    assert len({tuple(d.values()) for d in draws}) == 6


def test_the_global_random_state_is_left_alone_and_a_seed_repeats_the_draws():
    random.seed(5)
    state = random.getstate()
    first = [ProductBaselines([[0, 1, 2, 3]] * 4, seed=3)() for _ in range(5)]
    assert random.getstate() == state
    assert first == [ProductBaselines([[0, 1, 2, 3]] * 4, seed=3)() for _ in range(5)]
    sequence = ProductBaselines([list(range(100))], seed=1)
    assert len({sequence()[0] for _ in range(20)}) > 1  # one generator per object: draws differ per call


def test_it_is_a_baselines_argument_with_one_value_per_input():
    model = nn.Linear(5, 1)
    inputs = (torch.rand(3, 2), torch.rand(3, 3))
    forward = lambda a, b: model(torch.cat([a, b], 1))  # noqa: E731
    candidates = [[0.0, 0.5, -1.0], [2.0, 3.0]]
    got = FeatureAblation(forward).attribute(inputs, baselines=ProductBaselines(candidates, seed=4))
    drawn = ProductBaselines(candidates, seed=4)()
    expected = FeatureAblation(forward).attribute(inputs, baselines=tuple(drawn))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_bad_baseline_values_are_refused():
    with pytest.raises(ArgumentTypeError, match="baseline_values"):
        ProductBaselines(3)
    with pytest.raises(ArgumentError, match=r"baseline_values\[1\]"):
        ProductBaselines([[1], []])
    with pytest.raises(ArgumentError, match="2 values"):
        ProductBaselines({("a", "b"): [(1, 2), (3,)]})
    with pytest.raises(ArgumentTypeError, match="baseline_values"):
        ProductBaselines({1: [0]})


def test_baselines_parity_with_captum_structure():
    captum = pytest.importorskip("captum.attr")
    values = {("f1", "f2"): [(1, "1"), (2, "2")], "f3": [4, 5]}
    theirs, ours = captum.ProductBaselines(values)(), ProductBaselines(values)()
    assert type(theirs) is type(ours) and list(theirs) == list(ours)
    assert captum.ProductBaselines(values).baseline_values == ProductBaselines(values).baseline_values
