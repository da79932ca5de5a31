"""The explorer's routes, served by the WSGI apps TensorBoard mounts (its own plugin tests' approach: a
werkzeug test client on the plugin's apps), over hand-made artifacts and a tiny real monitored fit."""

from __future__ import annotations

import io
import json

import numpy
import pytest
import torch
from tensorboard.plugins.base_plugin import TBContext
from werkzeug import Response
from werkzeug.test import Client
from werkzeug.wrappers import Request

from lightning_xai.explorer import ExplorerPlugin, reading
from tests.lightning_xai.explorer.runs import PROBE_SIZE, hand_made_run, monitored_run


def _client(logdir) -> Client:
    apps = ExplorerPlugin(TBContext(logdir=str(logdir))).get_plugin_apps()

    def dispatch(environ, start_response):  # TensorBoard's routing: the exact path, or a "/*" prefix
        path = Request(environ).path
        route = path if path in apps else path.rpartition("/")[0] + "/*"
        return apps.get(route, Response(status=404))(environ, start_response)

    return Client(dispatch)


def _get(client: Client, url: str, status: int = 200):
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)
    return response


@pytest.fixture
def hand_made(tmp_path):
    hand_made_run(tmp_path / "thin" / "xai")
    return tmp_path


def test_runs_are_the_directories_with_a_manifest(hand_made):
    (hand_made / "other" / "xai").mkdir(parents=True)  # no manifest: not a run
    assert json.loads(_get(_client(hand_made), "/runs").data) == ["thin"]
    assert ExplorerPlugin(TBContext(logdir=str(hand_made))).is_active()
    assert not ExplorerPlugin(TBContext(logdir=str(hand_made / "other"))).is_active()


def test_the_manifest_summary_has_points_labels_predictions_and_verdicts(hand_made):
    summary = json.loads(_get(_client(hand_made), "/manifest?run=thin").data)
    assert summary["steps"] == [0, 10] and summary["epochs"] == {"0": 0, "10": 1}
    assert summary["methods"] == ["saliency"] and summary["examples"] == 2
    assert summary["labels"] == [1, 0] and summary["predictions"] == {"0": [1, 1], "10": [1, 0]}
    first, thinned = summary["points"]["saliency"]
    assert first["maps"] and first["metrics"] == {"sparseness": 0.5}
    assert not thinned["maps"] and thinned["maps_missing"] == "maps_step_0000010.pt was deleted"
    assert thinned["verdicts"][0]["violated"]


def test_half_precision_summed_maps_are_served_downsampled_as_float32(hand_made):
    body = json.loads(_get(_client(hand_made), "/maps?run=thin&step=0&method=saliency&examples=1,0").data)
    assert (body["height"], body["width"]) == (reading.MAX_SIDE, reading.MAX_SIDE) and body["examples"] == [1, 0]
    second, first = (torch.tensor(v).reshape(reading.MAX_SIDE, reading.MAX_SIDE) for v in body["values"])
    half = reading.MAX_SIDE // 2
    assert first[:half, :half].eq(2).all() and first[half:, :].eq(0).all()
    assert second[half:, half:].eq(-1).all() and second[:half, :].eq(0).all()
    ranges = json.loads(_get(_client(hand_made), "/ranges?run=thin&method=saliency").data)
    assert ranges == {"0": {"positive": [2.0, 0.0], "negative": [0.0, 1.0]}}  # the thinned point is left out


@pytest.mark.parametrize(
    ("url", "status", "reason"),
    [
        ("/manifest?run=nope", 404, "no run 'nope'"),
        ("/manifest", 400, "missing query argument 'run'"),
        ("/maps?run=thin&step=10&method=saliency", 404, "was deleted"),
        ("/maps?run=thin&step=5&method=saliency", 404, "steps: [0, 10]"),
        ("/maps?run=thin&step=0&method=occlusion", 404, "methods: ['saliency']"),
        ("/maps?run=thin&step=zero&method=saliency", 400, "step: expected an integer"),
        ("/maps?run=thin&step=0&method=saliency&examples=7", 404, "out of range"),
        ("/probe?run=thin&example=2", 404, "out of range"),
        ("/probe?run=../..&example=0", 404, "no run"),
        ("/static/plugin.py", 404, "no static file"),
    ],
)
def test_errors_are_json_with_the_reason(hand_made, url, status, reason):
    response = _get(_client(hand_made), url, status)
    assert response.content_type == "application/json" and reason in json.loads(response.data)["error"]


def test_probe_images_and_the_frontend_are_served(hand_made):
    png = _get(_client(hand_made), "/probe?run=thin&example=1")
    assert png.content_type == "image/png" and png.data.startswith(b"\x89PNG")
    script = _get(_client(hand_made), "/static/index.js")
    assert script.content_type.startswith("text/javascript") and b"export async function render" in script.data
    assert ExplorerPlugin(TBContext(logdir=str(hand_made))).frontend_metadata().es_module_path == "/static/index.js"


@pytest.mark.slow
def test_a_monitored_fit_is_served(tmp_path):
    names = ("circle", "square", "triangle")
    directory = monitored_run(tmp_path, "shapes", class_names=names, display_mean=(0.5,), display_std=(0.25,))
    client = _client(tmp_path)
    assert json.loads(_get(client, "/runs").data) == ["shapes/version_0"]
    summary = json.loads(_get(client, "/manifest?run=shapes/version_0").data)
    written = json.loads((directory / "manifest.json").read_text())
    assert summary["steps"] == sorted({r["step"] for r in written}) and len(summary["steps"]) == 3
    assert set(summary["methods"]) == {"saliency", "layer_gradcam"} and summary["examples"] == PROBE_SIZE
    assert len(summary["labels"]) == PROBE_SIZE and summary["predictions"]["0"] == written[0]["prediction"]
    assert summary["class_names"] == list(names)
    assert summary["points"]["saliency"][0]["metrics"] == written[0]["metrics"]
    step = summary["steps"][-1]
    body = json.loads(_get(client, f"/maps?run=shapes/version_0&step={step}&method=saliency").data)
    stored = torch.load(directory / f"maps_step_{step:07d}.pt", weights_only=True)["saliency"].float().sum(1)
    assert torch.allclose(torch.tensor(body["values"]), stored.flatten(1))
    png = _get(client, "/probe?run=shapes/version_0&example=3").data
    from PIL import Image

    shown = torch.from_numpy(numpy.asarray(Image.open(io.BytesIO(png)).convert("RGB"))).permute(2, 0, 1)
    inputs = torch.load(directory / "probe.pt", weights_only=True)["inputs"][3]
    # The normalisation the monitor was told about is undone, not each image stretched to its own range.
    assert torch.equal(shown, ((inputs * 0.25 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8))
