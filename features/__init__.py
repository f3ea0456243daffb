"""Sources, canonical tables, validation, the offer catalog and the feature pipeline.

The bottom layer: imports nothing from ``models``, ``training`` or ``serving``.
"""
