"""Statistics behind the study's verdicts: power, equivalence, sequential seeds, clusters."""
