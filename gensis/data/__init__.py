"""Tile stores, tile sources and datasets."""
