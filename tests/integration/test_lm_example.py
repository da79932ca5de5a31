"""examples/lm_keyword.py end to end, in a short form: the key word's share rises in the clean fine-tune, and
the check fires on the shortcut one only."""

import importlib.util
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lm_keyword_example_shows_the_key_word_and_catches_the_shortcut(tmp_path, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    runs = _load("lm_keyword").main(tmp_path, epochs=4, size=384)
    clean, shortcut = runs["clean"], runs["shortcut"]
    assert clean["share"][0] < 0.3 < 0.8 < clean["share"][-1]  # the share on the key word rises ...
    assert clean["loss"][-1] < clean["loss"][0] / 2  # ... as the loss falls
    assert max(shortcut["share"][1:]) < 0.2 and shortcut["loss"][-1] < shortcut["loss"][0] / 2
    assert shortcut["fired"] and not clean["fired"]
    out = capsys.readouterr().out
    assert "FIRED" in out and f"tensorboard --logdir {tmp_path}" in out
    events = EventAccumulator(str(clean["log_dir"]), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert len(events.Images("llm/tokens")) == 5  # before training and at the four epoch ends
    logged = [e.value for e in events.Scalars("llm/mask_share/mean")]
    assert logged == pytest.approx(clean["share"])
