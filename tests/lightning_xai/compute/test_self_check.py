"""The monitor's self-check: maps that are not finite, all zero or constant are flagged (warned about once
with the cause and the fix, drawn as labelled grey tiles, recorded in the manifest) and left out of the
metrics; examples without a mask are left out of the localisation means."""

import glob
import io
import json
import warnings

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from attribution.metrics import mass_in_mask, pointing_game
from lightning_xai import AttributionMonitor
from lightning_xai._compute import heat as _heat
from lightning_xai._compute.self_check import ALL_ZERO, CONSTANT, NOT_FINITE, Flag, map_problems, summarise
from lightning_xai._draw import render as _render


def test_each_examples_map_is_checked_for_being_finite_non_zero_and_varied():
    maps = torch.randn(6, 3, 4, 4)
    maps[1] = 0
    maps[2] = 0.5
    maps[3, 0, 0, 0] = float("nan")
    maps[4, 1, 2, 3] = float("inf")
    maps[5] = 0
    maps[5, 0, 0, 0] = 1e-30  # tiny but not zero: an explanation
    assert map_problems(maps) == [None, ALL_ZERO, CONSTANT, NOT_FINITE, NOT_FINITE, None]
    assert map_problems(torch.tensor([[2.0], [0.0]])) == [None, ALL_ZERO]  # one value: nothing to vary


def test_metrics_average_over_examples_whose_maps_passed_and_whose_masks_are_not_empty():
    usable = torch.tensor([True, True, False, True])
    has_mask = torch.tensor([True, False, True, True])
    values = {
        "infidelity": torch.tensor([1.0, 2.0, 100.0, float("nan")]),
        "mass_in_mask": torch.tensor([0.9, 0.0, 0.0, 0.7]),
        "convergence_delta": torch.tensor([float("nan")] * 4),
    }
    summary = summarise(values, usable, has_mask)
    assert summary.means["infidelity"] == pytest.approx(1.5)  # #2 failed its map, #3 is NaN
    assert summary.examples["infidelity"] == 2 and summary.partly["infidelity"] == [3]
    assert summary.means["mass_in_mask"] == pytest.approx(0.8)  # #1 has no mask, #2 no map
    assert summary.means["mask_examples"] == 2
    assert "convergence_delta" not in summary.means
    assert "NaN" in summary.undefined["convergence_delta"]
    nothing = summarise({"mass_in_mask": torch.ones(3)}, torch.ones(3, dtype=torch.bool), torch.zeros(3).bool())
    assert nothing.undefined == {"mass_in_mask": "no probe example has a non-empty mask"}


def test_a_half_empty_mask_set_gives_the_mean_over_the_non_empty_ones():
    maps = torch.rand(4, 1, 6, 6)
    masks = torch.zeros(4, 6, 6, dtype=torch.bool)
    masks[0, :3] = True
    masks[2, :, :2] = True  # examples 1 and 3: no object (a negative example, background only)
    has_mask = masks.flatten(1).any(1)
    oracle = torch.stack([(maps[i, 0] * masks[i]).sum() / maps[i, 0].sum() for i in (0, 2)]).mean()
    summary = summarise({"mass_in_mask": mass_in_mask(maps, masks)}, torch.ones(4, dtype=torch.bool), has_mask)
    assert summary.means["mass_in_mask"] == pytest.approx(float(oracle))
    assert summary.examples["mass_in_mask"] == 2
    hits = pointing_game(maps, masks)
    pointing = summarise({"pointing_game": hits}, torch.ones(4, dtype=torch.bool), has_mask)
    assert pointing.means["pointing_game"] == pytest.approx(float(hits[[0, 2]].mean()))


