"""The core of the layer methods, file for file as in :mod:`attribution.methods.layer` (DeepLift and LRP
to a layer share their input methods' core: :mod:`attribution.functional.backprop`,
:mod:`attribution.functional.lrp`), and :mod:`.maps`, which turns layer outputs and attributions into
image maps."""
