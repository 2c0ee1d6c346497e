"""Evaluation: metrics per task, slices, custom metrics, champion/challenger paired bootstrap."""
