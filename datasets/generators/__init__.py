"""Offline generators that write the published CSV layouts (DATASETS.md)."""
