"""Datasets: the registry, safe reading, download, generated and user data, the split and batches."""
