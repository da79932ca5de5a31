"""How long TensorBoard takes to show the IMAGES tab of a long monitored run, in headless Chromium.

    python -m benchmarks.images_tab               # 300 points at 224 px, before and after
    python -m benchmarks.images_tab --points 100

A 300-point run at 224 px takes hours on a CPU, so it is assembled: the monitor runs the ``log_size``
fit (ResNet-18, 8 probe images, integrated gradients, occlusion, GradCAM; six points), then its event file
is written out again as ``POINTS`` points: every point's grids and scalars, the filmstrips at the points
where the monitor writes them, the probe sheet at the first point and the overview at the last.  Two
runs are assembled, each from its own fit:

* ``before``: PNG images and filmstrips at every point (``image_format="png", filmstrip_every=1``), what
  the monitor wrote before its byte budget;
* ``after``: the defaults (JPEG at this size, filmstrips every 10th point and at the last).

For each, TensorBoard (its default settings, ``tensorboard --logdir``) is started on the run alone and two
times are taken: until its HTTP API serves the last point's image (the whole file read), and from then
until Chromium shows the IMAGES tab with every image in the window loaded.  Needs ``/usr/bin/chromium``
and ``playwright`` (as ``scripts/screenshots`` does).
"""

from __future__ import annotations

import argparse
import glob
import logging
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard.writer import FileWriter

from benchmarks.log_size import measure
from lightning_xai._config import tags

POINTS = 300
SOURCE_POINTS = 6
SIZE = 224
SHOW_TIMEOUT_S = 600


def assemble(source: Path, target: Path, points: int, filmstrip_every: int) -> int:
    """Write ``points`` points into an event file under ``target`` from the run in ``source``; its bytes."""
    (path,) = glob.glob(str(source / "**" / "events.out.tfevents.*"), recursive=True)
    events = EventAccumulator(path, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    latest = {tag: events.Images(tag)[-1] for tag in events.Tags()["images"]}
    values = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    writer = FileWriter(str(target))

    def images(step: int, group: str) -> None:
        for tag, image in latest.items():
            if tag.startswith(group) and tag != tags.PROBE_IMAGE:
                _write_image(writer, tag, image, step)

    last = points - 1
    for step in range(points):
        if step == 0:
            _write_image(writer, tags.PROBE_IMAGE, latest[tags.PROBE_IMAGE], step)
        images(step, tags.PER_STEP)
        if step % filmstrip_every == 0 or step == last:
            images(step, tags.PER_SAMPLE)
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()])
        writer.add_summary(summary, global_step=step)
    images(last, tags.OVERVIEW)
    writer.close()
    (written,) = glob.glob(str(target / "events.out.tfevents.*"))
    return Path(written).stat().st_size


def _write_image(writer: Any, tag: str, image: Any, step: int) -> None:
    encoded = Summary.Image(
        height=image.height, width=image.width, colorspace=3, encoded_image_string=image.encoded_image_string
    )
    writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), global_step=step)


def time_images_tab(logdir: Path, points: int) -> tuple[float, float, int]:
    """Seconds until TensorBoard serves the last point's grid, then until the IMAGES tab shows its images;
    and how many images were shown."""
    from tests.browser import chromium_page, get_json, tensorboard  # the checkout's browser helpers

    grid = tags.grid_tag("integrated_gradients")

    def last_point_read(url: str) -> bool:
        query = urllib.parse.urlencode({"run": ".", "tag": grid})
        shown = get_json(f"{url}/data/plugin/images/images?{query}")
        return bool(shown) and shown[-1]["step"] == points - 1

    start = time.perf_counter()
    with tensorboard(logdir.resolve(), last_point_read, timeout_s=SHOW_TIMEOUT_S) as url:
        read = time.perf_counter() - start
        with chromium_page(1600, 1200) as (page, errors):
            start = time.perf_counter()
            page.goto(f"{url}/#images")
            deadline = start + SHOW_TIMEOUT_S
            shown = 0
            while time.perf_counter() < deadline:
                found = page.locator("img").evaluate_all(
                    "els => els.filter(e => e.getBoundingClientRect().width > 0 && "
                    "e.getBoundingClientRect().top < window.innerHeight)"
                    ".map(e => e.complete && e.naturalWidth > 0)"
                )
                if found and all(found):
                    shown = len(found)
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - start
            if errors:
                raise RuntimeError(f"the IMAGES tab reported errors: {errors[:3]}")
    return read, seconds, shown


def bench_images_tab(points: int = POINTS) -> list[str]:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    configurations = {
        "before": {"image_format": "png", "filmstrip_every": 1, "time_budget": None},
        "after": {},
    }
    lines = [f"TensorBoard's IMAGES tab, a {points}-point run at {SIZE}x{SIZE} px (ResNet-18, 8 probe images)"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, options in configurations.items():
            with tempfile.TemporaryDirectory() as root:
                measure(SIZE, Path(root) / "source", SOURCE_POINTS, **options)
                every = int(options.get("filmstrip_every", 10))
                size = assemble(Path(root) / "source", Path(root) / "run", points, every)
                read, show, shown = time_images_tab(Path(root) / "run", points)
            lines.append(
                f"{name:<8} event file {size / 1e6:7.1f} MB | TensorBoard has read it after {read:6.1f} s | "
                f"IMAGES tab shows its {shown} images {show:5.1f} s later"
            )
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=POINTS)
    for line in bench_images_tab(parser.parse_args().points):
        print(line)