def test_a_failed_map_is_drawn_as_a_hatched_grey_tile_with_its_label():
    images = torch.rand(2, 3, 8, 8)
    heat = _heat.heat(torch.stack([torch.rand(1, 8, 8), torch.zeros(1, 8, 8)]), blank=torch.tensor([False, True]))
    assert torch.isfinite(heat.maps[0]).all() and torch.isnan(heat.maps[1]).all()
    assert heat.scale > 0  # set by the map that is shown
    tiles = _render.overlay(images, heat.maps, heat.signed)
    assert torch.equal(tiles[1], _render.no_map_tile((8, 8)))
    assert sorted(tiles[1].unique().tolist()) == pytest.approx([_render.NO_MAP_DARK, _render.NO_MAP_LIGHT])  # hatched
    assert not torch.equal(tiles[0], _render.no_map_tile((8, 8)))
    plain = _render.sheet(tiles, [["#0"], ["#1"]])
    marked = _render.sheet(tiles, [["#0"], ["#1"]], marks=[None, ("all zero", _render.WRONG)])
    differ = (plain != marked).any(dim=0).nonzero()
    assert len(differ) > 0 and differ[:, 1].min() >= plain.shape[2] // 2 - _render.PAD  # text on the second tile


def test_flag_messages_name_the_method_the_point_the_examples_the_cause_and_the_fix():
    flag = Flag("saliency", "maps", ALL_ZERO, (0, 1, 2), "the cause", "the fix")
    message = flag.message("step 3 (epoch 1)", 3)
    assert message.startswith("saliency at step 3 (epoch 1): the maps of all 3 examples are all zero.")
    assert "Likely cause: the cause. Fix: the fix." in message and "grey tiles" in message
    metric = Flag("saliency", "mass_in_mask", "undefined", (), "no probe example has a non-empty mask", "add some")
    assert "mass_in_mask is undefined. Likely cause: no probe example" in metric.message("step 0 (epoch 0)", 3)


# ------------------------------------------------------------------ in a Trainer


class _TinyViT(L.LightningModule):
    """torchvision's VisionTransformer initialises its classifier head to zero: before the first step, the class
    scores do not depend on the input, so every map is all zero."""

    def __init__(self):
        super().__init__()
        self.net = torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _images(n=8, size=32):
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, size, size, generator=generator), torch.arange(n) % 3)


def _fit(tmp_path, module, monitor, data, max_epochs=1, **kwargs):
    trainer = L.Trainer(
        callbacks=[monitor],
        default_root_dir=tmp_path,
        logger=TensorBoardLogger(tmp_path, name="logs", version=0),
        max_epochs=max_epochs,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )
    loader = DataLoader(data, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, loader, loader)
    return [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]


def _image(tmp_path, tag, index=0):
    (path,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"images": 0})
    events.Reload()
    event = events.Images(tag)[index]
    return event.step, np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def _grey_share(pixels):
    levels = {round(_render.NO_MAP_LIGHT * 255), round(_render.NO_MAP_DARK * 255)}
    grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])
    return float((grey & np.isin(pixels[..., 0], list(levels))).mean())


@pytest.mark.slow
def test_maps_of_a_model_that_ignores_its_input_are_flagged_with_the_cause_not_drawn(tmp_path):
    torch.manual_seed(0)
    monitor = AttributionMonitor(
        {"integrated_gradients": {"n_steps": 4}}, num_probe_samples=4, metrics=("infidelity",), every_n_epochs=1
    )
    messages = _fit(tmp_path, _TinyViT(), monitor, _images(), limit_train_batches=1)
    records = {(r["step"], r["method"]): r for r in monitor.history}
    before = records[(0, "integrated_gradients")]
    (flag,) = [f for f in before["flags"] if f["subject"] == "maps"]
    assert flag["problem"] == ALL_ZERO and flag["examples"] == [0, 1, 2, 3]
    assert "do not depend on the input" in flag["cause"] and "VisionTransformer" in flag["cause"]
    assert "infidelity" not in before["metrics"] and before["examples"]["infidelity"] == 0  # left out, not logged 0
    assert monitor.value("integrated_gradients", "infidelity", 0) is None
    assert monitor.missing_reason("integrated_gradients", "infidelity", 0).startswith("the self-check left it out")
    warned = [m for m in messages if "integrated_gradients at step 0 (epoch 0): the maps of all 4 examples" in m]
    assert warned and "do not depend on the input" in warned[0] and len(warned) == len(set(warned))
    after = records[(1, "integrated_gradients")]  # one step moved the head: real maps again
    assert after["flags"] == [] and "infidelity" in after["metrics"]
    step, grid = _image(tmp_path, "xai_per_step/integrated_gradients", 0)
    assert step == 0 and _grey_share(grid) > 0.3  # grey tiles, not a heat map over the images
    step, grid = _image(tmp_path, "xai_per_step/integrated_gradients", 1)
    assert step == 1 and _grey_share(grid) < 0.01
    manifest = json.loads((tmp_path / "logs" / "version_0" / "xai" / "manifest.json").read_text())
    assert manifest[0]["flags"][0]["problem"] == ALL_ZERO  # recorded beside the maps too


