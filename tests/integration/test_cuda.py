"""The engine and the monitor on a CUDA device (skipped where there is none; CI has none).

Every registered method must give the CPU's answer on the GPU, keep its
tensors there, and leave the model as it was.
"""

import lightning as L
import pytest
import torch
import torchvision

from attribution import DeepLift, IntegratedGradients, Occlusion, registry
from lightning_xai import AttributionMonitor
from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet
from tests.attribution.test_state import CALL_KWARGS, _kwargs
from tests.models import SmallCNN, seeded

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("name", sorted(CALL_KWARGS))
def test_every_method_matches_the_cpu_on_the_gpu(name):
    x = torch.randn(2, 3, 8, 8)
    kwargs = _kwargs(name)
    gpu_model = seeded(SmallCNN).cuda()
    gpu = registry.build(name, gpu_model, layer="conv2").attribute(
        x.cuda(), **{k: _to(v, "cuda") for k, v in kwargs.items()}
    )
    assert gpu.device.type == "cuda" and gpu.shape[0] == 2
    assert not any(p.grad is not None for p in gpu_model.parameters())
    if not registry.record(name).draws_random_numbers:
        cpu = registry.build(name, seeded(SmallCNN), layer="conv2").attribute(x, **kwargs)
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)


def test_resnet_integrated_gradients_occlusion_and_deep_lift_on_the_gpu():
    torch.manual_seed(0)
    torch.backends.cudnn.allow_tf32 = False  # completeness to float32 precision
    model = torchvision.models.resnet18(num_classes=10).eval().cuda()
    x = torch.rand(4, 3, 112, 112, device="cuda")
    attr, delta = IntegratedGradients(model).attribute(x, target=3, n_steps=64, return_convergence_delta=True)
    assert attr.device.type == "cuda" and delta.abs().max() < 0.05 * attr.sum((1, 2, 3)).abs().max()
    _, delta = DeepLift(model).attribute(x, target=3, return_convergence_delta=True)
    assert delta.abs().max() < 1e-3
    kwargs = dict(sliding_window_shapes=(3, 15, 15), strides=(3, 8, 8), target=3)
    local = Occlusion(model).attribute(x, **kwargs)
    plain = Occlusion(lambda t: model(t)).attribute(x, **kwargs)
    torch.testing.assert_close(local, plain, atol=1e-4, rtol=1e-3)


def test_monitor_trains_on_the_gpu(tmp_path):
    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(
        ["integrated_gradients", "occlusion", "deep_lift"], num_probe_samples=4, on_error="raise"
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="gpu",
        devices=1,
        max_epochs=2,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ShapesNet(), datamodule=ShapesDataModule(n_train=512, n_val=64, size=32))
    assert {r["epoch"] for r in monitor.history} == {0, 1}
    assert all(abs(r["metrics"]["convergence_delta"]) < 1e-2 for r in monitor.history if r["method"] == "deep_lift")
