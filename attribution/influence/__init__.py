"""Training-data influence: which training examples made the model do that (Captum's ``captum.influence``,
with Captum's class names and call signatures).

- :class:`TracInCP`, :class:`TracInCPFast`, :class:`TracInCPFastRandProj`: the gradient dot products of test
  and training examples summed over checkpoints (Pruthi et al., 2020);
- :class:`SimilarityInfluence`: training examples whose layer activations are closest;
- :class:`NaiveInfluenceFunction`, :class:`ArnoldiInfluenceFunction`: influence functions (Koh and Liang,
  2017), with the inverse Hessian exact or from its top eigenvectors.
"""

from attribution.influence.base import DataInfluence, KMostInfluentialResults
from attribution.influence.influence_function import (
    ArnoldiInfluenceFunction,
    InfluenceFunctionBase,
    IntermediateQuantitiesInfluenceFunction,
    NaiveInfluenceFunction,
)
from attribution.influence.similarity import SimilarityInfluence, cosine_similarity, euclidean_distance
from attribution.influence.tracincp import TracInCP, TracInCPBase
from attribution.influence.tracincp_fast import TracInCPFast, TracInCPFastRandProj

__all__ = [
    "ArnoldiInfluenceFunction",
    "DataInfluence",
    "InfluenceFunctionBase",
    "IntermediateQuantitiesInfluenceFunction",
    "NaiveInfluenceFunction",
    "SimilarityInfluence",
    "cosine_similarity",
    "euclidean_distance",
    "KMostInfluentialResults",
    "TracInCP",
    "TracInCPBase",
    "TracInCPFast",
    "TracInCPFastRandProj",
]
