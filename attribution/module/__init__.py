"""Stochastic gates: learned feature selection by L0 regularisation (Captum's ``captum.module``, with
Captum's class names and signatures).

Put a gate module in front of a model (or a layer): in training it multiplies each input feature by a
random gate in [0, 1] and returns, beside the gated input, a regulariser (the expected number of open
gates) to add to the loss. After training, ``get_gate_values()`` and ``get_gate_active_probs()`` say which
features the model needs.

- :class:`BinaryConcreteStochasticGates`: gates from a stretched binary concrete distribution (Louizos et
  al., 2018);
- :class:`GaussianStochasticGates`: gates from a Gaussian of fixed standard deviation (Yamada et al., 2020);
- :class:`StochasticGatesBase`: what they share, to subclass for another distribution.
"""

from attribution.module.binary_concrete_stochastic_gates import BinaryConcreteStochasticGates
from attribution.module.gaussian_stochastic_gates import GaussianStochasticGates
from attribution.module.stochastic_gates_base import StochasticGatesBase

__all__ = [
    "BinaryConcreteStochasticGates",
    "GaussianStochasticGates",
    "StochasticGatesBase",
]
