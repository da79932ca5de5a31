"""Computing a point: how to feed and read the user's model, where GradCAM looks, running the
attribution methods on the probe (in chunks, shared out among processes) without changing training,
checking every map and metric, the heat maps that are kept, how far explanations drifted, and the
history of points saved in checkpoints.  Tensors in, tensors and numbers out: nothing here draws or
writes; it reads only :mod:`lightning_xai._config`.
"""
