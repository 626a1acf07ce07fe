"""Frozen-feature evaluation: splits, kNN, linear probe, metrics and reports."""
