"""Member segments for segment popularity: tier x lifecycle stage as of a time.

Both come from the feature pipeline (:func:`features.pipeline.member_features`), so the
segment a model was trained with is the one serving computes. Missing values become ``none``
(sources without tiers give ``none|active`` etc.).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from features.pipeline import FeatureTables, member_features, tables_from_frames
from features.sources import schema as S

__all__ = ["SEGMENT_SEP", "feature_tables", "member_segments", "segment_label"]

SEGMENT_SEP = "|"
LIFECYCLE = "lifecycle_stage"


def feature_tables(frames: Mapping[str, pd.DataFrame] | FeatureTables) -> FeatureTables:
    """Canonical frames uploaded once for the pipeline (pass the result to reuse it)."""
    return frames if isinstance(frames, FeatureTables) else tables_from_frames(frames)


def segment_label(tier: Any, stage: Any) -> str:
    """``"<tier>|<lifecycle stage>"`` with ``none`` for a missing part."""
    t = "none" if tier is None or pd.isna(tier) else str(tier)
    s = "none" if stage is None or pd.isna(stage) else str(stage)
    return f"{t}{SEGMENT_SEP}{s}"


def member_segments(
    source: Mapping[str, pd.DataFrame] | FeatureTables, as_of: pd.Timestamp | str
) -> pd.Series:
    """Segment label per member id (members who joined before ``as_of``)."""
    feats = member_features(feature_tables(source), pd.Timestamp(as_of))
    df = feats.select(S.MEMBER_ID, S.TIER, LIFECYCLE).to_pandas()
    tier = df[S.TIER].astype("string").fillna("none")
    stage = df[LIFECYCLE].astype("string").fillna("none")
    labels = (tier + SEGMENT_SEP + stage).astype(str)
    return pd.Series(
        labels.to_numpy(), index=df[S.MEMBER_ID].astype(str).to_numpy(), name="segment"
    )
