"""Analyses of a trained run: predictions, metrics, calibration, statistics and failures."""
