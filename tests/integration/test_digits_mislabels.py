"""The digits mislabel example: TracIn self-influence finds flipped labels, and agrees with Captum's."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("sklearn")  # the examples extra: the digits ship with scikit-learn
    spec = importlib.util.spec_from_file_location("digits_mislabels", ROOT / "examples" / "digits_mislabels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(example, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    threads = torch.get_num_threads()
    try:  # Captum is an optional extra: the comparison runs when it is installed
        from captum.influence import TracInCPFast as reference
    except ImportError:
        reference = None
    result = example.main(["--out", str(out), "--epochs", "4"], reference=reference)
    assert torch.get_num_threads() == threads  # the example's one-thread setting is scoped
    return out, result


def test_writes_the_numbers_the_figure_and_one_checkpoint_per_epoch(run):
    out, result = run
    assert json.loads((out / "detection.json").read_text()) == result
    assert (out / "detection_curve.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"epoch-{e:02d}.pt" for e in range(1, 5)]
    assert result["n_flipped"] == round(0.1 * result["n_train"]) and result["inspected"] == result["n_flipped"]


def test_checkpoints_hold_the_learning_rate_our_default_loader_reads(run, example):
    from attribution.influence._gradients import load_flexible_state_dict

    out, _ = run
    assert load_flexible_state_dict(example.mlp(64), str(out / "checkpoints" / "epoch-04.pt")) == 0.05


def test_self_influence_finds_flipped_labels_far_better_than_random(run, example):
    recall = run[1]["recall_at_inspected"]
    # random inspection of 10% finds about 10% of them
    assert recall[example.OURS] >= 0.5 and recall[example.LOSS] >= 0.5
    assert recall[example.RANDOM] <= 0.25
    assert recall[example.OURS] >= 3 * recall[example.RANDOM]


def test_self_influence_agrees_with_captum(run, example):
    pytest.importorskip("captum")
    result = run[1]
    assert result["captum_agreement"]["spearman"] > 0.999
    assert result["captum_agreement"]["max_relative_difference"] < 1e-4
    assert result["found_in_top"][example.CAPTUM] == result["found_in_top"][example.OURS]
    assert set(result["seconds"]) == {"ours", "captum"}


def test_without_captum_the_comparison_is_skipped_with_a_note(example, tmp_path, capsys):
    result = example.main(["--out", str(tmp_path), "--epochs", "1"])
    assert result["captum_agreement"] is None and "skipped" in result["captum_note"]
    assert example.CAPTUM not in result["recall_at_inspected"]
    assert "Captum comparison skipped" in capsys.readouterr().out


def test_rejects_a_flip_share_outside_0_1(example, tmp_path):
    with pytest.raises(SystemExit):
        example.main(["--out", str(tmp_path), "--flip", "1.5"])
