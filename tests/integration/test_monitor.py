"""AttributionMonitor inside real Trainers: logs, artifacts, state, resume, errors, CLI."""

import glob
import json
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attribution import Saliency
from lightning_xai import (
    AttributionMonitor,
    AttributionMonitorError,
    ConceptMonitor,
    InfluenceMonitor,
    LanguageModelMonitor,
    RobustnessMonitor,
)
from lightning_xai.demos.shapes import SHAPES_MEAN, SHAPES_STD, ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow

METHODS = ["integrated_gradients", "occlusion", "gradient_shap"]


def _data(**kwargs):
    return ShapesDataModule(n_train=192, n_val=64, size=16, batch_size=64, **kwargs)


def _trainer(tmp_path, callbacks=(), logger=True, **kwargs):
    if logger is True:
        logger = TensorBoardLogger(tmp_path, name="logs", version=0)
    return L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=logger,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        **{"max_epochs": 2, "enable_checkpointing": False, **kwargs},
    )


def _fit(tmp_path, callbacks=(), seed=0, **kwargs):
    L.seed_everything(seed, verbose=False)
    model = ShapesNet()
    trainer = _trainer(tmp_path, callbacks, **kwargs)
    trainer.fit(model, datamodule=_data())
    return model, trainer


def _events(tmp_path):
    (path,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_training_is_identical_with_and_without_the_monitor(tmp_path):
    monitor = AttributionMonitor(
        {"gradient_shap": {}, "occlusion": {}},
        metrics=("infidelity", "sensitivity"),
        num_probe_samples=3,
        on_error="raise",
    )
    plain, plain_trainer = _fit(tmp_path / "plain")
    watched, watched_trainer = _fit(tmp_path / "watched", [monitor])
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(a, b), name
    for key in ("val_loss", "val_acc"):
        assert torch.equal(plain_trainer.callback_metrics[key], watched_trainer.callback_metrics[key])
    # Before the first step, then at both epoch ends (3 steps each): 2 methods + GradCAM per point.
    assert [(r["step"], r["epoch"]) for r in monitor.history] == [(0, 0)] * 3 + [(3, 0)] * 3 + [(6, 1)] * 3


class _Spy(Callback):
    """Records the model's state when its hook runs (placed before and after the monitor)."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(
            {
                "training": {name: m.training for name, m in pl_module.named_modules()},
                "grads": [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
                "requires_grad": [p.requires_grad for p in pl_module.parameters()],
                "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in pl_module.modules()),
                "rng": torch.get_rng_state(),
            }
        )


def test_the_monitor_leaves_modes_grads_hooks_and_rng_alone(tmp_path):
    class PartlyFrozen(ShapesNet):
        def on_train_epoch_start(self):
            self.features[0].eval()  # a module the user keeps in eval mode
            self.features[0].weight.requires_grad_(False)

    before, after = _Spy(), _Spy()
    monitor = AttributionMonitor(METHODS, metrics=("infidelity",), on_error="raise")
    L.seed_everything(0, verbose=False)
    _trainer(tmp_path, [before, monitor, after]).fit(PartlyFrozen(), datamodule=_data())
    assert len(monitor.history) == 4 * 3  # 3 methods + GradCAM at 3 points: before training, 2 epoch ends
    for b, a in zip(before.seen, after.seen):
        assert b["training"] == a["training"] and b["requires_grad"] == a["requires_grad"]
        assert b["hooks"] == a["hooks"] and torch.equal(b["rng"], a["rng"])
        assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(b["grads"], a["grads"]))
    assert before.seen[0]["training"]["features.0"] is False  # the frozen module stayed in eval mode
    assert before.seen[0]["training"]["features.3"] is True


def test_tensorboard_gets_every_entry_at_the_global_step_of_its_point(tmp_path):
    monitor = AttributionMonitor(["integrated_gradients", "occlusion"], every_n_epochs=2, num_probe_samples=3)
    spy = _RecordWriterSpy()
    _fit(tmp_path, [monitor, spy], max_epochs=4, num_sanity_val_steps=2)
    assert spy.fast_during_fit and "write" not in vars(spy.record_writer)  # lightning_xai._write.records: the fit only
    events = _events(tmp_path)
    images, scalars = set(events.Tags()["images"]), set(events.Tags()["scalars"])
    points = [0, 6, 12]  # before training, then the ends of epochs 1 and 3 (3 steps an epoch)
    assert [(p.step, p.epoch) for p in monitor.points] == [(0, 0), (6, 1), (12, 3)]
    for method in ("integrated_gradients", "occlusion", "layer_gradcam"):
        assert [e.step for e in events.Images(f"xai_per_step/{method}")] == points
        for i in range(3):
            strips = events.Images(f"xai_per_sample/{method}/sample_{i}")  # every 10th point, and the last
            assert [e.step for e in strips] == [0, 12]
            assert strips[-1].height > strips[0].height  # more frames (two a row)
    assert [e.step for e in events.Images("xai_per_step/probe")] == [0]
    assert [e.step for e in events.Scalars("val_acc")] == [2, 5, 8, 11]  # the trainer's own curves, same axis
    for name in (
        "integrated_gradients/infidelity",
        "integrated_gradients/convergence_delta",
        "occlusion/infidelity",
        "integrated_gradients/mass_in_mask",
        "layer_gradcam/mass_in_mask",
    ):
        assert f"xai/{name}" in scalars
        assert [e.step for e in events.Scalars(f"xai/{name}")] == points
    assert [e.step for e in events.Scalars("xai/prediction_flips")] == points[1:]
    assert all(tag.startswith(("xai_overview/", "xai_per_sample/", "xai_per_step/")) for tag in images)
    assert [e.step for e in events.Images("xai_overview/occlusion")] == [12]  # the end-of-fit summary
    assert (tmp_path / "logs" / "version_0" / "xai" / "timeline_occlusion.png").exists()
    _assert_every_scalar_has_a_chart_and_no_chart_is_empty(tmp_path, scalars)


class _RecordWriterSpy(Callback):
    """Sees whether the logger's TensorBoard record writer checksums with lightning_xai._write.records."""

    def on_train_end(self, trainer, pl_module):
        self.record_writer = trainer.logger.experiment._get_file_writer().event_writer._async_writer._writer
        self.fast_during_fit = "write" in vars(self.record_writer)


def _assert_every_scalar_has_a_chart_and_no_chart_is_empty(tmp_path, scalars):
    charts = _custom_scalar_charts(tmp_path)
    logged = {tag for tag in scalars if tag.startswith(("xai/", "val"))}  # the monitor's and the validation curves
    assert logged and charts
    for tag in logged:
        assert any(re.match(pattern, tag) for pattern in charts.values()), f"no chart shows {tag}"
    for title, pattern in charts.items():
        assert any(re.match(pattern, tag) for tag in logged), f"the chart {title!r} stays empty"


def _custom_scalar_charts(tmp_path) -> dict[str, str]:
    """The custom-scalars layout written to the event file: chart title -> tag regex."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.custom_scalar import layout_pb2

    (path,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))
    for event in EventFileLoader(path).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "custom_scalars":
                layout = layout_pb2.Layout()
                layout.ParseFromString(value.tensor.string_val[0])
                return {
                    chart.title: pattern
                    for category in layout.category
                    for chart in category.chart
                    for pattern in chart.multiline.tag
                }
    return {}


def test_artifacts_hold_maps_and_a_manifest(tmp_path):
    monitor = AttributionMonitor(["integrated_gradients"], gradcam=False, num_probe_samples=4)
    _fit(tmp_path, [monitor])
    root = tmp_path / "logs" / "version_0" / "xai"
    manifest = json.loads((root / "manifest.json").read_text())
    assert [(r["step"], r["epoch"], r["method"]) for r in manifest] == [
        (0, 0, "integrated_gradients"),
        (3, 0, "integrated_gradients"),
        (6, 1, "integrated_gradients"),
    ]
    first, second, _ = (set(r["metrics"]) for r in manifest)
    assert first == {
        "convergence_delta",
        "infidelity",
        "mass_in_mask",
        "pointing_game",
        "mask_examples",
        "similarity_reference",
    }
    assert second == first | {"similarity_previous"}
    assert manifest[0]["metrics"]["similarity_reference"] == pytest.approx(1.0)  # the first point is the reference
    assert manifest[1]["maps"] == "maps_step_0000003.pt"
    maps = torch.load(root / manifest[1]["maps"], weights_only=True)
    assert maps["integrated_gradients"].dtype == torch.bfloat16  # float32's range: tiny attributions survive
    assert maps["integrated_gradients"].shape == (4, 1, 16, 16)  # summed over channels, at display size
    probe = torch.load(root / "probe.pt", weights_only=True)
    assert torch.equal(probe["inputs"], monitor.probe.inputs)
    assert set(probe["labels"].tolist()) == {0, 1, 2}  # every class in the probe


@pytest.mark.parametrize("logger", ["csv", "none"])
def test_without_tensorboard_scalars_go_to_the_logger_and_images_to_png(tmp_path, logger):
    monitor = AttributionMonitor(["integrated_gradients"], gradcam=False, num_probe_samples=2)
    chosen = CSVLogger(tmp_path, name="csv", version=0) if logger == "csv" else False
    _fit(tmp_path, [monitor], logger=chosen)
    root = Path(tmp_path / "csv" / "version_0" if logger == "csv" else tmp_path) / "xai"
    pngs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert "images/xai_per_step_integrated_gradients/step_0000006.png" in pngs
    assert "images/xai_per_sample_integrated_gradients_sample_1/step_0000006.png" in pngs
    if logger == "csv":
        header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
        assert "xai/integrated_gradients/infidelity" in header


def test_resume_continues_with_the_same_probe_and_history(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = AttributionMonitor(["integrated_gradients"], num_probe_samples=3)
    _fit(tmp_path / "a", [first, checkpoints], max_epochs=2, enable_checkpointing=True)
    resumed = AttributionMonitor(["integrated_gradients"], num_probe_samples=3)
    L.seed_everything(0, verbose=False)
    trainer = _trainer(
        tmp_path / "b", [resumed, ModelCheckpoint(dirpath=tmp_path / "ckpt2")], max_epochs=4, enable_checkpointing=True
    )
    trainer.fit(ShapesNet(), datamodule=_data(seed=123), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert torch.equal(resumed.probe.inputs, first.probe.inputs)  # not re-picked from the other data
    assert resumed.history[: len(first.history)] == first.history
    assert [(p.step, p.epoch) for p in resumed.points] == [(0, 0), (3, 0), (6, 1), (9, 2), (12, 3)]  # no second start


def test_explicit_probe_and_label_targets(tmp_path):
    dm = _data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    probe = (batch["image"][:2], batch["label"][:2])
    monitor = AttributionMonitor(
        ["saliency"], probe=probe, target="label", display_mean=SHAPES_MEAN, display_std=SHAPES_STD, gradcam=False
    )
    _fit(tmp_path, [monitor], limit_val_batches=0)
    assert [r["target"] for r in monitor.history] == [batch["label"][:2].tolist()] * 3


def test_a_failing_method_is_skipped_alone_and_raise_names_method_epoch_and_probe(tmp_path):
    class Breaks(ShapesNet):
        def forward(self, x):
            if x.requires_grad:  # only gradient methods send such inputs: saliency breaks, occlusion does not
                raise RuntimeError("model broke")
            return super().forward(x)

    with pytest.warns(UserWarning, match="saliency failed at step 0 .* is skipped .*RuntimeError: model broke"):
        L.seed_everything(0, verbose=False)
        monitor = AttributionMonitor(["saliency", "occlusion"], gradcam=False)
        _trainer(tmp_path, [monitor], max_epochs=2).fit(Breaks(), datamodule=_data())
    assert [(r["step"], r["method"]) for r in monitor.history] == [(0, "occlusion"), (3, "occlusion"), (6, "occlusion")]
    monitor = AttributionMonitor(["saliency"], gradcam=False, on_error="raise")
    with pytest.raises(
        AttributionMonitorError,
        match=r"saliency failed at step 0 \(epoch 0\) on a probe of shape \(8, 3, 16, 16\): RuntimeError: model",
    ) as raised:
        _trainer(tmp_path, [monitor], max_epochs=1).fit(Breaks(), datamodule=_data())
    assert isinstance(raised.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": ["integrated_gradient"]}, "did you mean 'integrated_gradients'.*choose one of"),
        ({"methods": {"occlusion": 3}}, "methods\\['occlusion'\\]: expected a dict"),
        ({"every_n_epochs": 0}, "every_n_epochs: expected an int >= 1 or None"),
        ({"every_n_steps": 0}, "every_n_steps: expected an int >= 1 or None"),
        ({"log_spaced_steps": 1}, "log_spaced_steps: expected True or False"),
        (
            {"every_n_epochs": None, "log_at_start": False},
            "every_n_epochs: with every_n_steps=None, .* would never explain the probe",
        ),
        ({"class_names": "cat"}, "class_names: expected a list with the name of each class"),
        ({"metrics": ("infidelity", "fidelity")}, "metrics: unknown value 'fidelity'.*sensitivity"),
        ({"target": "predicted"}, "target: expected 'pred', 'label'"),
        ({"on_error": "ignore"}, "on_error: unknown value 'ignore'"),
        ({"layer": ""}, "layer: expected a dotted module name"),
        ({"gradcam": "yes"}, "gradcam: expected True or False, got 'yes'"),
        ({"seed": 1.5}, "seed: expected an int, got 1.5"),
        ({"artifact_dir": 3}, "artifact_dir: expected a path or None, got int"),
        ({"token_names": "abc"}, "token_names: expected a list with the word of each token id"),
        ({"display_mean": "0.5"}, "display_mean: expected one number per channel"),
        ({"display_std": (0.5, 0.0, 0.5)}, "display_std: expected numbers > 0"),
        ({"metrics": "fidelity"}, "metrics: unknown value 'fidelity'"),
        ({"input_key": 3}, "input_key: expected the key of the input"),
        ({"output_transform": "logits"}, "output_transform: expected a callable"),
        ({"probe": (torch.zeros(4, 3, 8, 8), torch.tensor([0, 1]))}, "probe: expected labels as 4 integer class"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        AttributionMonitor(**kwargs)


def test_unknown_layer_lists_close_matches(tmp_path):
    with pytest.raises(MisconfigurationException, match="no submodule named 'features.33'.*features.3"):
        _fit(tmp_path, [AttributionMonitor(layer="features.33")], max_epochs=1)


def test_a_second_attribution_monitor_is_refused_instead_of_mixing_tags(tmp_path):
    # Two monitors would both log xai/seconds, the probe image and (GradCAM on by default) xai/layer_gradcam.
    first, second = AttributionMonitor(["saliency"]), AttributionMonitor(["input_x_gradient"], every_n_epochs=2)
    with pytest.raises(MisconfigurationException, match="2 AttributionMonitors.*Give one monitor all the methods"):
        _fit(tmp_path, [first, second], max_epochs=1)
    assert first.history == [] and second.history == []  # refused before the first point


def test_no_probe_and_no_validation_data(tmp_path):
    with pytest.raises(MisconfigurationException, match="probe: AttributionMonitor needs a probe batch"):
        _fit(tmp_path, [AttributionMonitor()], max_epochs=1, limit_val_batches=0)


def _language_monitor():
    pytest.importorskip("transformers")
    from tests.integration._tiny_lm import PROBE, word_tokenizer

    return LanguageModelMonitor(PROBE, word_tokenizer())


SHARDED_REFUSERS = {
    "AttributionMonitor": AttributionMonitor,
    "ConceptMonitor": lambda: ConceptMonitor(
        {"c": torch.zeros(5, 3, 8, 8)},
        torch.zeros(20, 3, 8, 8),
        "features.4",
        (torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])),
    ),
    "RobustnessMonitor": lambda: RobustnessMonitor((torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))),
    "LanguageModelMonitor": _language_monitor,
    "InfluenceMonitor": lambda: InfluenceMonitor((torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))),
}


@pytest.mark.parametrize("name", list(SHARDED_REFUSERS))
def test_sharded_strategies_are_refused(name):
    from lightning.pytorch.strategies import FSDPStrategy

    monitor = SHARDED_REFUSERS[name]()
    # FSDP needs GPUs to build a real Trainer; every monitor asks the strategy first.
    trainer = SimpleNamespace(strategy=FSDPStrategy(), fast_dev_run=False)
    with pytest.raises(MisconfigurationException, match=f"{name}: FSDPStrategy shards the model's parameters"):
        monitor.setup(trainer, ShapesNet(), "fit")


@pytest.mark.parametrize("name", list(SHARDED_REFUSERS))
def test_a_second_monitor_of_a_kind_that_would_write_the_same_tags_is_refused(name):
    # The attribution and influence monitors write fixed tags: one per Trainer. The others take a name=, and
    # two with one name are refused (Lightning also refuses equal state keys, but a key may hold more).
    first, second = SHARDED_REFUSERS[name](), SHARDED_REFUSERS[name]()
    trainer = SimpleNamespace(strategy=object(), fast_dev_run=False, callbacks=[first, second])
    named = name not in ("AttributionMonitor", "InfluenceMonitor")
    expected = f"2 {name}s are named '{first.name}'" if named else f"the Trainer has 2 {name}s; they would write"
    with pytest.raises(MisconfigurationException, match=f"{name}: {expected}"):
        first.setup(trainer, ShapesNet(), "fit")


def test_fast_dev_run_is_skipped(tmp_path):
    monitor = AttributionMonitor(["saliency"])
    L.seed_everything(0, verbose=False)
    L.Trainer(
        default_root_dir=tmp_path, fast_dev_run=True, accelerator="cpu", callbacks=[monitor], enable_progress_bar=False
    ).fit(ShapesNet(), datamodule=_data())
    assert monitor.history == []


def test_lightning_cli_yaml_config(tmp_path):
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
seed_everything: 0
trainer:
  max_epochs: 1
  accelerator: cpu
  default_root_dir: {tmp_path}
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {{save_dir: {tmp_path}, name: logs, version: 0}}
  callbacks:
    - class_path: lightning_xai.AttributionMonitor
      init_args:
        methods:
          integrated_gradients: {{n_steps: 8}}
          occlusion: {{}}
        layer: features.4
        num_probe_samples: 3
        metrics: [infidelity]
        on_error: raise
model:
  class_path: lightning_xai.demos.shapes.ShapesNet
data:
  class_path: lightning_xai.demos.shapes.ShapesDataModule
  init_args: {{n_train: 128, n_val: 32, size: 16}}
"""
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = LightningCLI(args=["fit", "--config", str(config)], save_config_kwargs={"overwrite": True})
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, AttributionMonitor)]
    assert {r["method"] for r in monitor.history} == {"integrated_gradients", "occlusion", "layer_gradcam"}
    assert "xai_per_step/occlusion" in _events(tmp_path).Tags()["images"]


