"""Grad-CAM: the method, its quality measures, its figures and the explain stage."""
