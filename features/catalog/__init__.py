"""The offer catalog a program manager writes (YAML): offers, eligibility, budgets, caps and
moments, parsed and validated in ``model``; the example catalog is ``data/catalog.yaml``."""
