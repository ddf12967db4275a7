"""Analyses of a trained run's outputs: neighbours in feature space, label issues."""
