"""The models and inputs the benchmarks share."""

from __future__ import annotations

import functools

import torch
import torchvision
from torch import nn


@functools.cache
def resnet() -> tuple[nn.Module, torch.Tensor, int]:
    """ResNet-18 with random weights (no download), one 224x224 image and its top class."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        target = int(model(x).argmax())
    return model, x, target
