"""Tiny models shared by the tests: small enough for CPU, varied enough to catch structure bugs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Linear(nn.Module):
    """f(x) = x W^T + c: every gradient method has a closed form here."""

    def __init__(self, n_in: int = 6, n_out: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class MLP(nn.Module):
    def __init__(self, n_in: int = 6, hidden: int = 8, n_out: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TwoLinear(nn.Module):
    """x -> fc1 -> fc2: linear after fc1, so layer and neuron methods on fc1 have closed forms."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


class SmallCNN(nn.Module):
    """Conv net with an in-place ReLU module used twice and a pooling head."""

    def __init__(self, channels: int = 3, n_out: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, n_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.conv1(x))
        h = self.relu(self.conv2(h))
        return self.fc(self.pool(h).flatten(1))


class TwoInput(nn.Module):
    """Two inputs of different shapes and an extra forward argument (a scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc_img = nn.Linear(2 * 6 * 6, 3)
        self.fc_tab = nn.Linear(5, 3)

    def forward(self, image: Tensor, table: Tensor, scale: Tensor | float = 1.0) -> Tensor:
        h = F.relu(self.conv(image)).flatten(1)
        return torch.sigmoid(self.fc_img(h)) * scale + torch.tanh(self.fc_tab(table))


class Text(nn.Module):
    """Token ids -> embedding -> tanh -> mean over tokens -> linear: a text classifier in miniature."""

    def __init__(self, vocab: int = 12, dim: int = 4, n_out: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, n_out)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.embedding(tokens)).mean(1))


def seeded(model_cls: type[nn.Module], seed: int = 0, **kwargs) -> nn.Module:
    """A model initialised from a fixed seed, in eval mode."""
    torch.manual_seed(seed)
    return model_cls(**kwargs).eval()
