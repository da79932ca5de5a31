"""Neuron methods by family: attributions of one hidden unit (``neuron_selector``) to the input features
(gradient, path, backprop, perturbation)."""
