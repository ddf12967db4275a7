"""Engines that run a study's runs, one module each, behind one run(jobs, on_done)."""
