"""attribution: an attribution engine for PyTorch models, Captum-compatible.

Example::

    from attribution import IntegratedGradients, GradientShap, Occlusion, \\
        LayerGradCam, NoiseTunnel, LayerAttribution
    from attribution import visualization as viz

Methods are also available by name (``attribution.registry``).
"""

from attribution import metrics, registry
from attribution._internal.canonical import Target
from attribution._internal.checks import ArgumentError, ArgumentTypeError
from attribution.helpers.baselines import ProductBaselines
from attribution.helpers.embeddings import (
    InterpretableEmbeddingBase,
    TokenReferenceBase,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)
from attribution.helpers.stat import MSE, CommonStats, Count, Max, Mean, Min, StdDev, Sum, Var
from attribution.helpers.summarizer import ClassSummarizer, Summarizer, SummarizerSingleTensor
from attribution.llm import (
    InterpretableInput,
    LLMAttribution,
    LLMAttributionResult,
    LLMGradientAttribution,
    RemoteLLMAttribution,
    TextTemplateInput,
    TextTokenInput,
)
from attribution.methods.backprop import Deconvolution, DeepLift, DeepLiftShap, GuidedBackprop, GuidedGradCam
from attribution.methods.base import (
    Attribution,
    GradientAttribution,
    LayerAttribution,
    NeuronAttribution,
    PerturbationAttribution,
)
from attribution.methods.dataloader import DataLoaderAttribution
from attribution.methods.gradient import InputXGradient, Saliency
from attribution.methods.layer.backprop import LayerDeepLift, LayerDeepLiftShap
from attribution.methods.layer.gradient import LayerActivation, LayerGradCam, LayerGradientXActivation
from attribution.methods.layer.lrp import LayerLRP
from attribution.methods.layer.path import (
    InternalInfluence,
    LayerConductance,
    LayerGradientShap,
    LayerIntegratedGradients,
)
from attribution.methods.layer.perturbation import LayerFeatureAblation, LayerFeaturePermutation
from attribution.methods.lrp import LRP, Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule, PropagationRule
from attribution.methods.neuron.backprop import (
    NeuronDeconvolution,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronGuidedBackprop,
)
from attribution.methods.neuron.gradient import NeuronGradient
from attribution.methods.neuron.path import NeuronConductance, NeuronGradientShap, NeuronIntegratedGradients
from attribution.methods.neuron.perturbation import NeuronFeatureAblation
from attribution.methods.noise_tunnel import NoiseTunnel
from attribution.methods.path import GradientShap, IntegratedGradients
from attribution.methods.perturbation import FeatureAblation, FeaturePermutation, Occlusion
from attribution.methods.shapley import ShapleyValues, ShapleyValueSampling
from attribution.methods.surrogate import KernelShap, Lime, LimeBase

__all__ = [
    "TextTokenInput",
    "TextTemplateInput",
    "RemoteLLMAttribution",
    "LLMGradientAttribution",
    "LLMAttributionResult",
    "LLMAttribution",
    "InterpretableInput",
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
