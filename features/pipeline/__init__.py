"""The feature pipeline: point-in-time member features and offer features, written once in Ibis.

DuckDB is the embedded default backend; the same expressions run on PySpark
(``load_tables(data_dir, ibis.pyspark.connect(spark))``). Only events strictly before each
``as_of`` are visible. Every feature is documented in docs/features.md.

Public API::

    tables = load_tables("data/")                       # or tables_from_frames(program)
    member_features(tables, "2024-06-01", config)       # ibis.Table, one row per member
    features_at(tables, pairs_df, config, time_col="decision_time")
    offer_features(tables)
"""

from features.pipeline.config import FeatureConfig
from features.pipeline.history import AS_OF, KEYS
from features.pipeline.pit import (
    as_tables,
    features_at,
    member_features,
    offer_features,
    resolve_categories,
    to_naive_utc,
    to_timestamp,
)
from features.pipeline.tables import (
    FeatureInputError,
    FeatureTables,
    load_tables,
    tables_from_frames,
    unbound_tables,
)

__all__ = [
    "AS_OF",
    "KEYS",
    "FeatureConfig",
    "FeatureInputError",
    "FeatureTables",
    "as_tables",
    "features_at",
    "load_tables",
    "member_features",
    "offer_features",
    "resolve_categories",
    "tables_from_frames",
    "to_naive_utc",
    "to_timestamp",
    "unbound_tables",
]