def test_step_schedules_and_filmstrips_at_every_point(tmp_path):
    monitor = AttributionMonitor(
        ["saliency"],
        gradcam=False,
        num_probe_samples=1,
        every_n_epochs=None,
        every_n_steps=5,
        log_spaced_steps=True,
        filmstrip_every=1,
    )
    _fit(tmp_path, [monitor], max_epochs=4, limit_val_batches=1)  # 12 steps
    assert [p.step for p in monitor.points] == [0, 1, 2, 4, 5, 8, 10]  # start, doublings, every 5 (12 is not)
    assert [p.epoch for p in monitor.points] == [0, 0, 0, 1, 1, 2, 3]
    strips = _events(tmp_path).Images("xai_per_sample/saliency/sample_0")
    assert [e.step for e in strips] == [0, 1, 2, 4, 5, 8, 10]
    assert all(b.height >= a.height for a, b in zip(strips, strips[1:]))  # a frame more at every point, two a row
    assert strips[-1].height > strips[0].height


def test_probe_selection_leaves_every_rng_alone_even_with_random_transforms():
    import random

    import numpy as np

    from lightning_xai._config.probe import select_probe

    class Augmented(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):  # random transforms draw from all three global streams
            noise = torch.rand(()) + np.random.rand() + random.random()
            return torch.full((3, 4, 4), float(i)) + noise, i % 4

    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    probe = select_probe(torch.utils.data.DataLoader(Augmented(), batch_size=8, shuffle=True), 6)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    assert sorted(probe.labels.tolist()) == [0, 0, 1, 1, 2, 3]


