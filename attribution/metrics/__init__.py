"""Metrics of explanations, by family.

* quality (``quality.py``): :func:`infidelity` and :func:`sensitivity_max` (Yeh et al., 2019) and their
  perturbation functions;
* similarity between two sets of maps (``similarity.py``): :func:`spearman_correlation`,
  :func:`top_k_intersection`, :func:`cosine_similarity`, :func:`ssim` and the :func:`similarity` dispatcher;
* localization against ground-truth masks (``localization.py``): :func:`mass_in_mask`, :func:`pointing_game`;
* sanity checks (``sanity.py``): :func:`model_randomization_check` (Adebayo et al., 2018).

Every metric returns one score per example, a tensor of shape ``(N,)``.
"""

from attribution.metrics.localization import mass_in_mask, pointing_game
from attribution.metrics.quality import (
    default_infidelity_perturb_func,
    default_perturb_func,
    infidelity,
    infidelity_perturb_func_decorator,
    sensitivity_max,
)
from attribution.metrics.sanity import model_randomization_check
from attribution.metrics.similarity import (
    SIMILARITY_MEASURES,
    cosine_similarity,
    similarity,
    spearman_correlation,
    ssim,
    top_k_intersection,
)

__all__ = [
    "SIMILARITY_MEASURES",
    "cosine_similarity",
    "default_infidelity_perturb_func",
    "default_perturb_func",
    "infidelity",
    "infidelity_perturb_func_decorator",
    "mass_in_mask",
    "model_randomization_check",
    "pointing_game",
    "sensitivity_max",
    "similarity",
    "spearman_correlation",
    "ssim",
    "top_k_intersection",
]
