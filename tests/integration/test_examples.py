"""The examples run end to end (in their quick form)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_article_tutorial_saves_every_figure(tmp_path):
    pytest.importorskip("skimage")
    saved = _load("article_tutorial").main(tmp_path, quick=True)
    assert [p.name for p in saved] == [
        "1_integrated_gradients.png",
        "2_noise_tunnel.png",
        "3_gradient_shap.png",
        "4_layer_gradcam.png",
        "5_layer_gradcam_upsampled.png",
        "6_occlusion.png",
    ]
    assert all(p.stat().st_size > 1000 for p in saved)


def test_shapes_example_trains_with_the_monitor_and_saves_a_summary(tmp_path, capsys):
    log_dir = _load("shapes").main(tmp_path, epochs=2, quick=True)
    assert (log_dir / "summary.png").stat().st_size > 1000
    assert (log_dir / "xai" / "manifest.json").exists()
    out = capsys.readouterr().out
    assert "mass_in_mask" in out and f"tensorboard --logdir {tmp_path} --samples_per_plugin images=100" in out
    assert "FGSM success" in out
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("robustness/probe_accuracy")]
    assert len(steps) == 3 and steps[0] == 0  # before training and at both epoch ends


def test_clever_hans_concepts_example_fires_on_the_shortcut_only(tmp_path):
    runs = _load("clever_hans_concepts").main(tmp_path, epochs=2, quick=True)
    assert runs["spurious"]["fired"] and not runs["clean"]["fired"]
    assert runs["spurious"]["curve"][-1][1] == 1.0 and runs["spurious"]["curve"][0][1] < 0.5
    assert (tmp_path / "clever_hans_concepts.png").stat().st_size > 1000


def test_clever_hans_example_fires_on_the_shortcut_only(tmp_path):
    runs = _load("clever_hans").main(tmp_path, epochs=2, quick=True)
    assert runs["spurious"]["fired"] and not runs["clean"]["fired"]
    assert (tmp_path / "clever_hans.png").stat().st_size > 1000


def test_text_example_attributes_to_the_planted_words(tmp_path):
    result = _load("text_sentiment").main(tmp_path, epochs=3, quick=True)
    # planted words are about 1.5 of 12 tokens: an attribution blind to them would put ~12% of the mass there
    assert result["share"] > 0.3
    assert "<span" in result["html"].read_text() and result["png"].stat().st_size > 1000
    assert "xai_text/layer_integrated_gradients" in _text_tags(result["log_dir"])


def _text_tags(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = log_dir.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    return accumulator.Tags()["images"]


def test_hugging_face_example_explains_tokens_through_the_attention_mask(tmp_path):
    pytest.importorskip("transformers")
    result = _load("hf_text_classifier").main(tmp_path, epochs=1, quick=True)
    monitor = result["monitor"]
    assert {r["method"] for r in monitor.history} == {"layer_integrated_gradients"}  # no GradCAM on tokens
    assert monitor.probe.input_key == "input_ids" and set(monitor.probe.forward_tensors) == {"attention_mask"}
    last = monitor.points[-1].step
    maps = torch.load(result["log_dir"] / "xai" / f"maps_step_{last:07d}.pt", weights_only=True)
    scores = maps["layer_integrated_gradients"].float().sum(-1)  # one score per token
    padding = monitor.probe.forward_tensors["attention_mask"] == 0
    assert padding.any() and scores[padding].abs().max() < 1e-6 < scores[~padding].abs().max()
    assert "xai_text/layer_integrated_gradients" in _text_tags(result["log_dir"])


def test_segmentation_example_explains_the_object_class(tmp_path):
    pytest.importorskip("segmentation_models_pytorch")
    result = _load("segmentation").main(tmp_path, epochs=1, quick=True)
    monitor = result["monitor"]
    assert {r["method"] for r in monitor.history} == {"integrated_gradients", "layer_gradcam"}
    assert monitor.history[0]["target"] == monitor.probe.labels.tolist()  # the shapes' classes, 1..3
    assert monitor._subject.forward.with_region  # class scores summed over the probe's object masks
    assert result["shares"]["integrated_gradients"][-1] > 0.5


def test_custom_cam_example_adds_a_method_the_monitor_logs(tmp_path):
    """The how-to's worked example: a CAM variant in one overridden method, registered, equal to GradCAM where
    theory says so, and logged by the monitor like a built-in method. In a process of its own: it registers
    a method, which would change the registry for the tests after it."""
    import subprocess
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    script = ROOT / "examples" / "custom_cam.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered layer_xgrad_cam: needs_spatial_layer=True" in result.stdout
    difference = float(result.stdout.split("on a pooled head: ")[1].split()[0])
    assert difference < 1e-5
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    assert any("layer_xgrad_cam" in tag for tag in accumulator.Tags()["images"])
    assert any(tag.startswith("xai/layer_xgrad_cam/") for tag in accumulator.Tags()["scalars"])
