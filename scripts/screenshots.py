"""Screenshots of a run's TensorBoard views, taken in headless Debian Chromium (started by scripts/screenshots).

    python scripts/screenshots.py LOGDIR OUTDIR

Starts TensorBoard on a free port, waits until it has read the run, opens each view at a common desktop
size, saves ``OUTDIR/tensorboard_<view>.png`` and prints, for the images, how large TensorBoard shows each
one (its width in the page against its width in pixels), then stops TensorBoard.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for its tests' browser helpers
from lightning_xai._config import tags as _tags  # noqa: E402
from tests.browser import chromium_page, images_and_scalars_read, tensorboard  # noqa: E402

_ALL_POINTS = "&_smoothingWeight=0"
"""Scalar views without TensorBoard's smoothing (0.6 distorts a dozen points)."""
LOCAL_SETTINGS = "window.localStorage.setItem('_ignoreYOutliers', 'false');"
"""Without TensorBoard's outlier clipping of the y-axis (it leaves out the untrained model's first point);
the dashboards keep this setting in the browser's local storage."""
VIEWS = {
    "images": ("#images", ()),
    "time_series": (
        "?smoothing=0#timeseries",
        (
            'button[data-value="image"]',
            f"text={_tags.OVERVIEW} >> visible=true",
            "text=Show actual image size >> visible=true",
        ),
    ),
    "scalars": (f"#scalars{_ALL_POINTS}", (f'text="{_tags.PREFIX}" >> visible=true',)),
    "custom_scalars": (f"#custom_scalars{_ALL_POINTS}", ()),
}
"""Output name -> TensorBoard route, and what to click there (groups it shows collapsed): in the Time Series
view, its filter to images, the overview group and actual image size; in the scalars, the monitor's group.
Smoothing is off: a few logged points are distorted by TensorBoard's default of 0.6."""
SCROLL_TO = {"scalars": f'text="{_tags.PREFIX}" >> visible=true'}
"""Views whose screenshot starts at a group further down: the scalars at the monitor's group."""
PAGE_TIMEOUT_MS = 60_000
CLICK_TIMEOUT_MS = 20_000
SETTLE_S = 3.0
"""After the network is quiet: time for TensorBoard's charts and images to draw."""


def _image_sizes(page) -> list[str]:
    """Each loaded image's width in pixels and as shown (playwright's locators see into shadow roots)."""
    sizes = page.locator("img").evaluate_all(
        "els => els.filter(e => e.naturalWidth > 0 && e.getBoundingClientRect().width > 0).map(e => "
        "[e.naturalWidth, e.naturalHeight, Math.round(e.getBoundingClientRect().width)])"
    )
    return [f"{w}x{h} px shown {shown} px wide" for w, h, shown in sizes]


def screenshots(logdir: Path, out: Path, width: int, height: int) -> list[Path]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    arguments = ["--samples_per_plugin", "images=100"]
    with (
        tensorboard(logdir.resolve(), images_and_scalars_read, arguments) as url,
        chromium_page(width, height) as (page, _),
    ):
        page.add_init_script(LOCAL_SETTINGS)
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        for name, (route, click) in VIEWS.items():
            page.goto(f"{url}/{route}")
            page.wait_for_load_state("networkidle")
            for target in click:
                try:
                    page.locator(target).first.click(timeout=CLICK_TIMEOUT_MS)
                except PlaywrightTimeout:
                    print(f"{name}: nothing to click for {target} (not logged yet?)")
                page.wait_for_load_state("networkidle")
            if name in SCROLL_TO:
                page.locator(SCROLL_TO[name]).first.evaluate("e => e.scrollIntoView()")
            time.sleep(SETTLE_S)
            page.wait_for_load_state("networkidle")
            path = out / f"tensorboard_{name}.png"
            page.screenshot(path=path)
            saved.append(path)
            if name in ("images", "time_series"):
                print(f"{name}: " + "; ".join(_image_sizes(page)[:12]))
    return saved


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1600, help="browser window, CSS pixels")
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args()
    for path in screenshots(args.logdir, args.out, args.width, args.height):
        print(f"saved {path}")
