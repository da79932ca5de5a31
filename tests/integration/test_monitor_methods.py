"""Every registered method in the monitor: it logs maps, or it is refused when the monitor is built.

The monitor asks each method's registry record what it takes (a class target, a neuron selector or
nothing) and which options keep it cheap; these tests run every name through a real Trainer.
"""

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from attribution import NeuronGradient, registry
from lightning_xai import AttributionMonitor
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet

pytestmark = pytest.mark.slow

LAYER = "features.8"  # ShapesNet's last convolution: (N, 32, 4, 4) for 16x16 inputs
NEURON_LAYER, NEURON = "classifier.1", 3
"""Neurons: channel 3 after global max pooling (every channel reaches the logits; most units of a conv
map do not, through the max, so their conductance is zero)."""


def _fit(tmp_path, monitor, model=None):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model or ShapesNet(), datamodule=ShapesDataModule(n_train=32, n_val=16, size=16, batch_size=16))
    return tmp_path / "xai"


def _assert_logged_maps(artifacts, name, probe_size=4, nonzero=True):
    maps = torch.load(artifacts / "maps_step_0000002.pt", weights_only=True)  # after the epoch's 2 steps
    assert set(maps) == {name}
    assert maps[name].shape[0] == probe_size and torch.isfinite(maps[name].float()).all()
    if nonzero:
        assert maps[name].float().abs().sum() > 0  # an all-zero map would mean the method did not run


@pytest.mark.parametrize("name", registry.available())
def test_every_registered_method_logs_maps_or_is_refused_at_construction(tmp_path, name):
    method = registry.record(name)
    build = lambda options, layer=LAYER: AttributionMonitor(  # noqa: E731
        {name: options}, layer=layer, gradcam=False, num_probe_samples=4, on_error="raise", target="label"
    )
    if method.takes_neuron_selector:
        with pytest.raises(MisconfigurationException, match=f"methods\\['{name}'\\]: .*needs a 'neuron_selector'"):
            build({})
        monitor = build({"neuron_selector": [NEURON]}, NEURON_LAYER)  # a YAML config gives a list
    else:
        monitor = build({})
    # Lime's default Lasso(alpha=0.01) sets every coefficient to zero while the barely trained model's
    # outputs hardly change (Captum's default too), so only its maps may be all zero.
    _assert_logged_maps(_fit(tmp_path, monitor), name, nonzero=name != "lime")
    record = monitor.history[-1]
    every_map_failed = [f for f in record["flags"] if f["subject"] == "maps"] and "mask_examples" in record["metrics"]
    if every_map_failed and record["metrics"]["mask_examples"] == 0:  # Lime's all-zero maps: flagged, not scored
        assert name == "lime" and {"infidelity", "mass_in_mask"} <= {f["subject"] for f in record["flags"]}
        return
    if method.explains_output_at_inputs:
        assert "infidelity" in record["metrics"]
    assert ("convergence_delta" in record["metrics"]) == method.returns_delta


def test_a_neuron_method_explains_the_selected_unit(tmp_path):
    """The monitor's map is the engine's attribution of that unit (same seed, same model state)."""
    monitor = AttributionMonitor(
        {"neuron_gradient": {"neuron_selector": NEURON}}, layer=NEURON_LAYER, gradcam=False, num_probe_samples=4
    )
    L.seed_everything(0, verbose=False)
    model = ShapesNet()
    artifacts = _fit(tmp_path, monitor, model)
    logged = torch.load(artifacts / "maps_step_0000002.pt", weights_only=True)["neuron_gradient"].float()
    # One epoch: the weights after fit are those the monitor explained at the end of the epoch.
    expected = NeuronGradient(model.eval(), NEURON_LAYER).attribute(monitor.probe.inputs, neuron_selector=NEURON)
    expected = expected.sum(1, keepdim=True)  # the maps files keep the channels' sum
    assert expected.abs().sum() > 0
    torch.testing.assert_close(logged, expected, rtol=1e-2, atol=1e-3 * float(expected.abs().max()))


def test_method_options_are_checked_at_construction():
    with pytest.raises(MisconfigurationException, match="'target' is chosen by the monitor's own target argument"):
        AttributionMonitor({"integrated_gradients": {"target": 1}})
    with pytest.raises(MisconfigurationException, match=r"unknown option\(s\) \['n_step'\]; .*'n_steps'"):
        AttributionMonitor({"integrated_gradients": {"n_step": 8}})
    with pytest.raises(MisconfigurationException, match=r"\['interpretable_model'\]"):  # a constructor argument
        AttributionMonitor({"lime": {"interpretable_model": None}})
