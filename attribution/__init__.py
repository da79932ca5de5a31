"""attribution: an attribution engine for PyTorch models, Captum-compatible.

    from attribution import IntegratedGradients, GradientShap, Occlusion, \\
        LayerGradCam, NoiseTunnel, LayerAttribution
    from attribution import visualization as viz

Methods are also available by name (``attribution.registry``).
"""

from attribution import metrics, registry
from attribution._base import Attribution, LayerAttribution
from attribution._canonical import Target
from attribution.backprop import Deconvolution, DeepLift, DeepLiftShap, GuidedBackprop, GuidedGradCam
from attribution.gradient import InputXGradient, Saliency
from attribution.layer import LayerGradCam
from attribution.noise_tunnel import NoiseTunnel
from attribution.path import GradientShap, IntegratedGradients
from attribution.perturbation import Occlusion

__all__ = [
    "Attribution",
    "Deconvolution",
    "DeepLift",
    "DeepLiftShap",
    "GuidedBackprop",
    "GuidedGradCam",
    "GradientShap",
    "InputXGradient",
    "IntegratedGradients",
    "LayerAttribution",
    "LayerGradCam",
    "NoiseTunnel",
    "Occlusion",
    "Saliency",
    "Target",
    "metrics",
    "registry",
]
__version__ = "0.1.0"
