"""Analyses of a trained run: predictions, metrics, calibration, statistics, failures, neighbours
in feature space and training-set label issues."""
