"""Embedding-conditioned diffusion: conditioning, pipeline, interpolation, generation runs."""
