"""The study: a plan of runs, an engine that produces them, and the summary the report reads."""
