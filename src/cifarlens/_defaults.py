"""Defaults shared by several commands, kept import-light so the CLI can read them at startup."""

from __future__ import annotations

# The one definition of a "confident" error: top probability >= 0.9 AFTER temperature scaling
# (T fitted on validation). Used by `cifarlens failures --confident`, stages/failures.py and the study.
CONFIDENT = 0.9

# Older names of built-in models. `baseline` named the seed's VGG before the study's baseline arm
# made the word ambiguous ("training baseline" in the variant arm's log); runs recorded under it
# still load. Here (not in training/models.py) so the report can read old summaries without torch.
MODEL_ALIASES: dict[str, str] = {"baseline": "vgg"}


def canonical_model_name(name):
    """The built-in's current name for an alias; any other value unchanged."""
    return MODEL_ALIASES.get(name, name) if isinstance(name, str) else name
