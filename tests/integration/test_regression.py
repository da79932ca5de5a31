"""AttributionRegressionCheck and golden references on clean and shortcut ("Clever Hans") data."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_xai import AttributionMonitor, AttributionRegressionCheck, AttributionRegressionError
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow

METRIC = "integrated_gradients/mass_in_mask"


def _fit(tmp_path, callbacks, spurious=False, max_epochs=3, seed=0, ckpt_path=None, **kwargs):
    L.seed_everything(seed, verbose=False)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        **{"enable_checkpointing": False, **kwargs},
    )
    data = ShapesDataModule(n_train=256, n_val=64, size=16, spurious_mark=spurious)
    trainer.fit(ShapesNet(), datamodule=data, ckpt_path=ckpt_path)
    return trainer


def _monitor(**kwargs):
    return AttributionMonitor(["integrated_gradients"], gradcam=False, metrics=(), target="label", **kwargs)


@pytest.mark.parametrize("on_fail", ["warn", "stop", "raise"])
def test_the_check_is_quiet_on_clean_data_and_fires_on_the_shortcut(tmp_path, on_fail, recwarn):
    clean = AttributionRegressionCheck(METRIC, 0.3, on_fail=on_fail)
    trainer = _fit(tmp_path / "clean", [_monitor(), clean])
    assert trainer.current_epoch == 3 and len(clean.history) == 3
    assert not any(r["violated"] for r in clean.history)
    assert not [w for w in recwarn if "AttributionRegressionCheck" in str(w.message)]

    hans = AttributionRegressionCheck(METRIC, 0.3, on_fail=on_fail)
    if on_fail == "raise":
        with pytest.raises(
            AttributionRegressionError, match=r"xai/integrated_gradients/mass_in_mask = 0\.\d+ at step 4 \(epoch 0\)"
        ):
            _fit(tmp_path / "hans", [_monitor(), hans], spurious=True)
        return
    if on_fail == "warn":
        with pytest.warns(UserWarning, match=r"at step 4 \(epoch 0\) is below the threshold 0\.3$"):
            trainer = _fit(tmp_path / "hans", [_monitor(), hans], spurious=True)
        assert trainer.current_epoch == 3  # warned every epoch, kept training
    else:
        with pytest.warns(UserWarning, match="stopping training"):
            trainer = _fit(tmp_path / "hans", [_monitor(), hans], spurious=True)
        assert trainer.current_epoch == 1  # stopped after the first epoch
    assert hans.history[0]["violated"]
    # the verdicts are in the manifest beside the logs, where the explorer reads them
    (manifest,) = (tmp_path / "hans").rglob("manifest.json")
    checked = [r for r in json.loads(manifest.read_text()) if r["step"] > 0]
    assert checked and all(
        r["verdicts"] == [{"name": METRIC, "value": h["value"], "threshold": 0.3, "violated": h["violated"]}]
        for r, h in zip(checked, hans.history)
    )
    assert not any("verdicts" in r for r in json.loads(manifest.read_text()) if r["step"] == 0)


def test_patience_start_epoch_and_callback_order(tmp_path):
    patient = AttributionRegressionCheck(METRIC, 0.3, patience=1, on_fail="stop")
    late = AttributionRegressionCheck(METRIC, 0.3, start_epoch=2, on_fail="warn")
    with pytest.warns(UserWarning):
        trainer = _fit(tmp_path, [patient, late, _monitor()], spurious=True, max_epochs=4)  # checks listed first
    assert trainer.current_epoch == 2  # the second violation in a row stopped training
    assert [(r["step"], r["epoch"]) for r in patient.history] == [(4, 0), (8, 1)]  # step 0 is never checked
    assert late.history == []  # stopped before its first epoch


def test_checks_read_the_monitor_in_any_order_and_leave_the_callback_list_alone(tmp_path):
    def run(root, order):
        monitor = AttributionMonitor(["integrated_gradients"], metrics=(), target="label")  # GradCAM by default
        checks = [
            AttributionRegressionCheck(METRIC, 0.0),
            AttributionRegressionCheck("layer_gradcam/mass_in_mask", 0.0),
        ]
        callbacks = [*checks, monitor] if order == "checks first" else [monitor, *checks]
        trainer = _fit(root, callbacks, max_epochs=2)
        assert [c for c in trainer.callbacks if c in callbacks] == callbacks  # never reordered
        assert {r["method"] for r in monitor.history} == {"integrated_gradients", "layer_gradcam"}  # setup ran
        return [[round(r["value"], 6) for r in check.history] for check in checks]

    first = run(tmp_path / "a", "checks first")
    assert all(len(values) == 2 for values in first)  # each check read both epochs
    assert first == run(tmp_path / "b", "monitor first")


def test_a_wrong_layer_is_reported_with_the_check_listed_first(tmp_path):
    monitor = AttributionMonitor(["integrated_gradients"], layer="features.99", metrics=())
    with pytest.raises(MisconfigurationException, match="layer: no submodule named 'features.99'"):
        _fit(tmp_path, [AttributionRegressionCheck(METRIC, 0.3), monitor], max_epochs=1)


def test_the_check_state_survives_a_resume(tmp_path):
    first = AttributionRegressionCheck(METRIC, 0.3, patience=2, on_fail="stop")
    _fit(
        tmp_path / "a",
        [_monitor(), first, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        spurious=True,
        max_epochs=2,
        enable_checkpointing=True,
    )
    assert first.violations == 2
    resumed = AttributionRegressionCheck(METRIC, 0.3, patience=2, on_fail="stop")
    with pytest.warns(UserWarning, match="for 3 logged points in a row; stopping"):
        trainer = _fit(
            tmp_path / "b",
            [_monitor(), resumed],
            spurious=True,
            max_epochs=5,
            ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
        )
    assert trainer.current_epoch == 3 and [r["epoch"] for r in resumed.history] == [0, 1, 2]


def test_golden_reference_round_trip(tmp_path):
    golden = tmp_path / "golden.pt"
    _fit(tmp_path / "a", [_monitor(save_reference=str(golden))], max_epochs=2)
    assert golden.exists()

    same = AttributionRegressionCheck("integrated_gradients/similarity_reference", 0.99, on_fail="raise")
    _fit(tmp_path / "b", [_monitor(reference=str(golden)), same], max_epochs=2)  # same seed: same explanations
    assert [round(r["value"], 4) for r in same.history] == [1.0, 1.0]

    changed = AttributionRegressionCheck("integrated_gradients/similarity_reference", 0.99, on_fail="raise")
    with pytest.raises(AttributionRegressionError, match="similarity_reference"):
        _fit(tmp_path / "c", [_monitor(reference=str(golden)), changed], max_epochs=2, seed=1)  # another model


def test_ddp_stop_ends_training_on_both_ranks(tmp_path):
    script = Path(__file__).with_name("ddp_check_script.py")
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(tmp_path / f"rank{r}_epochs.txt").read_text() for r in (0, 1)] == ["1", "1"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metric": "integrated_gradients/accuracy", "threshold": 0.5}, "unknown metric.*mass_in_mask"),
        ({"metric": "mass_in_mask", "threshold": 0.5}, "unknown metric"),
        ({"metric": METRIC, "threshold": "0.5"}, "threshold: expected a finite number, got .0.5."),
        ({"metric": METRIC, "threshold": float("nan")}, "threshold: expected a finite number, got nan"),
        ({"metric": METRIC, "threshold": 0.5, "direction": "up"}, "direction: unknown value 'up'"),
        ({"metric": METRIC, "threshold": 0.5, "on_fail": "exit"}, "on_fail: unknown value 'exit'"),
        ({"metric": METRIC, "threshold": 0.5, "patience": -1}, "patience: expected an int >= 0"),
    ],
)
def test_bad_check_arguments(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        AttributionRegressionCheck(**kwargs)


def test_check_needs_a_monitor_running_its_method(tmp_path):
    with pytest.raises(MisconfigurationException, match="add one to the callbacks"):
        _fit(tmp_path, [AttributionRegressionCheck(METRIC, 0.3)], max_epochs=1)
    with pytest.raises(MisconfigurationException, match="does not run 'occlusion'"):
        _fit(tmp_path, [_monitor(), AttributionRegressionCheck("occlusion/mass_in_mask", 0.3)], max_epochs=1)


class _Arbitrary:
    """An object a golden file must not contain (unpickling it would run code)."""


def test_bad_references(tmp_path):
    with pytest.raises(MisconfigurationException, match="no golden reference file at"):
        _monitor(reference=str(tmp_path / "missing.pt"))
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(MisconfigurationException, match="is not a golden reference"):
        _monitor(reference=str(tmp_path / "other.pt"))
    torch.save({"version": 1, "maps": {0: {}}, "payload": _Arbitrary()}, tmp_path / "pickled.pt")
    with pytest.raises(MisconfigurationException, match="objects other than tensors.*is not loaded"):
        _monitor(reference=str(tmp_path / "pickled.pt"))  # loaded with weights_only=True: no code runs
    golden = tmp_path / "golden.pt"
    _fit(tmp_path / "a", [_monitor(save_reference=str(golden))], max_epochs=1)
    assert torch.load(golden, weights_only=True)["version"] == 2  # plain tensors and containers
    with pytest.raises(
        MisconfigurationException, match="explains a probe of shape \\(8, 3, 16, 16\\).*\\(2, 3, 8, 8\\)"
    ):
        _monitor(reference=str(golden), probe=torch.zeros(2, 3, 8, 8))
    with pytest.raises(MisconfigurationException, match="reference: expected None, a global step"):
        _monitor(reference=-1)


def test_the_monitor_hands_each_point_to_the_readers_of_it_and_only_to_those(tmp_path):
    from lightning.pytorch.callbacks import Callback

    from lightning_xai.monitor import MonitorReader, MonitorValues

    class Reader(Callback):  # any callback with both members of the protocol is a MonitorReader
        def __init__(self, monitor):
            self.monitor, self.steps = monitor, []

        @property
        def monitor_read(self):
            return self.monitor

        def on_monitor_point(self, trainer, point):
            self.steps.append(point.step)

    class HalfAReader(Callback):  # names the monitor, but has nothing to call: not a MonitorReader
        def __init__(self, monitor):
            self.monitor_read = monitor

    monitor = _monitor(num_probe_samples=2)
    reader, elsewhere, half = Reader(monitor), Reader(_monitor()), HalfAReader(monitor)
    check = AttributionRegressionCheck(METRIC, 0.0)
    assert isinstance(monitor, MonitorValues) and not isinstance(reader, MonitorValues)
    assert (
        isinstance(reader, MonitorReader) and isinstance(check, MonitorReader) and not isinstance(half, MonitorReader)
    )
    _fit(tmp_path, [reader, half, check, monitor, elsewhere], max_epochs=2)
    assert reader.steps == [p.step for p in monitor.points] == [0, 4, 8]
    assert check.monitor_read is monitor and len(check.history) == 2  # the untrained point is not checked
    assert elsewhere.steps == []
