"""Engines that produce a study's runs: local (one after another) and processes (--jobs)."""
