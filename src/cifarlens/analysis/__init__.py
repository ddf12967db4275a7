"""Analyses of a trained run: predictions, metrics, calibration, statistics, failures and
robustness to common corruptions."""
