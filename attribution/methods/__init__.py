"""The public attribution classes, thin, by family: each stores its configuration, validates a call at
the canonical boundary and calls its core in :mod:`attribution.functional` (the file of the same name).

Input methods are at the top (:mod:`.gradient`, :mod:`.path`, :mod:`.backprop`, :mod:`.lrp`,
:mod:`.perturbation`, :mod:`.shapley`, :mod:`.surrogate`, :mod:`.dataloader`, :mod:`.noise_tunnel`),
methods to a layer's activations in :mod:`.layer`, methods of one hidden unit in :mod:`.neuron`; the base
classes, whose class attributes are the traits the registry reads, in :mod:`.base`.  Import the classes
from :mod:`attribution`.
"""
