"""The explorer as a TensorBoard dynamic plugin: HTTP routes over what :mod:`lightning_xai.explorer.reading`
reads, and the ES module of ``static/`` that TensorBoard loads in the tab's iframe.

TensorBoard finds the plugin through the ``tensorboard_plugins`` entry point of this distribution
(``pyproject.toml``), so the tab appears wherever the package is installed. Routes, under
``/data/plugin/xai_explorer``:

- ``/runs``: the runs under the log directory with an ``xai/manifest.json``.
- ``/manifest?run=R``: steps, epochs, methods, metrics and flags per point, true labels, targets and
  predictions per step, regression verdicts when recorded.
- ``/maps?run=R&step=S&method=M[&examples=0,2]``: channel-summed maps, downsampled for display, as
  JSON float lists.
- ``/ranges?run=R&method=M``: per step and example, the largest positive and negative value (a colour
  scale shared over the run).
- ``/probe?run=R&example=I``: a probe example as a PNG.
- ``/static/<file>``: the frontend.

A request that cannot be served gets a 404 (400 for a malformed argument) with ``{"error": reason}``.
"""

from __future__ import annotations

import io
import json
import mimetypes
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PIL import Image
from tensorboard.plugins import base_plugin
from werkzeug import Request, Response

from lightning_xai.explorer import reading

PLUGIN_NAME = "xai_explorer"
STATIC = Path(__file__).with_name("static")
STATIC_FILES = ("index.js", "style.css")
"""The files ``/static/`` serves, and no other."""

Route = Callable[[Request], Response]


class BadRequest(ValueError):
    """A malformed query argument; the message says which and what was expected (served as a 400)."""


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, content_type="application/json")


def _handled(route: Route) -> Callable[[Any, Any], Iterable[bytes]]:
    """``route`` as a WSGI app whose expected failures are JSON errors with their reasons."""

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = route(request)
        except reading.NotFound as error:
            response = _json({"error": str(error)}, 404)
        except BadRequest as error:
            response = _json({"error": str(error)}, 400)
        return response(environ, start_response)

    return app


def _argument(request: Request, name: str) -> str:
    value = request.args.get(name)
    if value is None:
        raise BadRequest(f"missing query argument {name!r}")
    return value


def _integer(request: Request, name: str) -> int:
    value = _argument(request, name)
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {value!r}") from None


def _examples(request: Request) -> list[int] | None:
    value = request.args.get("examples")
    if not value:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise BadRequest(f"examples: expected integers separated by commas, got {value!r}") from None


class ExplorerPlugin(base_plugin.TBPlugin):  # type: ignore[misc]  # TensorBoard is untyped
    """The ``XAI explorer`` tab: the maps, metrics and predictions that an
    :class:`~lightning_xai.AttributionMonitor` wrote beside the logs, explored in the browser.

    TensorBoard builds it from its context; tests build it the same way:

    >>> from tensorboard.plugins.base_plugin import TBContext
    >>> ExplorerPlugin(TBContext(logdir="runs")).plugin_name
    'xai_explorer'

    Args:
        context: TensorBoard's plugin context; only its ``logdir`` is read.
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self.logdir = Path(context.logdir or ".")

    def is_active(self) -> bool:
        """Whether any run under the log directory has a manifest (the tab is listed either way)."""
        return bool(reading.find_runs(self.logdir))

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="XAI explorer")

    def get_plugin_apps(self) -> dict[str, Callable[[Any, Any], Iterable[bytes]]]:
        routes: dict[str, Route] = {
            "/runs": self._runs,
            "/manifest": self._manifest,
            "/maps": self._maps,
            "/ranges": self._ranges,
            "/probe": self._probe,
            "/static/*": self._static,
        }
        return {path: _handled(route) for path, route in routes.items()}

    def _run(self, request: Request) -> reading.Run:
        return reading.find_run(self.logdir, _argument(request, "run"))

    def _runs(self, request: Request) -> Response:
        return _json([run.name for run in reading.find_runs(self.logdir)])

    def _manifest(self, request: Request) -> Response:
        return _json(reading.summary(self._run(request)))

    def _maps(self, request: Request) -> Response:
        run, step, method = self._run(request), _integer(request, "step"), _argument(request, "method")
        examples = _examples(request)
        maps = reading.point_maps(run, step, method, examples)
        return _json(
            {
                "run": run.name,
                "step": step,
                "method": method,
                "examples": examples or list(range(maps.shape[0])),
                "height": maps.shape[1],
                "width": maps.shape[2],
                "values": maps.flatten(1).tolist(),
            }
        )

    def _ranges(self, request: Request) -> Response:
        return _json(reading.ranges(self._run(request), _argument(request, "method")))

    def _probe(self, request: Request) -> Response:
        image = reading.probe_image(self._run(request), _integer(request, "example"))
        png = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(png, format="PNG")
        return Response(png.getvalue(), content_type="image/png")

    def _static(self, request: Request) -> Response:
        name = request.path.rpartition("/")[2]
        if name not in STATIC_FILES:
            raise reading.NotFound(f"no static file {name!r}; there are {list(STATIC_FILES)}")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            content_type = "text/javascript"  # an ES module must be served as JavaScript
        return Response((STATIC / name).read_bytes(), content_type=content_type)
