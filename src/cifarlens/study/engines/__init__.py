"""Engines that produce a study's runs: local, processes (--jobs), Ray tasks and Slurm jobs."""
