"""Tiny models and concepts whose TCAV answers are known."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attribution.concept import Concept

FEATURES = 8


def direction() -> Tensor:
    """The unit concept direction of the synthetic layer."""
    v = torch.arange(1.0, FEATURES + 1) * torch.tensor([1.0, -1.0] * (FEATURES // 2))
    return v / v.norm()


def shifted_concepts(n: int = 400, shift: float = 5.0, seed: int = 0) -> tuple[Concept, Concept]:
    """A concept whose examples are noise shifted along :func:`direction`, and a random concept (noise)."""
    g = torch.Generator().manual_seed(seed)
    concept = torch.randn(n, FEATURES, generator=g) + shift * direction()
    random = torch.randn(n, FEATURES, generator=g)
    return Concept(0, "shifted", [concept[: n // 2], concept[n // 2 :]]), Concept(1, "random", [random])


def linear_model(sign: float = 1.0) -> nn.Module:
    """``layer`` is the identity on the input (so its activations are the concept examples); output 0 is
    ``sign * direction . layer`` and output 1 its negative."""
    layer = nn.Linear(FEATURES, FEATURES)
    head = nn.Linear(FEATURES, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(FEATURES))
        layer.bias.zero_()
        head.weight.copy_(torch.stack([sign * direction(), -sign * direction()]))
    return _Named(layer, head)


class _Named(nn.Module):
    def __init__(self, layer: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layer(x))


class SmallConvNet(nn.Module):
    """A small CNN with an in-place ReLU and BatchNorm, for state and parity checks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn(self.conv1(x)))
        x = self.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


class QuadraticScore(nn.Module):
    """``layer`` is the identity; output 0 is ``direction . h + |h|^2 / 2``, so its gradient in the layer is
    ``direction + h``: it varies with the input, and TCAV scores of random CAVs spread around 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()
        self.register_buffer("v", direction())

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer(x)
        score = h @ self.v + 0.5 * h.pow(2).sum(dim=1)
        return torch.stack([score, -score], dim=1)
