"""The study: a baseline against one-change variants over paired seeds, and its engines."""
