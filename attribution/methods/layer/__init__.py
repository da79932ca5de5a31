"""Layer methods by family: attributions to the activations (output or input) of a hidden layer, or
through it (gradient, path, backprop, lrp, perturbation)."""