class _Planted(L.LightningModule):
    """A linear model whose class-1 score reads only the top-left quadrant: its maps sit inside that quadrant."""

    def __init__(self):
        super().__init__()
        self.score = nn.Conv2d(1, 1, 8, bias=False)
        with torch.no_grad():
            self.score.weight.zero_()
            self.score.weight[..., :4, :4] = 1.0

    def forward(self, x):
        top_left = self.score(x).flatten(1)
        return torch.cat([-top_left, top_left], dim=1)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).sum() * 0.0

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.slow
def test_examples_without_a_mask_are_left_out_of_mass_in_mask_and_counted(tmp_path):
    x = torch.rand(4, 1, 8, 8) + 0.1
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = masks[2, :4, :4] = True  # #1 and #3 show no object: empty masks
    monitor = AttributionMonitor(
        ["input_x_gradient"], probe=(x, torch.ones(4, dtype=torch.long), masks), target=1, gradcam=False, metrics=()
    )
    messages = _fit(tmp_path, _Planted(), monitor, TensorDataset(x, torch.ones(4, dtype=torch.long)))
    record = monitor.history[0]
    assert record["metrics"]["mass_in_mask"] == pytest.approx(1.0)  # all of it where the model looks (was 0.5)
    assert record["metrics"]["pointing_game"] == pytest.approx(1.0)
    assert record["metrics"]["mask_examples"] == 2
    assert record["flags"] == [] and not [m for m in messages if "mask" in m]
    events_scalar = monitor.value("input_x_gradient", "mask_examples", 0)
    assert events_scalar == 2


@pytest.mark.slow
def test_an_unchanged_rerun_against_its_own_golden_reference_is_similar_everywhere_even_where_maps_are_zero(tmp_path):
    """The golden check of an unchanged model must pass: at step 0 every map of this ViT is all zero (its head is
    zero), and identical all-zero maps are as similar as maps can be (they scored 0 before)."""
    golden = tmp_path / "golden.pt"
    for run, kwargs in (("first", {"save_reference": str(golden)}), ("again", {"reference": str(golden)})):
        torch.manual_seed(0)
        monitor = AttributionMonitor(
            {"integrated_gradients": {"n_steps": 4}}, num_probe_samples=4, metrics=(), similarity="cosine", **kwargs
        )
        _fit(tmp_path / run, _TinyViT(), monitor, _images(), max_epochs=2, limit_train_batches=1)
    assert [r["flags"][0]["problem"] for r in monitor.history if r["step"] == 0] == [ALL_ZERO, ALL_ZERO]
    similarities = {(r["step"], r["method"]): r["metrics"]["similarity_reference"] for r in monitor.history}
    assert similarities == {  # the golden file keeps maps in bfloat16: equal to rounding after step 0
        (step, method): pytest.approx(1.0, abs=1e-5)
        for step in (0, 1, 2)
        for method in ("integrated_gradients", "layer_gradcam")
    }
    assert similarities[(0, "integrated_gradients")] == similarities[(0, "layer_gradcam")] == 1.0
