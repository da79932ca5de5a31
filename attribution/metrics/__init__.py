"""Metrics of explanations, by family.

* quality (``quality.py``): :func:`infidelity` and :func:`sensitivity_max` (Yeh et al., 2019) and their
  perturbation functions;
* similarity between two sets of maps (``similarity.py``): :func:`spearman_correlation`,
  :func:`top_k_intersection`, :func:`cosine_similarity`, :func:`ssim` and the :func:`similarity` dispatcher;
* faithfulness by perturbation (``faithfulness.py``): :func:`deletion_curve`, :func:`insertion_curve` and
  their :func:`area_under_curve`, :func:`faithfulness_correlation` (Bhatt et al., 2020);
* localization against ground-truth masks (``localization.py``): :func:`mass_in_mask`, :func:`pointing_game`;
* complexity of one map (``complexity.py``): :func:`sparseness` (Chalasani et al., 2020) and
  :func:`complexity` (Bhatt et al., 2020);
* ROAD (``road.py``, Rong et al., 2022): :func:`road`, one score per example and percentage ``(N, P)``, and its
  :func:`noisy_linear_imputation`;
* sanity checks (``sanity.py``): :func:`model_randomization_check` (Adebayo et al., 2018) and its one-number
  form :func:`randomization_similarity`.

Every metric returns one score per example, a tensor of shape ``(N,)``.
"""

from attribution.metrics.complexity import complexity, sparseness
from attribution.metrics.faithfulness import (
    PerturbationCurve,
    area_under_curve,
    deletion_curve,
    faithfulness_correlation,
    insertion_curve,
)
from attribution.metrics.localization import mass_in_mask, pointing_game
from attribution.metrics.quality import (
    default_infidelity_perturb_func,
    default_perturb_func,
    infidelity,
    infidelity_perturb_func_decorator,
    sensitivity_max,
)
from attribution.metrics.road import ROAD_ORDERS, ROAD_SCORES, noisy_linear_imputation, road
from attribution.metrics.sanity import model_randomization_check, randomization_similarity
from attribution.metrics.similarity import (
    SIMILARITY_MEASURES,
    cosine_similarity,
    similarity,
    spearman_correlation,
    ssim,
    top_k_intersection,
)

__all__ = [
    "area_under_curve",
    "complexity",
    "cosine_similarity",
    "default_infidelity_perturb_func",
    "default_perturb_func",
    "deletion_curve",
    "faithfulness_correlation",
    "infidelity",
    "infidelity_perturb_func_decorator",
    "insertion_curve",
    "mass_in_mask",
    "model_randomization_check",
    "noisy_linear_imputation",
    "PerturbationCurve",
    "pointing_game",
    "randomization_similarity",
    "road",
    "ROAD_ORDERS",
    "ROAD_SCORES",
    "sensitivity_max",
    "similarity",
    "SIMILARITY_MEASURES",
    "sparseness",
    "spearman_correlation",
    "ssim",
    "top_k_intersection",
]
