"""Layer-wise relevance propagation in one place: the methods, Captum's rule classes, and the rules and
composites as published (Zennit's names and definitions).

    >>> import torch
    >>> from torch import nn
    >>> from attribution.lrp import LRP, EpsilonPlusFlat
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    >>> images = torch.rand(2, 3, 8, 8)
    >>> relevance, delta = LRP(model).attribute(images, target=1, composite=EpsilonPlusFlat(),
    ...                                         return_convergence_delta=True)
    >>> relevance.shape
    torch.Size([2, 3, 8, 8])

Captum's rule classes keep Captum's definitions; the published ones split signed contributions and biases
as the papers do (the engine guide's "LRP as published" section says where they differ and why).
"""

from attribution.methods.layer.lrp import LayerLRP
from attribution.methods.lrp import (
    LRP,
    Alpha1_Beta0_Rule,
    EpsilonRule,
    GammaRule,
    IdentityRule,
    PropagationRule,
)
from attribution.methods.lrp_rules import (
    AlphaBeta,
    Composite,
    Epsilon,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    Flat,
    Gamma,
    Norm,
    Pass,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
)

__all__ = [
    "LRP",
    "Alpha1_Beta0_Rule",
    "AlphaBeta",
    "Composite",
    "Epsilon",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "EpsilonRule",
    "Flat",
    "Gamma",
    "GammaRule",
    "IdentityRule",
    "LayerLRP",
    "Norm",
    "Pass",
    "PropagationRule",
    "Rule",
    "WSquare",
    "ZBox",
    "ZPlus",
]
