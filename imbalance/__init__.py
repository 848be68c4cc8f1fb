"""Imbalance: the losses, samplers and detectors behind the book *Imbalance in Object Detection*."""

__version__ = "0.1.0"
