"""Figures: one style, and the plots of every analysis."""
