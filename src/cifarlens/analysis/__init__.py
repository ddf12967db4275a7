"""Analyses of a trained run: predictions, metrics, calibration, statistics, failures, neighbours
in feature space, training-set label issues and robustness to common corruptions."""