def test_probe_from_an_iterable_dataset():
    from lightning_xai._config.probe import select_probe

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter((torch.full((2,), float(i)), i % 2) for i in range(30))

    probe = select_probe(torch.utils.data.DataLoader(Stream(), batch_size=4), 4)
    assert probe.inputs.shape == (4, 2) and sorted(probe.labels.tolist()) == [0, 0, 1, 1]


def test_half_precision_training(tmp_path):
    monitor = AttributionMonitor(["saliency", "integrated_gradients"], num_probe_samples=2, on_error="raise")
    _fit(tmp_path, [monitor], max_epochs=1, precision="bf16-true")
    assert {r["method"] for r in monitor.history} == {"saliency", "integrated_gradients", "layer_gradcam"}


def test_rule_based_methods_by_name(tmp_path):
    monitor = AttributionMonitor(["deep_lift", "guided_gradcam"], num_probe_samples=2, on_error="raise")
    _fit(tmp_path, [monitor], max_epochs=1)
    records = {r["method"]: r["metrics"] for r in monitor.history}
    assert set(records) == {"deep_lift", "guided_gradcam", "layer_gradcam"}
    assert abs(records["deep_lift"]["convergence_delta"]) < 1e-4  # DeepLift is complete through ShapesNet


def test_perturbation_and_surrogate_methods_by_name(tmp_path):
    names = [
        "feature_ablation",
        "feature_permutation",
        "shapley_value_sampling",
        "shapley_values",
        "lime",
        "kernel_shap",
    ]
    monitor = AttributionMonitor(names, gradcam=False, num_probe_samples=3, metrics=(), on_error="raise")
    _fit(tmp_path, [monitor], max_epochs=1)
    records = {r["method"]: r for r in monitor.history}
    assert set(records) == set(names)
    maps = torch.load(tmp_path / "logs" / "version_0" / "xai" / "maps_step_0000003.pt", weights_only=True)
    assert all(maps[name].shape == (3, 1, 16, 16) for name in names)  # superpixel maps, input-sized, summed


