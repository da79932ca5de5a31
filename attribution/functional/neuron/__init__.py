"""The core of the neuron methods: :mod:`.selection` makes the objective "value of the selected unit",
to which the input methods apply; :mod:`.path` (conductance) and :mod:`.perturbation` (feature ablation)
are the cores of their own."""
