"""What the user configures, and the names the run logs under: the callbacks' arguments checked at
construction (with the closed choices as ``Literal`` types the LightningCLI shows), the schedule of
points, the probe batch and how it is chosen, the ``on_error`` policy, and the tags of every scalar and
image.  Nothing here runs the model; every other layer may read it.
"""
