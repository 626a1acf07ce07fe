"""Whole-slide images: open, physical resolution, tissue mask, tile grid, tiling runs."""
