"""A real TensorBoard on a log directory, and headless Debian Chromium driven by playwright (never a
downloaded browser): what the browser tests, the screenshot scripts and ``benchmarks.images_tab`` share."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLUGIN = "xai_explorer"
START_TIMEOUT_S = 120
LAUNCHER = (
    "import sys; from tensorboard import default, program; from lightning_xai.explorer import ExplorerPlugin; "
    "tb = program.TensorBoard(plugins=default.get_plugins() + [ExplorerPlugin]); "
    "tb.configure(argv=[None, *sys.argv[1:]]); tb.main()"
)
"""TensorBoard with the explorer given by hand, where the entry point is not registered (a checkout not
installed with ``pip install -e .`` since the entry point was added to pyproject.toml)."""


def entry_point_registered() -> bool:
    """Whether ``tensorboard`` finds the explorer by its entry point (asked from outside the checkout, whose
    stale ``*.egg-info`` would otherwise shadow the installed metadata)."""
    code = "from importlib.metadata import entry_points as e; print([x.name for x in e(group='tensorboard_plugins')])"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir())
    return PLUGIN in found.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def explorer_listed(url: str) -> bool:
    """Ready when TensorBoard lists the explorer as enabled (it has found a run with the monitor's maps)."""
    return bool(get_json(f"{url}/data/plugins_listing").get(PLUGIN, {}).get("enabled"))


def images_and_scalars_read(url: str) -> bool:
    """Ready when TensorBoard has read some images and some scalars."""
    images, scalars = (get_json(f"{url}/data/plugin/{p}/tags") for p in ("images", "scalars"))
    return any(images.values()) and any(scalars.values())


@contextmanager
def tensorboard(
    logdir: Path,
    ready: Callable[[str], bool] = explorer_listed,
    arguments: Sequence[str] = (),
    timeout_s: float = START_TIMEOUT_S,
) -> Iterator[str]:
    """A TensorBoard on ``logdir`` (run from a temporary directory: pass an absolute path), its URL once
    ``ready(url)`` holds; stopped on exit.  The explorer is loaded by its entry point, or by hand."""
    port = free_port()
    given = ["--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1", *arguments]
    if entry_point_registered():
        command = [str(Path(sys.executable).with_name("tensorboard")), *given]
    else:
        command = [sys.executable, "-c", LAUNCHER, *given]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"TensorBoard exited with {process.returncode}:\n{log.read().decode()[-2000:]}")
            try:
                if ready(url):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"TensorBoard on {logdir} was not ready within {timeout_s} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[tuple[Any, list[str]]]:
    """A page in headless Chromium at ``width`` x ``height`` CSS pixels, and the console errors it reports."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(f"{m.text} ({m.location})"))
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            yield page, errors
        finally:
            browser.close()
