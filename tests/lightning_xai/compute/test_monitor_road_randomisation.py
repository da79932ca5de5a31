"""The monitor's ROAD and randomisation metrics: the engine's values with the probe settings, reproducible
from the seed, the same in any chunks of the probe, the model untouched, and non-image probes refused once."""

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from attribution import IntegratedGradients, Saliency
from attribution.metrics import randomization_similarity, road
from attribution.outputs import ModelScores
from lightning_xai import AttributionMonitor
from lightning_xai._compute.expected import MetricPlan
from lightning_xai._compute.explain import RANDOMISED_LAYERS, Subject, explain, untouched_training_state
from lightning_xai._compute.faithfulness import ROAD_PERCENTAGES, road_kept, road_unavailable
from lightning_xai._compute.history import History
from lightning_xai._compute.shards import Shards
from lightning_xai._config import tags
from tests.models import MLP, SmallCNN, seeded

REQUESTED = ("road", "randomisation")
LOGGED = {"road", "randomisation_similarity"}
X = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def _patch_model() -> nn.Module:
    """Class 0 scores the sum of a bright 2x2 patch (4 when it is there), class 1 a constant 2."""
    patch = torch.zeros(1, 6, 6)
    patch[0, 2:4, 2:4] = 1.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([patch.flatten(), torch.zeros(36)]))
        model[1].bias.copy_(torch.tensor([0.0, 2.0]))
    return model.eval()


def test_road_is_the_engines_morf_accuracy_over_the_percentages():
    model = seeded(SmallCNN).eval()
    targets = model(X).argmax(1)
    maps = IntegratedGradients(model).attribute(X, target=targets, n_steps=8)
    kept = road_kept(model, X, maps, targets, (), seed=0, noise=0.0)
    engine = road(model, X, maps, targets, percentages=ROAD_PERCENTAGES, score="accuracy", noise=0.0)
    torch.testing.assert_close(kept, engine.mean(1))
    assert kept.shape == (5,) and ((kept >= 0) & (kept <= 1)).all()


def test_road_scores_a_map_of_the_evidence_low_and_its_opposite_high():
    model = _patch_model()
    image = torch.zeros(2, 1, 6, 6)
    image[:, 0, 2:4, 2:4] = 1.0
    evidence = image * model[1].weight[0].view(1, 1, 6, 6)  # integrated gradients of the linear class score
    targets = torch.zeros(2, dtype=torch.long)
    assert road_kept(model, image, evidence, targets, (), seed=0).tolist() == [0.0, 0.0]
    assert road_kept(model, image, -evidence, targets, (), seed=0).tolist() == [1.0, 1.0]


def test_road_is_reproducible_the_same_in_any_chunk_and_leaves_the_global_rng_alone():
    model = seeded(SmallCNN).eval()
    targets = model(X).argmax(1)
    maps = torch.randn(X.shape, generator=torch.Generator().manual_seed(3))
    rng = torch.get_rng_state()
    whole = road_kept(model, X, maps, targets, (), seed=7, noise=0.5)  # noise large enough to matter
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(whole, road_kept(model, X, maps, targets, (), seed=7, noise=0.5))
    parts = [road_kept(model, X[s], maps[s], targets[s], (), seed=7, noise=0.5) for s in (slice(0, 2), slice(2, 5))]
    assert torch.equal(torch.cat(parts), whole)


def test_road_needs_image_inputs():
    assert road_unavailable(X) is None
    for inputs in (torch.randn(4, 6), torch.randint(0, 5, (4, 1, 3, 3))):
        reason = road_unavailable(inputs)
        assert reason is not None and "images (N, C, H, W)" in reason and str(tuple(inputs.shape)) in reason


def _explained(model, methods=("saliency", "integrated_gradients"), chunk=5, seed=3, subject=None, inputs=X):
    subject = subject or Subject(model)
    with untouched_training_state(model, seed):
        targets = subject.scores(inputs).argmax(1)
        results, failures = explain(
            subject, {m: {} for m in methods}, inputs, targets, None, REQUESTED, Shards(len(inputs), chunk), seed
        )
    assert not failures, failures
    return {r.method: r.metrics for r in results}


