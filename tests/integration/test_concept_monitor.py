"""ConceptMonitor and ConceptRegressionCheck in real Trainers on the shapes with and without the corner-mark
shortcut: the mark concept's TCAV score, given only examples of the concept (no masks), tells them apart."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import ConceptMonitor, ConceptRegressionCheck
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet, corner_mark_concept, make_shapes, normalize_images

pytestmark = pytest.mark.slow

SIZE = 16
NAME = "mark_tl/features.4/class_0"


def _monitor(data, **options):
    val = data.val_set
    probe = (torch.stack([val[i]["image"] for i in range(64)]), torch.stack([val[i]["label"] for i in range(64)]))
    concept = corner_mark_concept(30, corner=0, size=SIZE, seed=7)  # class 0's corner: top left
    random = normalize_images(make_shapes(150, SIZE, seed=8)[0])
    return ConceptMonitor(
        {"mark_tl": concept}, random, layers="features.4", probe=probe, targets=[0], num_random_sets=4, **options
    )


def _fit(tmp_path, spurious, check, *more):
    L.seed_everything(0, verbose=False)
    data = ShapesDataModule(n_train=512, n_val=64, size=SIZE, spurious_mark=spurious, batch_size=32)
    data.setup("fit")
    monitor = _monitor(data)
    trainer = L.Trainer(
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=TensorBoardLogger(tmp_path, name="logs", version=0),
        callbacks=[monitor, check, *(make(data) for make in more)],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(ShapesNet(), datamodule=data)
    return trainer, monitor


def test_the_shortcut_concept_is_caught_without_masks(tmp_path):
    check = ConceptRegressionCheck(NAME, 0.9, on_fail="stop")
    with pytest.warns(UserWarning, match=r"concept/mark_tl/features.4/class_0 = 1.000 \(p = .*\) at step 16"):
        trainer, monitor = _fit(tmp_path / "shortcut", True, check)
    assert trainer.current_epoch == 1  # stopped at the first epoch's end
    untrained, learned = (r for r in monitor.history if r["name"] == NAME)
    assert untrained["score"] < 0.5 and learned["score"] == 1.0 and learned["p_value"] < 0.05
    assert check.history == [{"step": 16, "epoch": 0, "value": 1.0, "violated": True}]

    (path,) = glob.glob(str(tmp_path / "shortcut" / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert [e.value for e in events.Scalars(f"concept/{NAME}")] == pytest.approx([untrained["score"], 1.0])
    assert [e.step for e in events.Scalars(f"concept/{NAME}/p_value")] == [0, 16]
    table = events.Tensors("concept/scores/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| mark_tl | features.4 | 0 | 1.000 |" in table and "| yes |" in table


def test_the_clean_model_trains_to_the_end(tmp_path):
    check = ConceptRegressionCheck(NAME, 0.9, on_fail="stop")
    trainer, monitor = _fit(tmp_path / "clean", False, check)
    assert trainer.current_epoch == 2 and [h["step"] for h in check.history] == [16, 32]
    assert not any(h["violated"] for h in check.history)


def test_a_second_monitor_under_its_own_name_logs_apart_and_a_check_reads_the_one_it_names(tmp_path):
    # The same concept, measured again every second epoch under another name: both log it, so a check must
    # say which one it reads.
    def late(data):
        return _monitor(data, every_n_epochs=2, log_at_start=False, name="concept_late")

    check = ConceptRegressionCheck(f"concept_late/{NAME}", 0.9, on_fail="warn")
    with pytest.warns(UserWarning, match=rf"concept_late/{NAME} = 1.000 \(p = .*\) at step 32"):
        trainer, monitor = _fit(tmp_path / "two", True, check, late)
    (later,) = (c for c in trainer.callbacks if isinstance(c, ConceptMonitor) and c is not monitor)
    assert [r["step"] for r in monitor.history] == [0, 16, 32] and [r["step"] for r in later.history] == [32]
    assert check.monitor is later and [h["step"] for h in check.history] == [32]
    (path,) = glob.glob(str(tmp_path / "two" / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert [e.step for e in events.Scalars(f"concept/{NAME}")] == [0, 16, 32]
    assert [e.value for e in events.Scalars(f"concept_late/{NAME}")] == [later.history[0]["score"]]
    assert [e.step for e in events.Scalars("concept_late/seconds")] == [32]
    assert [e.step for e in events.Tensors("concept_late/scores/text_summary")] == [32]
    with pytest.raises(MisconfigurationException, match=rf"2 ConceptMonitors log '{NAME}'.*'concept_late/{NAME}'"):
        _fit(tmp_path / "ambiguous", True, ConceptRegressionCheck(NAME, 0.9), late)
    with pytest.raises(RuntimeError, match="state_key"):  # two of the same name would share one key
        _fit(tmp_path / "same", True, ConceptRegressionCheck(NAME, 0.9), _monitor)


def test_bad_arguments_are_refused(tmp_path):
    probe = (torch.zeros(4, 3, SIZE, SIZE), torch.tensor([0, 1, 0, 1]))
    concept, random = torch.zeros(5, 3, SIZE, SIZE), torch.zeros(20, 3, SIZE, SIZE)
    with pytest.raises(MisconfigurationException, match="num_random_sets"):
        ConceptMonitor({"c": concept}, random, "features.4", probe, num_random_sets=1)
    with pytest.raises(MisconfigurationException, match="random sets of 1"):
        ConceptMonitor({"c": concept}, random[:5], "features.4", probe)
    with pytest.raises(MisconfigurationException, match="input shape"):
        ConceptMonitor({"c": torch.zeros(5, 3, 8, 8)}, random, "features.4", probe)
    with pytest.raises(MisconfigurationException, match=r"targets \[7\]"):
        ConceptMonitor({"c": concept}, random, "features.4", probe, targets=[7])
    with pytest.raises(MisconfigurationException, match="class_<c>"):
        ConceptRegressionCheck("c/features.4", 0.5)
    monitor = ConceptMonitor({"c": concept}, random, "nope", probe)
    trainer = L.Trainer(callbacks=[monitor], logger=False, max_epochs=1, enable_progress_bar=False)
    data = ShapesDataModule(n_train=32, n_val=8, size=SIZE)
    with pytest.raises(MisconfigurationException, match=r"layers \['nope'\] are not in the model"):
        trainer.fit(ShapesNet(), datamodule=data)
    check = ConceptRegressionCheck("other/features.4/class_0", 0.5)
    trainer = L.Trainer(callbacks=[check], logger=False, max_epochs=1, enable_progress_bar=False)
    with pytest.raises(MisconfigurationException, match="no ConceptMonitor logs"):
        trainer.fit(ShapesNet(), datamodule=data)


@pytest.mark.skipif(os.environ.get("LIGHTNING_XAI_SKIP_DDP") == "1", reason="DDP test disabled")
def test_under_ddp_the_concept_and_robustness_monitors_agree_across_processes_and_the_check_stops_both(tmp_path):
    script = Path(__file__).with_name("ddp_concept_robustness_script.py")
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Both stopped after the first epoch (8 steps: 256 examples, 2 processes, batches of 16); one alone would hang.
    assert [r["epoch"] for r in ranks] == [1, 1] and [r["violated"] for r in ranks] == [[True], [True]]
    concepts = ranks[0]["concepts"]
    assert [c["step"] for c in concepts] == [0, 8] and all(0 <= c["score"] < 1 for c in concepts)
    assert ranks[1]["concepts"] == concepts  # the same CAVs and scores on both replicas

    def without_time(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    robustness = without_time(ranks[0]["robustness"])
    assert [r["step"] for r in robustness] == [0, 8] and robustness[0] != robustness[1]
    assert without_time(ranks[1]["robustness"]) == robustness
    (path,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))  # rank zero's alone
    events = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert [e.value for e in events.Scalars(f"concept/{NAME}")] == pytest.approx([c["score"] for c in concepts])
    assert [e.value for e in events.Scalars("robustness/fgsm_success")] == pytest.approx(
        [r["fgsm_success"] for r in robustness]
    )
