"""Adapters from public data sets to the canonical tables."""