def test_both_are_logged_in_range_reproducibly_and_the_same_in_any_chunks():
    model = seeded(SmallCNN)
    whole = _explained(model)
    for method, metrics in whole.items():
        assert LOGGED <= set(metrics), method
        assert 0 <= metrics["road"] <= 1
        assert -1 <= metrics["randomisation_similarity"] < 1  # the gradient depends on the last layer
    assert whole == _explained(model)
    for chunk in (2,):  # uneven chunks: 2, 2 and 1
        chunked = _explained(model, chunk=chunk)
        for method, metrics in whole.items():
            assert chunked[method] == pytest.approx(metrics, rel=1e-5, abs=1e-6), (method, chunk)


def test_randomisation_is_the_engines_similarity_with_the_top_layer_reinitialised_from_the_seed():
    model = seeded(SmallCNN)
    mean = _explained(model, methods=("saliency",), seed=11)["saliency"]["randomisation_similarity"]
    with untouched_training_state(model, 11):
        targets = model(X).argmax(1)
        engine = randomization_similarity(
            model, lambda m, x: Saliency(m).attribute(x, target=targets), X, top_layers=RANDOMISED_LAYERS, seed=11
        )
    assert mean == pytest.approx(float(engine.mean()), rel=1e-5)
    other = _explained(model, methods=("saliency",), seed=12)["saliency"]["randomisation_similarity"]
    assert other != mean  # another point's seed, another re-initialisation


def test_the_model_is_left_as_it_was():
    model = seeded(SmallCNN)
    model.conv1.train()
    model.conv2.bias.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 3.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    _explained(model, methods=("saliency", "gradient_shap"))  # gradient_shap draws noise: the copy is explained twice
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 3.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_wrapped_forward_and_a_layer_are_taken_from_the_copy():
    model = seeded(SmallCNN)
    plain = _explained(model, methods=("saliency",))["saliency"]
    wrapped = Subject(ModelScores(model, lambda out: {"logits": out}["logits"]))
    assert _explained(model, methods=("saliency",), subject=wrapped)["saliency"] == pytest.approx(plain, rel=1e-6)
    layered = _explained(model, methods=("guided_gradcam",), subject=Subject(model, layer=model.conv2))
    assert -1 <= layered["guided_gradcam"]["randomisation_similarity"] < 1


def test_a_probe_that_is_no_image_gets_no_road_and_says_why():
    model = seeded(MLP)
    inputs = torch.randn(4, 6)
    with untouched_training_state(model, 0):
        targets = model(inputs).argmax(1)
        results, failures = explain(Subject(model), {"saliency": {}}, inputs, targets, None, ("road", "deletion"))
    assert set(failures) == {"road"} and "images (N, C, H, W)" in str(failures["road"])
    assert "road" not in results[0].metrics and "deletion_auc" in results[0].metrics


def test_names_charts_and_plan():
    assert {"road", "randomisation"} <= set(tags.QUALITY_METRICS)
    assert tags.logged_name("randomisation") == "randomisation_similarity" and tags.logged_name("road") == "road"
    plan = MetricPlan(("saliency", "layer_gradcam"), REQUESTED)
    assert LOGGED <= plan.for_method("saliency") and not LOGGED & plan.for_method("layer_gradcam")
    assert "class score to the inputs" in plan.missing_reason("layer_gradcam", "road", 0, History())
    layout = tags.custom_scalars_layout(plan.logged())
    assert "road" in str(layout["explanations: faithfulness"])
    assert "randomisation_similarity" in str(layout["explanations: sanity"])


class _Vectors(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = MLP()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_monitor_warns_once_that_road_needs_images_and_logs_the_rest(tmp_path):
    data = TensorDataset(torch.randn(8, 6, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3)
    loader = DataLoader(data, batch_size=4)
    monitor = AttributionMonitor(["saliency"], metrics=["road", "randomisation"], num_probe_samples=4, gradcam=False)
    trainer = L.Trainer(
        callbacks=[monitor],
        default_root_dir=tmp_path,
        logger=False,
        max_epochs=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_Vectors(), loader, loader)
    about_road = [str(w.message) for w in caught if "'road' removes pixels of images" in str(w.message)]
    assert len(about_road) == 1, about_road  # three points, one warning
    assert "(4, 6)" in about_road[0]
    records = monitor._history.manifest
    assert len(records) == 3 and all(r["method"] == "saliency" for r in records)  # start, two epoch ends
    assert all(-1 <= r["metrics"]["randomisation_similarity"] <= 1 and "road" not in r["metrics"] for r in records)
