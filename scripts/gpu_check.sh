#!/usr/bin/env bash
# GPU check for the device tool: the CUDA tests and a few timings, on the device machine's own torch.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
python3 -m pytest tests/integration/test_cuda.py -q -p no:cacheprovider 2>&1 | tee $OUT/cuda_tests.log
python3 - <<'PY' 2>&1 | tee $OUT/gpu_timings.log
import time, torch, torchvision
from attribution import IntegratedGradients, Occlusion, FeatureAblation, DeepLift
torch.manual_seed(0)
model = torchvision.models.resnet18().eval().cuda()
x = torch.rand(1, 3, 224, 224, device="cuda")
def timed(name, fn):
    fn(); torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter(); fn(); torch.cuda.synchronize()
    print(f"{name:<40} {time.perf_counter() - start:7.3f} s  peak {torch.cuda.max_memory_allocated() / 2**20:7.0f} MiB")
timed("IntegratedGradients n_steps=200", lambda: IntegratedGradients(model).attribute(x, target=3, n_steps=200))
timed("Occlusion 15x15 stride 8", lambda: Occlusion(model).attribute(x, (3, 15, 15), strides=(3, 8, 8), target=3))
mask = torch.arange(196, device="cuda").view(14, 14).repeat_interleave(16, 0).repeat_interleave(16, 1)
timed("FeatureAblation 196 superpixels", lambda: FeatureAblation(model).attribute(x, feature_mask=mask, target=3))
timed("DeepLift", lambda: DeepLift(model).attribute(x, target=3))
PY
