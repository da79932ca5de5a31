"""attribution: an attribution engine for PyTorch models, Captum-compatible.

    from attribution import IntegratedGradients, GradientShap, Occlusion, \\
        LayerGradCam, NoiseTunnel, LayerAttribution
    from attribution import visualization as viz

Methods are also available by name (``attribution.registry``).
"""

from attribution import metrics, registry
from attribution._base import Attribution, LayerAttribution
from attribution._canonical import Target
from attribution._checks import ArgumentError, ArgumentTypeError
from attribution.backprop import Deconvolution, DeepLift, DeepLiftShap, GuidedBackprop, GuidedGradCam
from attribution.gradient import InputXGradient, Saliency
from attribution.layer import (
    InternalInfluence,
    LayerActivation,
    LayerConductance,
    LayerGradCam,
    LayerGradientXActivation,
    LayerIntegratedGradients,
)
from attribution.neuron import (
    NeuronConductance,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronGradient,
    NeuronGradientShap,
    NeuronIntegratedGradients,
)
from attribution.noise_tunnel import NoiseTunnel
from attribution.path import GradientShap, IntegratedGradients
from attribution.perturbation import FeatureAblation, FeaturePermutation, Occlusion
from attribution.shapley import ShapleyValues, ShapleyValueSampling
from attribution.surrogate import KernelShap, Lime

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "Attribution",
    "Deconvolution",
    "DeepLift",
    "DeepLiftShap",
    "FeatureAblation",
    "FeaturePermutation",
    "GuidedBackprop",
    "GuidedGradCam",
    "GradientShap",
    "InputXGradient",
    "IntegratedGradients",
    "InternalInfluence",
    "KernelShap",
    "LayerActivation",
    "LayerAttribution",
    "LayerConductance",
    "LayerGradCam",
    "LayerGradientXActivation",
    "LayerIntegratedGradients",
    "Lime",
    "NeuronConductance",
    "NeuronDeepLift",
    "NeuronDeepLiftShap",
    "NeuronGradient",
    "NeuronGradientShap",
    "NeuronIntegratedGradients",
    "NoiseTunnel",
    "Occlusion",
    "Saliency",
    "ShapleyValueSampling",
    "ShapleyValues",
    "Target",
    "metrics",
    "registry",
]
__version__ = "0.1.0"
