"""Settings of the feature pipeline: windows, tier and lifecycle thresholds, category list.

Every threshold a feature depends on lives here, so training and serving compute the same
features from the same ``FeatureConfig`` (store it next to a trained model).
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.sources.schema import OFFER_KINDS, TIERS

__all__ = ["FeatureConfig", "category_slug"]


def category_slug(category: str) -> str:
    """Column-name-safe form of a category name: lower case, runs of non-alphanumerics -> ``_``."""
    slug = re.sub(r"[^0-9a-z]+", "_", category.strip().lower()).strip("_")
    return slug or "blank"


class FeatureConfig(BaseModel):
    """Thresholds and windows of the member features (defaults match the synthetic program)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows_days: tuple[int, ...] = Field(
        default=(30, 90, 365), description="Trailing windows of frequency and monetary features."
    )
    # Tiers: the lowest tier (TIERS[0]) needs no points; the others need these many points
    # earned from purchases over the trailing `tier_window_days` (the synthetic program's rule).
    tier_thresholds: dict[str, float] = Field(
        default={"silver": 500.0, "gold": 1400.0, "platinum": 3200.0}
    )
    tier_window_days: int = 365
    points_per_currency_unit: float = 1.0
    # Points credited per unit of reward_value when a bonus_points offer is redeemed.
    points_per_bonus_unit: float = 100.0
    # First day the transaction data covers. When set and as_of is less than
    # `tier_window_days` after it, tier points are annualised (spend x window / days covered),
    # as a program whose data starts mid-year would. None: no annualisation.
    history_start: datetime | None = None
    onboarding_days: float = 60.0
    lapsing_days: float = 45.0
    lapsed_days: float = 120.0
    # Category shares: one column per category in `categories` plus `share_other`. None means
    # "discover from the data" (the `max_categories` categories with the most spend before the
    # latest as_of); serving needs an explicit list (store the training run's resolved config).
    categories: tuple[str, ...] | None = None
    max_categories: int = 20
    category_window_days: int | None = 365
    offer_kinds: tuple[str, ...] = OFFER_KINDS
    milestones: tuple[int, ...] = (10, 25, 50, 100, 250, 500, 1000)
    streak_max_weeks: int = 52

    @field_validator("windows_days", "milestones")
    @classmethod
    def _positive_increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(x <= 0 for x in v) or list(v) != sorted(set(v)):
            raise ValueError(f"must be positive, strictly increasing and non-empty, got {v}")
        return v

    @field_validator("tier_thresholds")
    @classmethod
    def _tiers(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(TIERS[1:]))
        if unknown:
            raise ValueError(f"tier_thresholds: unknown tier(s) {unknown}; allowed {TIERS[1:]}")
        ordered = [v[t] for t in TIERS[1:] if t in v]
        if any(x <= 0 for x in ordered) or ordered != sorted(set(ordered)):
            raise ValueError(f"tier_thresholds must be positive and rise with the tier, got {v}")
        return v

    @field_validator("offer_kinds")
    @classmethod
    def _kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - set(OFFER_KINDS))
        if unknown:
            raise ValueError(f"offer_kinds: unknown kind(s) {unknown}; allowed {OFFER_KINDS}")
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        slugs = [category_slug(c) for c in v]
        dup = sorted({s for s in slugs if slugs.count(s) > 1})
        if dup or len(set(v)) != len(v):
            raise ValueError(f"categories: names collide as columns {dup or sorted(v)}")
        if "other" in slugs:
            raise ValueError("categories: 'other' is reserved for share_other")
        return v

    @model_validator(mode="after")
    def _lifecycle(self) -> FeatureConfig:
        if not 0 < self.lapsing_days < self.lapsed_days:
            raise ValueError(
                f"need 0 < lapsing_days < lapsed_days, got {self.lapsing_days}, {self.lapsed_days}"
            )
        if self.onboarding_days < 0 or self.tier_window_days <= 0:
            raise ValueError("onboarding_days and tier_window_days must be > 0")
        if not 1 <= self.streak_max_weeks <= 62:  # one bit per week in an int64 mask
            raise ValueError(f"streak_max_weeks must be in [1, 62], got {self.streak_max_weeks}")
        if self.points_per_currency_unit < 0:
            raise ValueError("points_per_currency_unit must be >= 0")
        return self

    @property
    def tier_ladder(self) -> list[tuple[str, float]]:
        """(tier, points needed) lowest first; the lowest tier needs 0 points."""
        return [(TIERS[0], 0.0)] + [
            (t, self.tier_thresholds[t]) for t in TIERS[1:] if t in self.tier_thresholds
        ]

    @property
    def category_columns(self) -> dict[str, str]:
        """category -> output column (``share_<slug>``); needs resolved ``categories``."""
        if self.categories is None:
            raise ValueError("categories are not resolved (use resolve_categories first)")
        return {c: f"share_{category_slug(c)}" for c in self.categories}
