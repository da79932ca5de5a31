"""The explorer tab end to end: a real TensorBoard, found the plugin through the installed entry point, and
headless Debian Chromium driven by playwright (never a downloaded browser).

Two tiny monitored fits are explored: an example picked, the step slider moved, a curve point clicked,
the two runs compared, and a known pixel read back from a tile's canvas. Any console error fails the test.
``scripts/explorer_screenshots`` drives the same tour over ``runs/shapes`` for the docs' screenshots.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM, PLUGIN, chromium_page, get_json, tensorboard

TILE = 128
SHAPES = ("circle", "square", "triangle")


@contextmanager
def explorer_page(url: str, width: int = 1400, height: int = 1000) -> Iterator[tuple[Any, Any, list[str]]]:
    """The explorer's tab open in Chromium: (page, the plugin's iframe, console errors so far)."""
    with chromium_page(width, height) as (page, errors):
        page.goto(f"{url}/#{PLUGIN}")
        page.wait_for_selector("iframe", state="attached", timeout=60_000)
        deadline = time.monotonic() + 60
        while (frame := next((f for f in page.frames if "plugin_entry" in f.url), None)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the explorer's iframe did not load")
            time.sleep(0.2)
        frame.wait_for_function("document.body && document.body.dataset.rendered", timeout=60_000)
        yield page, frame, errors


def act(frame: Any, action: Callable[[], Any]) -> None:
    """Do ``action`` and wait until the explorer has drawn what it asked for."""
    before = int(frame.evaluate("Number(document.body.dataset.requested || 0)"))
    action()
    frame.wait_for_function(
        f"Number(document.body.dataset.requested) > {before} && "
        "document.body.dataset.rendered === document.body.dataset.requested",
        timeout=30_000,
    )


def set_range(frame: Any, selector: str, value: float) -> None:
    script = f"e => {{ e.value = {value}; e.dispatchEvent(new Event('input')); }}"
    act(frame, lambda: frame.locator(selector).evaluate(script))


def tiles(frame: Any) -> int:
    return int(frame.locator(".tile").count())


def pixel(frame: Any, example: int, panel: int, x: int, y: int) -> list[int]:
    canvas = frame.locator(f'canvas[data-example="{example}"][data-panel="{panel}"]')
    return list(canvas.evaluate(f"c => Array.from(c.getContext('2d').getImageData({x}, {y}, 1, 1).data)"))


def tour(frame: Any, page: Any, shots: Path, runs: list[str]) -> None:
    """The walk through the tab that the docs' screenshots show: the opening view, a step moved, two
    steps, two methods and two runs side by side."""
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=shots / "explorer_overview.png")
    set_range(frame, "#step", 0)
    act(frame, lambda: frame.locator("#compare").select_option("steps"))
    last = "e => { e.value = e.max; e.dispatchEvent(new Event('input')); }"  # the first point beside the last
    act(frame, lambda: frame.locator("#step-b").evaluate(last))
    page.screenshot(path=shots / "explorer_steps.png")
    act(frame, lambda: frame.locator("#compare").select_option("methods"))
    page.screenshot(path=shots / "explorer_methods.png")
    if len(runs) > 1:
        act(frame, lambda: frame.locator("#compare").select_option("runs"))
        page.screenshot(path=shots / "explorer_runs.png")


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_explorer_tab_in_a_real_tensorboard(tmp_path):
    pytest.importorskip("playwright.sync_api")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from tests.lightning_xai.explorer.runs import PROBE_SIZE, hand_made_run, monitored_run

    logdir = tmp_path / "logs"
    monitored_run(logdir, "a", seed=0, class_names=SHAPES)
    monitored_run(logdir, "b", seed=1)
    hand_made_run(logdir / "thin" / "xai")  # half-precision summed maps, and a thinned point
    hand_made_run(logdir / "wide" / "xai", width=16)  # images twice as wide as high
    shots = tmp_path / "screenshots"
    with tensorboard(logdir) as url, explorer_page(url) as (page, frame, errors):
        summary = get_json(f"{url}/data/plugin/{PLUGIN}/manifest?run=a/version_0")
        steps, epochs = summary["steps"], summary["epochs"]
        assert frame.locator("#step-label").inner_text() == f"step {steps[-1]} (epoch {epochs[str(steps[-1])]})"
        assert tiles(frame) == PROBE_SIZE
        truth = SHAPES[summary["labels"][0]]
        assert frame.locator(".caption").first.inner_text().startswith(f"#0 true {truth} · pred ")  # class names
        page.screenshot(path=shots / "opened.png")

        act(frame, lambda: frame.locator('.example[data-example="1"]').click())  # leave example 1 out
        assert tiles(frame) == PROBE_SIZE - 1
        assert not frame.locator('canvas[data-example="1"]').count()

        set_range(frame, "#step", 0)
        assert frame.locator("#step-label").inner_text() == f"step {steps[0]} (epoch {epochs[str(steps[0])]})"
        act(frame, lambda: frame.locator(f'svg.curve .curve-point[data-step="{steps[1]}"]').first.click())
        assert frame.locator("#step-label").inner_text().startswith(f"step {steps[1]} ")

        act(frame, lambda: frame.locator("#sign").select_option("positive"))
        set_range(frame, "#opacity", 1)
        method = summary["methods"][0]
        maps = get_json(f"{url}/data/plugin/{PLUGIN}/maps?run=a/version_0&step={steps[1]}&method={method}")
        values = maps["values"][0]
        top = max(range(len(values)), key=values.__getitem__)
        row, column = divmod(top, maps["width"])
        x, y = int((column + 0.5) * TILE / maps["width"]), int((row + 0.5) * TILE / maps["height"])
        assert pixel(frame, 0, 0, x, y) == [255, 0, 0, 255]  # the strongest positive value, fully opaque red
        page.screenshot(path=shots / "positive.png")

        act(frame, lambda: frame.locator("#compare").select_option("runs"))
        assert tiles(frame) == 2 * (PROBE_SIZE - 1)
        assert "b/version_0" in frame.locator(".panel-title").nth(1).inner_text()
        page.screenshot(path=shots / "runs.png")

        act(frame, lambda: frame.locator("#compare").select_option("none"))
        act(frame, lambda: frame.locator("#run").select_option("thin"))
        set_range(frame, "#step", 1)  # the thinned point: a note, and no request that fails
        assert frame.locator("#step-label").inner_text() == "step 10 (epoch 1)"
        assert "was deleted" in frame.locator(".tile").first.inner_text()
        assert "true 1 · pred 1" in frame.locator(".tile").first.inner_text()
        assert frame.locator("#error").inner_text() == ""

        act(frame, lambda: frame.locator("#run").select_option("wide"))
        set_range(frame, "#step", 0)
        height = frame.locator('canvas[data-example="0"]').evaluate("c => [c.width, c.height]")
        assert height == [TILE, TILE // 2]  # the probe's aspect, not a square
        # Example 0's positive quarter is the top-left of the wide tile, drawn where the image's is.
        assert pixel(frame, 0, 0, TILE // 4, TILE // 8) == [255, 0, 0, 255]  # positive sign, full opacity
        r, g, b, _ = pixel(frame, 0, 0, 3 * TILE // 4, TILE // 8)  # the top-right quarter: no heat, the grey probe
        assert r == g == b
        assert not errors, errors
    assert len(list(shots.glob("*.png"))) == 3
