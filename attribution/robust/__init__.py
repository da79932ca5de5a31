"""Robustness: adversarial attacks and how much perturbation a model withstands (Captum's
``captum.robust``, with Captum's class names and call signatures).

- :class:`FGSM`: the fast gradient sign method, one step along the sign of the loss gradient
  (Goodfellow et al., 2015);
- :class:`PGD`: projected gradient descent, iterated sign steps kept in an L-inf or L2 ball around the
  inputs (Madry et al., 2018);
- :class:`Perturbation`: the base class of attacks;
- :class:`AttackComparator`: a model's metric on clean inputs and under a set of attacks, per batch and as
  a running summary;
- :class:`MinParamPerturbation`: the smallest attack parameter that makes the model's prediction wrong.
"""

from attribution.robust.attack_comparator import AttackComparator
from attribution.robust.fgsm import FGSM
from attribution.robust.min_param_perturbation import MinParamPerturbation
from attribution.robust.perturbation import Perturbation
from attribution.robust.pgd import PGD

__all__ = ["FGSM", "AttackComparator", "MinParamPerturbation", "Perturbation", "PGD"]
