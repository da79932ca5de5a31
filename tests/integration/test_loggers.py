"""Where the monitor's images go with W&B, MLflow, TensorBoard and CSV loggers, read back from what the real
libraries wrote: W&B's offline run file and media folder, the MLflow store, TensorBoard's event file."""

from __future__ import annotations

import glob
import io
import json
import re
import struct
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch.utils.data import DataLoader

from lightning_xai import AttributionMonitor, IndexedDataset, InfluenceMonitor
from lightning_xai._write.image_sinks import FileSink, MlflowSink, TensorBoardSink, WandbSink, image_sinks
from lightning_xai._write.picture import Picture
from lightning_xai._write.writers import ExplanationWriter
from lightning_xai.demos.shapes import CLASSES, ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow

METHODS = ("integrated_gradients", "layer_gradcam")
POINTS = [(0, 0), (4, 0), (8, 1)]  # before training, then both epoch ends (4 steps an epoch)
SAMPLES = 3


def _expected_images() -> Counter:
    """(tag, step) of every image a two-epoch fit logs: the probe once, per point a grid for each method, a
    filmstrip per sample and method at the first point (every 10th) and the last, and the timelines at the
    last point."""
    images = [("xai_per_step/probe", 0)]
    for step, _ in POINTS:
        images += [(f"xai_per_step/{m}", step) for m in METHODS]
    for step in (POINTS[0][0], POINTS[-1][0]):
        images += [(f"xai_per_sample/{m}/sample_{i}", step) for m in METHODS for i in range(SAMPLES)]
    images += [(f"xai_overview/{m}", POINTS[-1][0]) for m in METHODS]
    return Counter(images)


def _fit(tmp_path: Path, loggers) -> tuple[AttributionMonitor, L.Trainer]:
    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(
        ["integrated_gradients"], num_probe_samples=SAMPLES, class_names=CLASSES, on_error="raise"
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=loggers,
        callbacks=[monitor],
        max_epochs=2,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=64, n_val=16, size=16, batch_size=16))
    return monitor, trainer


def _grid_caption(monitor: AttributionMonitor, method: str, step: int, epoch: int) -> str:
    """The caption a probe grid must carry, from the monitor's own record of the point."""
    (record,) = [r for r in monitor.history if r["step"] == step and r["method"] == method]
    truth = monitor.probe.labels.tolist()
    samples = [
        f"#{i}  true: {CLASSES[t]}, pred: {CLASSES[p]}" for i, (t, p) in enumerate(zip(truth, record["prediction"]))
    ]
    return f"{method}, step {step} (epoch {epoch}): " + "; ".join(samples)


def _stray_pngs(tmp_path: Path) -> list[str]:
    """PNG files beside the logs other than the end-of-fit timelines (and the loggers' own stores)."""
    return [
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*.png")
        if not p.name.startswith("timeline_") and not {"wandb", "artifacts"} & set(p.parts[:-1])
    ]


def _decoded(png: bytes | Path) -> np.ndarray:
    data = png.read_bytes() if isinstance(png, Path) else png
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ---------------------------------------------------------------------- W&B: the offline run read back


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode with every folder it writes under ``tmp_path``; the run is finished after."""
    wandb = pytest.importorskip("wandb")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_home").mkdir()
    yield lambda: WandbLogger(save_dir=str(tmp_path), project="xai-test")
    wandb.finish()


def _wandb_history(tmp_path: Path) -> tuple[list[dict], Path]:
    """The history rows of the offline run (key -> decoded value) and its files folder.

    ``run-<id>.wandb`` is a LevelDB-style log of ``wandb.proto`` records: a 7-byte header, then 32 KiB blocks
    of chunks (checksum, length, type: 1 whole, 2 first, 3 middle, 4 last); a block's tail under 7 bytes is
    padding.
    """
    import wandb

    wandb.finish()
    wandb.teardown()  # stops W&B's service process: only then is the run file complete on disk
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    data, block, position, pending, rows = Path(path).read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        room = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position : position + 7]) if room >= 7 else (0, 0, 0)
        if kind == 0:
            position += room
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return rows, Path(path).parent / "files"


def _wandb_images(rows: list[dict]) -> list[dict]:
    """Every image entry: tag, trainer step, W&B's own step, caption and file."""
    images = []
    for row in rows:
        for key, value in row.items():
            if key.endswith("/_type") and value == "images/separated":
                tag = key[: -len("/_type")]
                (caption,), (file,) = row[f"{tag}/captions"], row[f"{tag}/filenames"]
                images.append(
                    {
                        "tag": tag,
                        "step": row["trainer/global_step"],
                        "_step": row["_step"],
                        "caption": caption,
                        "file": file,
                    }
                )
    return images


