"""Analyses of a trained run beyond its clean accuracy (common corruptions: robustness)."""
