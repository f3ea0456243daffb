"""Training pipelines, offline evaluation and the MLflow registry gate.

One folder per family: ``affinity/``, ``uplift/`` and ``policy/`` (evaluation of the decisions
that ship, with the simulator's truth), each holding its data, evaluation, metrics and
training; ``registry.py`` (MLflow registry and champion gate) beside them. Imports from
``features``, ``models`` and ``serving`` (policy evaluation decides through the engine that
ships).
"""