def test_wandb_gets_every_image_with_its_caption_at_the_trainer_step(tmp_path, wandb_offline):
    monitor, _ = _fit(tmp_path, [wandb_offline()])
    rows, files = _wandb_history(tmp_path)
    images = _wandb_images(rows)
    assert Counter((i["tag"], i["step"]) for i in images) == _expected_images()
    # W&B's own step grows by one per entry: none was refused for going back, and the trainer's curves share the axis.
    assert [row["_step"] for row in rows] == list(range(len(rows)))
    assert [r["trainer/global_step"] for r in rows if "val_acc" in r] == [3, 7]
    assert [r["trainer/global_step"] for r in rows if "xai/integrated_gradients/infidelity" in r] == [0, 4, 8]
    captions = {(i["tag"], i["step"]): i["caption"] for i in images}
    for step, epoch in POINTS:
        for method in METHODS:
            assert captions[f"xai_per_step/{method}", step] == _grid_caption(monitor, method, step, epoch)
    strip = captions["xai_per_sample/integrated_gradients/sample_1", 8]
    truth = CLASSES[monitor.probe.labels[1]]
    assert strip.startswith(f"integrated_gradients, sample #1: input #1  true: {truth}; step 0 (epoch 0), pred: ")
    assert "; step 4 (epoch 0), pred: " in strip and "; step 8 (epoch 1), pred: " in strip
    assert captions["xai_per_step/probe", 0].startswith(
        f"probe: 3 examples: #0  true: {CLASSES[monitor.probe.labels[0]]}"
    )
    assert captions["xai_overview/layer_gradcam", 8].startswith(
        "layer_gradcam, steps 0 to 8, predictions at step 8: #0"
    )
    for image in images:  # the media files are there and are the pictures the entries describe
        assert _decoded(files / image["file"]).ndim == 3
    timeline = next(i for i in images if i["tag"] == "xai_overview/integrated_gradients")
    root = Path(tmp_path) / "xai"
    assert (_decoded(files / timeline["file"]) == _decoded(root / "timeline_integrated_gradients.png")).all()
    assert _stray_pngs(tmp_path) == []  # no images/ folder of PNG files beside the logs


