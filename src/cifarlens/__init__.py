"""cifarlens: train, evaluate, explain and compare CIFAR CNNs in one reproducible study."""

__version__ = "0.1.0"
