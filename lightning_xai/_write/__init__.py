"""Sinks: where the monitor's output goes.  An image in the forms the sinks take (PNG bytes, pixels),
one sink per kind of logger (TensorBoard, W&B, MLflow, PNG files), scalars to every logger, maps and a
manifest beside the logs, and fast checksums for TensorBoard's event records.  Only global rank zero
writes.
"""
