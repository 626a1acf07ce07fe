"""gensis: generative self-augmentation for histopathology tile encoders."""

__version__ = "0.1.0"
