"""attribution: an attribution engine for PyTorch models, Captum-compatible.

    from attribution import IntegratedGradients, GradientShap, Occlusion, \\
        LayerGradCam, NoiseTunnel, LayerAttribution
    from attribution import visualization as viz

Methods are also available by name (``attribution.registry``).
"""

from attribution import metrics, registry
from attribution._base import (
    Attribution,
    GradientAttribution,
    LayerAttribution,
    NeuronAttribution,
    PerturbationAttribution,
)
from attribution._canonical import Target
from attribution._checks import ArgumentError, ArgumentTypeError
from attribution.backprop import Deconvolution, DeepLift, DeepLiftShap, GuidedBackprop, GuidedGradCam
from attribution.baselines import ProductBaselines
from attribution.dataloader import DataLoaderAttribution
from attribution.embeddings import (
    InterpretableEmbeddingBase,
    TokenReferenceBase,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)
from attribution.gradient import InputXGradient, Saliency
from attribution.layer import (
    InternalInfluence,
    LayerActivation,
    LayerConductance,
    LayerGradCam,
    LayerGradientXActivation,
    LayerIntegratedGradients,
)
from attribution.layer_backprop import LayerDeepLift, LayerDeepLiftShap
from attribution.layer_path import LayerGradientShap
from attribution.layer_perturbation import LayerFeatureAblation, LayerFeaturePermutation
from attribution.lrp import (
    LRP,
    Alpha1_Beta0_Rule,
    EpsilonRule,
    GammaRule,
    IdentityRule,
    LayerLRP,
    PropagationRule,
)
from attribution.neuron import (
    NeuronConductance,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronGradient,
    NeuronGradientShap,
    NeuronIntegratedGradients,
)
from attribution.neuron_backprop import NeuronDeconvolution, NeuronGuidedBackprop
from attribution.neuron_perturbation import NeuronFeatureAblation
from attribution.noise_tunnel import NoiseTunnel
from attribution.path import GradientShap, IntegratedGradients
from attribution.perturbation import FeatureAblation, FeaturePermutation, Occlusion
from attribution.shapley import ShapleyValues, ShapleyValueSampling
from attribution.stat import MSE, CommonStats, Count, Max, Mean, Min, StdDev, Sum, Var
from attribution.summarizer import ClassSummarizer, Summarizer, SummarizerSingleTensor
from attribution.surrogate import KernelShap, Lime, LimeBase

__all__ = [
    "Alpha1_Beta0_Rule",
    "ArgumentError",
    "ArgumentTypeError",
    "Attribution",
    "ClassSummarizer",
    "CommonStats",
    "Count",
    "DataLoaderAttribution",
    "Deconvolution",
    "DeepLift",
    "DeepLiftShap",
    "EpsilonRule",
    "FeatureAblation",
    "FeaturePermutation",
    "GammaRule",
    "GradientAttribution",
    "GuidedBackprop",
    "GuidedGradCam",
    "GradientShap",
    "IdentityRule",
    "InputXGradient",
    "IntegratedGradients",
    "InternalInfluence",
    "InterpretableEmbeddingBase",
    "KernelShap",
    "LRP",
    "LayerActivation",
    "LayerAttribution",
    "LayerConductance",
    "LayerDeepLift",
    "LayerDeepLiftShap",
    "LayerFeatureAblation",
    "LayerFeaturePermutation",
    "LayerGradCam",
    "LayerGradientShap",
    "LayerGradientXActivation",
    "LayerIntegratedGradients",
    "LayerLRP",
    "Lime",
    "LimeBase",
    "MSE",
    "Max",
    "Mean",
    "Min",
    "NeuronAttribution",
    "NeuronConductance",
    "NeuronDeconvolution",
    "NeuronDeepLift",
    "NeuronDeepLiftShap",
    "NeuronFeatureAblation",
    "NeuronGradient",
    "NeuronGradientShap",
    "NeuronGuidedBackprop",
    "NeuronIntegratedGradients",
    "NoiseTunnel",
    "Occlusion",
    "PerturbationAttribution",
    "ProductBaselines",
    "PropagationRule",
    "Saliency",
    "ShapleyValueSampling",
    "ShapleyValues",
    "StdDev",
    "Sum",
    "Summarizer",
    "SummarizerSingleTensor",
    "Target",
    "TokenReferenceBase",
    "Var",
    "configure_interpretable_embedding_layer",
    "metrics",
    "registry",
    "remove_interpretable_embedding_layer",
]
__version__ = "0.1.0"
