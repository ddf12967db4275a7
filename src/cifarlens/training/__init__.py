"""Training: settings and presets, models, augmentations, the runtime and the loop."""
