"""Defaults shared by several commands, kept import-light so the CLI can read them at startup."""

from __future__ import annotations

# The one definition of a "confident" error: top probability >= 0.9 AFTER temperature scaling
# (T fitted on validation). Used by `cifarlens failures --confident`, failures.py and the study.
CONFIDENT = 0.9