def test_the_first_point_explains_the_untrained_model_before_any_step(tmp_path):
    monitor = AttributionMonitor(["saliency"], gradcam=False, num_probe_samples=4, metrics=())
    _fit(tmp_path, [monitor], max_epochs=1)
    assert [(p.step, p.epoch) for p in monitor.points] == [(0, 0), (3, 0)]
    L.seed_everything(0, verbose=False)
    untrained = ShapesNet().eval()  # the weights _fit starts from
    expected = Saliency(untrained).attribute(monitor.probe.inputs, target=monitor.history[0]["target"])
    logged = torch.load(tmp_path / "logs" / "version_0" / "xai" / "maps_step_0000000.pt", weights_only=True)
    expected = expected.sum(1, keepdim=True)  # the maps files keep the channels' sum
    torch.testing.assert_close(logged["saliency"].float(), expected, rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize(
    "callback, init_args, key, choices",
    [
        ("AttributionMonitor", "{on_error: ignore}", "on_error", "'warn', 'raise'"),
        ("AttributionMonitor", "{similarity: pearson}", "similarity", "'spearman', 'top_k', 'cosine', 'ssim'"),
        ("AttributionMonitor", "{target: predicted}", "target", "'pred', 'label'"),
        ("AttributionMonitor", "{metrics: [fidelity]}", "metrics",
         "'infidelity', 'sensitivity', 'deletion', 'insertion', 'faithfulness_correlation', 'road', "
         "'randomisation', 'sparseness', 'complexity'"),
        ("AttributionRegressionCheck", "{metric: occlusion/mass_in_mask, threshold: 0.5, direction: up}", "direction",
         "'above', 'below'"),
        ("AttributionRegressionCheck", "{metric: occlusion/mass_in_mask, threshold: 0.5, on_fail: exit}", "on_fail",
         "'warn', 'stop', 'raise'"),
    ],
)  # fmt: skip
def test_the_cli_parser_refuses_a_choice_outside_the_literal_and_names_the_choices(
    tmp_path, capsys, callback, init_args, key, choices
):
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
trainer:
  accelerator: cpu
  default_root_dir: {tmp_path}
  callbacks:
    - class_path: lightning_xai.{callback}
      init_args: {init_args}
model:
  class_path: lightning_xai.demos.shapes.ShapesNet
data:
  class_path: lightning_xai.demos.shapes.ShapesDataModule
"""
    )
    with warnings.catch_warnings(), pytest.raises(SystemExit):
        warnings.simplefilter("ignore")
        LightningCLI(args=["--config", str(config)], run=False)
    error = capsys.readouterr().err
    assert f'Parser key "{key}"' in error and f"Literal[{choices}]" in error


def test_the_literal_choices_are_the_engines_and_the_tags():
    from typing import get_args

    from attribution.metrics import SIMILARITY_MEASURES
    from lightning_xai._config import tags
    from lightning_xai._config.choices import QualityMetric, Similarity

    assert get_args(Similarity) == tuple(SIMILARITY_MEASURES)
    assert get_args(QualityMetric) == tags.QUALITY_METRICS


def test_a_resumed_run_keeps_the_checkpoints_probe_and_warns_when_another_was_given(tmp_path):
    first = AttributionMonitor(["saliency"], gradcam=False, num_probe_samples=3)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "a", [first, checkpoints], max_epochs=1, enable_checkpointing=True)
    last = str(tmp_path / "ckpt" / "last.ckpt")
    resumed = AttributionMonitor(["saliency"], gradcam=False, probe=torch.rand(2, 3, 16, 16))
    replaced = (
        r"the checkpoint's probe \(3 examples of shape \(3, 16, 16\), float32\) replaces the probe passed as "
        r"probe= \(2 examples of shape \(3, 16, 16\), float32\): a resumed run goes on explaining the probe it "
        r"started with"
    )
    with pytest.warns(UserWarning, match=replaced):
        _trainer(tmp_path / "b", [resumed], max_epochs=2).fit(ShapesNet(), datamodule=_data(), ckpt_path=last)
    assert torch.equal(resumed.probe.inputs, first.probe.inputs)

    probe = first.probe
    same = {"image": probe.inputs, "label": probe.labels, **({} if probe.masks is None else {"mask": probe.masks})}
    again = AttributionMonitor(["saliency"], gradcam=False, probe=same)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path / "c", [again], max_epochs=2).fit(ShapesNet(), datamodule=_data(), ckpt_path=last)
    assert not [w for w in caught if "checkpoint's probe" in str(w.message)]
    assert torch.equal(again.probe.inputs, first.probe.inputs)
