"""Benchmarks against Captum, side by side in one process; run ``scripts/bench``."""
