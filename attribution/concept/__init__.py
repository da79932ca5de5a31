"""Concept-based interpretability (Captum's ``captum.concept``, with Captum's names and call signatures).

- :class:`Concept`: a named set of examples; :class:`ConceptInterpreter`: the base of concept interpreters;
- :class:`TCAV`: Testing with Concept Activation Vectors (Kim et al., 2018), per layer and experimental set;
- :class:`CAV`: the concept activation vectors of one set in one layer, saved as Captum names the files;
- :class:`Classifier`: the pluggable classifier interface; :class:`DefaultClassifier`: a ridge linear
  classifier in torch (Captum's uses scikit-learn).

Beyond Captum, :mod:`attribution.concept.significance` has the statistical test of TCAV scores against
random concepts (a two-sample t-test, without scipy).
"""

from attribution.concept.cav import CAV
from attribution.concept.classifier import Classifier, DefaultClassifier
from attribution.concept.concept import Concept, ConceptInterpreter
from attribution.concept.tcav import TCAV

__all__ = [
    "CAV",
    "Concept",
    "ConceptInterpreter",
    "TCAV",
    "Classifier",
    "DefaultClassifier",
]
