"""The decision bundle: models' outputs, catalog and member snapshot, built once per (re)load.

    serving_bundle.py  ServingBundle: what a decision needs, immutable; decide / decide_one
    build.py           build_bundle(models, settings): catalog + snapshot + precomputed outputs
    member_rows.py     cold-start rows, unknown members blanked, the live basket added
    holder.py          BundleHolder: the bundle being served, swapped whole at reload

Where its files are comes from the ``serving`` section of :class:`serving.settings.Settings`;
the models from :mod:`serving.api.modelset` (loaded by :mod:`serving.loader`); the store's
budget counters follow its catalog through :mod:`serving.api.budgets`.
"""

from serving.api.bundle.build import build_bundle
from serving.api.bundle.holder import BundleHolder
from serving.api.bundle.serving_bundle import BundleError, ServingBundle

__all__ = ["BundleError", "BundleHolder", "ServingBundle", "build_bundle"]
