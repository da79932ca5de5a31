"""Private machinery of the engine, shared by the functional core, the methods and the metrics.

- :mod:`.canonical`: the one boundary that turns inputs, baselines, targets and forward arguments into
  one canonical form (an ``Objective`` and tuples of tensors);
- :mod:`.checks`: argument errors and checks whose messages name the argument;
- :mod:`.features`: feature masks (groups of input features) and superpixels;
- :mod:`.autograd`: gradients and layer activations, without touching the caller's state;
- :mod:`.rules`: backpropagation rules (DeepLift, guided backprop, deconvolution) as a torch function mode;
- :mod:`.chunking`: splitting work into chunks that fit a memory budget, and threads;
- :mod:`.local_forward`: re-evaluating only the part of a model that a local perturbation changes;
- :mod:`.progress`: progress bars.

Nothing here imports any other part of :mod:`attribution`.
"""
