"""Backbones (timm), the DINO head, and the encoder export format."""
