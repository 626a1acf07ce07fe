"""Losses of the method: DINO, disentanglement."""
