"""Members as the engine sees them: validated arrays from a member-feature frame.

The frame is the feature pipeline's output (``features.pipeline.member_features``: the
snapshot serving loads), or ``features.pipeline.online.OnlineFeatures`` for one member, whose
``basket_*`` columns give the live basket). Only ``member_id`` and ``lifecycle_stage`` are
required; every other column is optional and a missing column or a null value turns the rules
and detectors that need it off for that member (e.g. no birthday moment without
``days_to_birthday``), never on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.sources.schema import CONSENT_COLUMNS, LIFECYCLE_STAGES, MEMBER_ID, TIERS
from serving.engine.errors import EngineInputError, MissingColumnError

__all__ = ["CONSENT_CHANNELS", "REQUIRED_COLUMNS", "MemberTable"]

CONSENT_CHANNELS: tuple[str, ...] = tuple(CONSENT_COLUMNS)  # columns of MemberTable.consent

REQUIRED_COLUMNS: tuple[str, ...] = (MEMBER_ID, "lifecycle_stage")
_FLOAT_COLUMNS: tuple[str, ...] = (
    "points_balance",
    "points_to_next_tier",
    "points_tier_window",
    "days_to_birthday",
    "days_to_anniversary",
    "tenure_days",
    "days_since_last_purchase",
    "n_purchases_total",
    "purchases_to_next_milestone",
    "next_milestone",
    "purchase_streak_weeks",
    "avg_basket",
    "basket_total",
)


@dataclass(frozen=True)
class MemberTable:
    """One row per member: ids, tier/stage codes, segment and the numeric features (nan = null)."""

    ids: np.ndarray  # str
    tier: np.ndarray  # int index into TIERS, -1 when unknown
    stage: np.ndarray  # int index into LIFECYCLE_STAGES
    segment: np.ndarray  # object (str or None)
    next_tier: np.ndarray  # object (str or None)
    num: dict[str, np.ndarray]  # float arrays, nan = null
    shares: dict[str, np.ndarray]  # category -> share of spend (nan = null)
    basket_reaches_next_tier: np.ndarray  # bool
    basket_is_milestone: np.ndarray  # bool
    consent: np.ndarray | None = None  # (n, len(CONSENT_CHANNELS)) int8: 1 yes, 0 no, -1 unknown

    @property
    def n(self) -> int:
        return len(self.ids)

    def get(self, name: str) -> np.ndarray:
        """A numeric feature (all nan when the frame did not have it)."""
        return self.num[name]

    def take(self, rows: np.ndarray) -> MemberTable:
        """The members at ``rows`` (positions)."""
        return MemberTable(
            ids=self.ids[rows],
            tier=self.tier[rows],
            stage=self.stage[rows],
            segment=self.segment[rows],
            next_tier=self.next_tier[rows],
            num={k: v[rows] for k, v in self.num.items()},
            shares={k: v[rows] for k, v in self.shares.items()},
            basket_reaches_next_tier=self.basket_reaches_next_tier[rows],
            basket_is_milestone=self.basket_is_milestone[rows],
            consent=None if self.consent is None else self.consent[rows],
        )

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        categories: list[str] | tuple[str, ...] = (),
        segment_column: str = "segment",
    ) -> MemberTable:
        """Validate a member-feature frame and convert it (one row per member id).

        ``categories``: catalog categories whose ``share_<category>`` column is read (for the
        "often buys coffee" explanation); absent columns are skipped.
        """
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise MissingColumnError(
                f"member features: missing column(s) {missing} (have {list(frame.columns)[:12]})"
            )
        ids = frame[MEMBER_ID].astype(str).to_numpy(dtype=object)
        if frame[MEMBER_ID].isna().any():
            raise EngineInputError("member features: member_id has null values")
        dup = pd.Index(ids).duplicated()
        if dup.any():
            raise EngineInputError(f"member features: member_id repeated: {list(ids[dup][:5])}")
        n = len(frame)
        stage_col = frame["lifecycle_stage"]
        stage = _codes(stage_col, LIFECYCLE_STAGES)
        bad = stage < 0
        if bad.any():
            raise EngineInputError(
                f"member features: lifecycle_stage {stage_col[bad].iloc[0]!r} (member "
                f"{ids[bad][0]}) is not one of {', '.join(LIFECYCLE_STAGES)}"
            )
        tier = _codes(frame["tier"], TIERS) if "tier" in frame else np.full(n, -1, np.int64)
        num = {
            c: (
                pd.to_numeric(frame[c], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
                if c in frame
                else np.full(n, np.nan)
            )
            for c in _FLOAT_COLUMNS
        }
        shares = {}
        for cat in categories:
            col = f"share_{cat}"
            if col in frame:
                shares[cat] = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        return cls(
            ids=ids,
            tier=tier,
            stage=stage,
            segment=_objects(frame, segment_column, n),
            next_tier=_objects(frame, "next_tier", n),
            num=num,
            shares=shares,
            basket_reaches_next_tier=_flag(frame, "basket_reaches_next_tier", n),
            basket_is_milestone=_flag(frame, "basket_is_milestone", n),
            consent=np.column_stack(
                [_consent(frame, CONSENT_COLUMNS[ch], n) for ch in CONSENT_CHANNELS]
            ),
        )


def _codes(col: pd.Series, allowed: tuple[str, ...]) -> np.ndarray:
    """Index of each value in ``allowed``; -1 for null or unknown values."""
    return pd.Index(list(allowed), dtype=object).get_indexer(col.astype(object)).astype(np.int64)


def _objects(frame: pd.DataFrame, col: str, n: int) -> np.ndarray:
    if col not in frame:
        return np.full(n, None, dtype=object)
    s = frame[col].astype("object")
    return s.where(s.notna(), None).to_numpy(dtype=object)


def _flag(frame: pd.DataFrame, col: str, n: int) -> np.ndarray:
    if col not in frame:
        return np.zeros(n, dtype=bool)
    return frame[col].fillna(False).to_numpy(dtype=bool)


def _consent(frame: pd.DataFrame, col: str, n: int) -> np.ndarray:
    """1 opted in, 0 opted out, -1 unknown (null or no column)."""
    if col not in frame:
        return np.full(n, -1, dtype=np.int8)
    v = frame[col].astype("object")
    out = np.full(n, -1, dtype=np.int8)
    known = v.notna().to_numpy()
    out[known] = v[known].astype(bool).to_numpy().astype(np.int8)
    return out
