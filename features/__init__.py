"""Sources, canonical tables, validation, the offer catalog, the simulator and the feature
pipeline, one sub-package each:

* ``sources/``: the canonical table schemas, reading and writing, validation, adapters of the
  public data sets;
* ``catalog/``: the offer catalog (YAML) of a program manager;
* ``sim/``: the seeded synthetic loyalty program with known ground truth;
* ``pipeline/``: member and offer features as of a time (Ibis on DuckDB or Spark), and one
  member's features (``online``);
* ``settings.py``: settings shared by every command (``OFFERS_*`` environment variables).

The bottom layer: imports nothing from ``models``, ``training`` or ``serving``.
"""
