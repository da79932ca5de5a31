import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from tests.models import MLP, Linear, SmallCNN, TwoInput, seeded


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
    yield


@pytest.fixture
def linear():
    return seeded(Linear)


@pytest.fixture
def mlp():
    return seeded(MLP)


@pytest.fixture
def cnn():
    return seeded(SmallCNN)


@pytest.fixture
def two_input():
    return seeded(TwoInput)