# ---------------------------------------------------------------------- MLflow: the local store read back


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """The URI of a local MLflow file store (MLflow 3 refuses one unless allowed)."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def _mlflow_images(client, run_id: str) -> Counter:
    """(key, step) of the run's stepped images, from the artifact names MLflow's image grid reads:
    ``images/<key with / as ~>+step+<step>+timestamp+<ms>+<uuid>.png`` (a ``+compressed.webp`` beside each)."""
    names = [Path(f.path).name for f in client.list_artifacts(run_id, "images")]
    pngs = [re.fullmatch(r"(.+)\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png", n) for n in names]
    assert len(names) == 2 * sum(m is not None for m in pngs)  # each PNG has its compressed preview
    return Counter((m[1].replace("~", "/"), int(m[2])) for m in pngs if m)


def test_mlflow_gets_stepped_images_and_captions(tmp_path, mlflow_store):
    from mlflow import MlflowClient
    from mlflow.artifacts import load_dict

    logger = MLFlowLogger(experiment_name="xai", tracking_uri=mlflow_store)
    monitor, _ = _fit(tmp_path, [logger])
    client = MlflowClient(mlflow_store)
    run = client.get_run(logger.run_id)
    assert _mlflow_images(client, logger.run_id) == _expected_images()
    assert run.data.tags["mlflow.loggedImages"] == "True"
    assert [m.step for m in client.get_metric_history(logger.run_id, "xai/integrated_gradients/infidelity")] == [
        0,
        4,
        8,
    ]
    for step, epoch in POINTS:
        captions = load_dict(f"{run.info.artifact_uri}/xai_captions/step_{step:07d}.json")
        assert captions["xai_per_step/integrated_gradients"] == _grid_caption(
            monitor, "integrated_gradients", step, epoch
        )
        assert set(captions) == {tag for tag, s in _expected_images() if s == step}
    store = Path(run.info.artifact_uri.removeprefix("file://"))
    (timeline,) = store.glob("images/xai_overview~integrated_gradients+step+8+*.png")
    assert (_decoded(timeline) == _decoded(store / "xai" / "timeline_integrated_gradients.png")).all()
    assert {"manifest.json", "probe.pt"} <= {a.path.split("/")[-1] for a in client.list_artifacts(logger.run_id, "xai")}
    assert not (Path(logger.save_dir) / "xai").exists()  # nothing of ours loose in the store
    assert _stray_pngs(tmp_path) == []


def test_mlflow_before_stepped_images_gets_artifacts(tmp_path, mlflow_store):
    """MLflow < 2.12 has ``log_image(run_id, image, artifact_file)`` only: each image becomes an artifact."""
    from mlflow import MlflowClient
    from mlflow.artifacts import load_dict

    class OldClient(MlflowClient):
        def log_image(self, run_id, image, artifact_file):
            super().log_image(run_id, image, artifact_file=artifact_file)

    client = OldClient(mlflow_store)
    run = client.create_run(client.create_experiment("xai"))
    image = torch.rand(3, 5, 7)
    sink = MlflowSink(SimpleNamespace(experiment=client, run_id=run.info.run_id))  # what it reads of MLFlowLogger
    sink.write("xai_per_step/probe", Picture(image), 3, "probe: 1 example")
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / "xai_per_step/probe/step_0000003.png"
    assert (_decoded(stored) == Picture(image).pixels).all()
    captions = load_dict(f"{run.info.artifact_uri}/xai_captions/step_0000003.json")
    assert captions == {"xai_per_step/probe": "probe: 1 example"}


# ---------------------------------------------------------------------- several loggers, CSV, choice of sinks


def test_tensorboard_wandb_and_csv_together_each_get_what_they_show(tmp_path, wandb_offline):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tensorboard = TensorBoardLogger(tmp_path, name="logs", version=0)
    csv = CSVLogger(tmp_path, name="csv", version=0)
    _fit(tmp_path, [tensorboard, wandb_offline(), csv])
    (events_file,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(events_file, size_guidance={"images": 0})
    events.Reload()
    logged = [(tag, e) for tag in events.Tags()["images"] for e in events.Images(tag)]
    assert Counter((tag, e.step) for tag, e in logged) == _expected_images()
    tensorboard_images = {(tag, e.step): e for tag, e in logged}
    rows, files = _wandb_history(tmp_path)
    wandb_images = _wandb_images(rows)
    assert Counter((i["tag"], i["step"]) for i in wandb_images) == _expected_images()
    for image in wandb_images:  # the same pictures in both
        shown = tensorboard_images[image["tag"], image["step"]].encoded_image_string
        assert (_decoded(files / image["file"]) == _decoded(shown)).all(), image["tag"]
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "xai/integrated_gradients/infidelity" in header  # CSV: the scalars
    assert _stray_pngs(tmp_path) == []  # and no PNG files, since other loggers show the images


def test_csv_alone_keeps_png_files(tmp_path):
    _fit(tmp_path, [CSVLogger(tmp_path, name="csv", version=0)])
    root = tmp_path / "csv" / "version_0" / "xai"
    written = Counter(
        (p.parent.name, int(p.stem.removeprefix("step_"))) for p in (root / "images").glob("*/step_*.png")
    )
    assert written == Counter((tag.replace("/", "_"), step) for tag, step in _expected_images())


def test_file_sink_names_a_lossy_picture_jpg_and_keeps_its_look(tmp_path):
    generator = torch.Generator().manual_seed(0)
    image = (torch.rand(3, 1, 1, generator=generator) * 0.6 + 0.2).expand(3, 96, 128).clone()
    image[:, 20:60, 30:90] = torch.tensor([0.8, 0.1, 0.1]).view(3, 1, 1)  # a red block on a flat colour
    FileSink(tmp_path).write("xai_per_step/probe", Picture(image, lossy=True), 4, None)
    (written,) = (tmp_path / "images" / "xai_per_step_probe").iterdir()
    assert written.name == "step_0000004.jpg" and written.read_bytes()[:2] == b"\xff\xd8"
    difference = np.abs(_decoded(written).astype(int) - Picture(image).pixels.astype(int))
    assert difference.mean() < 1.0 and difference.max() < 40


@pytest.mark.parametrize(
    ("kinds", "sinks"),
    [
        (["csv"], [FileSink]),
        ([], [FileSink]),
        (["tensorboard", "csv"], [TensorBoardSink]),
        (["wandb"], [WandbSink]),
        (["mlflow", "tensorboard"], [TensorBoardSink, MlflowSink]),
        (["wandb_tb_sync"], [WandbSink]),  # mirrors no TensorBoard logger: W&B needs its own copy
        (["tensorboard", "wandb_tb_sync"], [TensorBoardSink]),  # W&B already mirrors TensorBoard's images
    ],
)
def test_sinks_follow_the_loggers(tmp_path, monkeypatch, kinds, sinks):
    for library in {"wandb", "mlflow"} & {kind.split("_")[0] for kind in kinds}:
        pytest.importorskip(library)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    made = {
        "csv": lambda: CSVLogger(tmp_path),
        "tensorboard": lambda: TensorBoardLogger(tmp_path),
        "wandb": lambda: WandbLogger(save_dir=str(tmp_path), offline=True),
        "wandb_tb_sync": lambda: WandbLogger(save_dir=str(tmp_path), offline=True, sync_tensorboard=True),
        "mlflow": lambda: MLFlowLogger(tracking_uri=(tmp_path / "mlruns").as_uri()),
    }
    trainer = L.Trainer(default_root_dir=tmp_path, logger=[made[k]() for k in kinds] or False)
    assert [type(sink) for sink in image_sinks(trainer, tmp_path)] == sinks


def test_a_failing_sink_leaves_the_others_their_image(tmp_path):
    class Unreachable:
        def write(self, tag, picture, step, caption):
            raise ConnectionError("tracking server unreachable")

    trainer = L.Trainer(default_root_dir=tmp_path, logger=CSVLogger(tmp_path, name="csv", version=0))
    writer = ExplanationWriter(trainer, tmp_path / "xai")
    writer.sinks.insert(0, Unreachable())
    image = torch.rand(3, 4, 6)
    with pytest.raises(ConnectionError, match="unreachable"):
        writer.image("xai_per_step/probe", image, 2, file_name="probe.png", caption="probe")
    assert (
        _decoded(tmp_path / "xai" / "images" / "xai_per_step_probe" / "step_0000002.png") == Picture(image).pixels
    ).all()
    assert (tmp_path / "xai" / "probe.png").exists()


# ---------------------------------------------------------------------- the influence monitor's tables and images


def _influence_fit(tmp_path: Path, logger) -> InfluenceMonitor:
    """Two epochs of ShapesNet with an InfluenceMonitor on three validation images."""
    L.seed_everything(0, verbose=False)
    data = ShapesDataModule(n_train=32, n_val=8, size=16, batch_size=16)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))  # dicts: the images under "image"
    monitor = InfluenceMonitor((batch["image"][:3], batch["label"][:3]), k=2, num_suspects=4, input_key="image")

    class Indexed(ShapesDataModule):
        def train_dataloader(self):
            return DataLoader(IndexedDataset(data.train_dataloader().dataset), batch_size=16, shuffle=True)

    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=logger,
        callbacks=[monitor],
        max_epochs=2,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(ShapesNet(), datamodule=Indexed(n_train=32, n_val=8, size=16, batch_size=16))
    return monitor


def test_influence_tables_and_images_reach_mlflow(tmp_path, mlflow_store):
    from mlflow import MlflowClient
    from mlflow.artifacts import load_dict

    logger = MLFlowLogger(experiment_name="xai", tracking_uri=mlflow_store)
    monitor = _influence_fit(tmp_path, logger)
    client = MlflowClient(mlflow_store)
    run = client.get_run(logger.run_id)
    suspects = load_dict(f"{run.info.artifact_uri}/influence_suspects/step_0000004.json")
    expected = monitor.tracin.suspects(4).tolist()
    assert suspects["columns"] == ["rank", "index", "label", "self_influence", "visits"]
    assert [row[1] for row in suspects["data"]] == expected
    probe = load_dict(f"{run.info.artifact_uri}/influence_probe_0/step_0000004.json")
    assert probe["columns"] == ["kind", "rank", "index", "label", "score"] and probe["data"]
    images = _mlflow_images(client, logger.run_id)
    assert images == Counter({(f"influence/probe_{i}", step): 1 for i in range(3) for step in (2, 4)})
    assert [m.step for m in client.get_metric_history(logger.run_id, "influence/self_influence_max")] == [2, 4]


def test_influence_tables_and_images_reach_wandb(tmp_path, wandb_offline):
    _influence_fit(tmp_path, wandb_offline())
    rows, files = _wandb_history(tmp_path)
    tables = [(key, row["trainer/global_step"]) for row in rows for key, value in row.items() if value == "table-file"]
    assert sorted(tables) == sorted(
        (f"{tag}/_type", step)
        for tag in ["influence/suspects"] + [f"influence/probe_{i}" for i in range(3)]
        for step in (2, 4)
    )
    images = _wandb_images(rows)
    assert Counter((i["tag"], i["step"]) for i in images) == Counter(
        {(f"influence/probe_{i}", step): 1 for i in range(3) for step in (2, 4)}
    )
    assert all((files / image["file"]).is_file() for image in images)
