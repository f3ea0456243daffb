"""Training pipelines, offline evaluation and the MLflow registry gate.

Imports from ``features`` and ``models``; never from ``serving``.
"""
