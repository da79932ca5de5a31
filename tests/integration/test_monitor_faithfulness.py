"""The faithfulness and complexity metrics of AttributionMonitor in a real Trainer, read back from TensorBoard."""

import glob
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import nn

from lightning_xai import AttributionMonitor
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow

FAITHFULNESS = ["deletion", "insertion", "faithfulness_correlation", "sparseness", "complexity"]
LOGGED = ["deletion_auc", "insertion_auc", "faithfulness_correlation", "sparseness", "complexity"]
SIZE = 16
N_FEATURES = 3 * SIZE * SIZE  # every input element is a feature


class LinearShapes(ShapesNet):
    """A linear model on the flattened images: integrated gradients from a zero baseline is exact, ``x * w``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(N_FEATURES, 3))


def _fit(tmp_path, model_class, monitor):
    L.seed_everything(0, verbose=False)
    model = model_class()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="logs", version=0),
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        max_epochs=1,
    )
    trainer.fit(model, datamodule=ShapesDataModule(n_train=128, n_val=32, size=SIZE, batch_size=64))
    (path,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"scalars": 0})
    events.Reload()
    return events


def _values(events, tag):
    return [event.value for event in events.Scalars(tag)]


def _layout(events):
    """The custom-scalars layout written to the event file: group title -> chart titles."""
    for event in EventFileLoader(events.path).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "custom_scalars":
                layout = layout_pb2.Layout()
                layout.ParseFromString(value.tensor.string_val[0])
                return {category.title: [chart.title for chart in category.chart] for category in layout.category}
    return {}


def test_the_faithfulness_metrics_are_logged_in_range_with_their_chart_group(tmp_path):
    monitor = AttributionMonitor(
        ["integrated_gradients", "saliency"], metrics=FAITHFULNESS, num_probe_samples=4, on_error="raise"
    )
    events = _fit(tmp_path, ShapesNet, monitor)
    tags = set(events.Tags()["scalars"])
    for method in ("integrated_gradients", "saliency"):
        values = {metric: _values(events, f"xai/{method}/{metric}") for metric in LOGGED}
        for metric, logged in values.items():
            assert len(logged) == 2, (method, metric)  # before the first step and at the epoch's end
            assert all(math.isfinite(v) for v in logged), (method, metric, logged)
        assert all(-1 <= v <= 1 for v in values["faithfulness_correlation"])
        assert all(0 <= v <= 1 for v in values["sparseness"])
        assert all(0 <= v <= math.log(N_FEATURES) + 1e-5 for v in values["complexity"])
    # GradCAM's maps are of a layer, not of the inputs: no faithfulness metric for it.
    assert not {tag for tag in tags if tag.startswith("xai/layer_gradcam/") and tag.split("/")[-1] in LOGGED}
    assert "explanations: faithfulness" in _layout(events)
    assert len(_layout(events)["explanations: faithfulness"]) == len(LOGGED)


def test_integrated_gradients_on_a_linear_model_is_perfectly_faithful(tmp_path):
    """On a linear model the score drop of any subset is exactly the sum of IG's attributions in it, so the
    correlation is 1 up to rounding, which 16 random subsets do not reach by chance; saliency's |w| is not."""
    monitor = AttributionMonitor(
        ["integrated_gradients", "saliency"],
        metrics=["faithfulness_correlation"],
        num_probe_samples=6,
        gradcam=False,
        on_error="raise",
    )
    events = _fit(tmp_path, LinearShapes, monitor)
    exact = _values(events, "xai/integrated_gradients/faithfulness_correlation")
    assert exact == pytest.approx([1.0] * len(exact), abs=1e-4)
    assert max(_values(events, "xai/saliency/faithfulness_correlation")) < 0.9


def test_the_values_do_not_depend_on_the_chunk_size(tmp_path):
    """The curves are deterministic and the correlation's subsets come from the monitor's seed alone."""

    def run(where, chunk):
        monitor = AttributionMonitor(
            ["integrated_gradients"], metrics=FAITHFULNESS, num_probe_samples=4, gradcam=False, probe_chunk_size=chunk
        )
        events = _fit(where, ShapesNet, monitor)
        return {metric: _values(events, f"xai/integrated_gradients/{metric}") for metric in LOGGED}

    whole, chunked = run(tmp_path / "whole", None), run(tmp_path / "chunked", 1)
    for metric in LOGGED:
        assert chunked[metric] == pytest.approx(whole[metric], rel=1e-4, abs=1e-5), metric


# ------------------------------------------------------------------ ROAD and the randomisation check

SANITY = ["road", "randomisation"]
SANITY_LOGGED = ["road", "randomisation_similarity"]


def test_road_and_randomisation_are_logged_in_range_in_their_chart_groups(tmp_path):
    monitor = AttributionMonitor(
        ["integrated_gradients", "saliency"], metrics=SANITY, num_probe_samples=4, on_error="raise"
    )
    events = _fit(tmp_path, ShapesNet, monitor)
    for method in ("integrated_gradients", "saliency"):
        road, similar = (_values(events, f"xai/{method}/{metric}") for metric in SANITY_LOGGED)
        assert len(road) == len(similar) == 2, method  # before the first step and at the epoch's end
        assert all(0 <= v <= 1 for v in road), (method, road)
        assert all(-1 <= v < 1 for v in similar), (method, similar)  # the maps depend on the classifier's weights
    assert not {tag for tag in events.Tags()["scalars"] if tag.startswith("xai/layer_gradcam/road")}
    layout = _layout(events)
    assert any(title.startswith("ROAD") for title in layout["explanations: faithfulness"])
    assert len(layout["explanations: sanity"]) == 1


def test_road_and_randomisation_do_not_depend_on_the_chunk_size(tmp_path):
    """ROAD's noise is one draw per percentage from the point's seed, and the copy's re-initialisation too."""

    def run(where, chunk):
        monitor = AttributionMonitor(
            ["integrated_gradients"], metrics=SANITY, num_probe_samples=4, gradcam=False, probe_chunk_size=chunk
        )
        events = _fit(where, ShapesNet, monitor)
        return {metric: _values(events, f"xai/integrated_gradients/{metric}") for metric in SANITY_LOGGED}

    whole, chunked = run(tmp_path / "whole", None), run(tmp_path / "chunked", 1)
    for metric in SANITY_LOGGED:
        assert chunked[metric] == pytest.approx(whole[metric], rel=1e-4, abs=1e-5), metric


def test_training_gives_the_same_weights_with_road_and_randomisation_as_without(tmp_path):
    weights = []
    for name, metrics in (("without", []), ("with", SANITY)):
        L.seed_everything(0, verbose=False)
        model = ShapesNet()
        monitor = AttributionMonitor(["saliency"], metrics=metrics, num_probe_samples=4, gradcam=False)
        trainer = L.Trainer(
            default_root_dir=tmp_path / name,
            accelerator="cpu",
            logger=TensorBoardLogger(tmp_path / name, name="logs", version=0),
            callbacks=[monitor],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            max_epochs=2,
        )
        trainer.fit(model, datamodule=ShapesDataModule(n_train=64, n_val=16, size=SIZE, batch_size=32))
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
