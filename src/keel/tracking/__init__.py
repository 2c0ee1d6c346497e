"""Experiment tracking: runs, params, metrics, artifacts, datasets, reproducibility."""
