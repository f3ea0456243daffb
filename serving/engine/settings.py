"""Settings of the decision engine: every weight, threshold and share is configuration.

``EngineSettings`` is a pydantic-settings model: values come from code, from a YAML/JSON file
(``EngineSettings.model_validate(dict)``) or from the environment with the prefix
``OFFERS_ENGINE_`` and ``__`` between nested names, e.g. ``OFFERS_ENGINE_HOLDOUT__SHARE=0.1`` or
``OFFERS_ENGINE_SCORING__MARGIN_RATE=0.35``. Store the resolved settings next to every send:
they are part of the policy (``EngineSettings.fingerprint()`` is recorded on each decision).
It is the ``engine`` section of the settings tree (:class:`serving.settings.Settings`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.sources.schema import CHANNELS, LIFECYCLE_STAGES

__all__ = [
    "AllocationSettings",
    "CapSettings",
    "ConsentSettings",
    "EngineSettings",
    "ExplanationSettings",
    "ExplorationSettings",
    "HoldoutSettings",
    "LifecyclePolicy",
    "MomentSettings",
    "ScoringSettings",
    "SurpriseSettings",
]

# Fallback chain names (the same strings as models.affinity.FALLBACKS).
PERSONALISED = "personalised"
SEGMENT_POPULAR = "segment_popular"
GLOBAL_POPULAR = "global_popular"


# The default z of the lower confidence bound, measured in docs/engine.md ("Policy value at
# three difficulty levels"): with ~30 offers one offer's bound clears 0 by chance at z = 1
# (a multiple comparison), and the engine then lost money on realistic and hard programs; at
# z = 2 it held out there and kept the goal on the easy one.
UNCERTAINTY_Z = 2.0


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScoringSettings(_Group):
    """Expected incremental value = value_weight x margin_rate x incremental spend
    - cost_weight x (P(redeem) x cost + send cost); see docs/engine.md."""

    margin_rate: float = Field(0.30, ge=0, le=1, description="gross margin share of spend")
    value_weight: float = Field(1.0, ge=0)
    cost_weight: float = Field(1.0, ge=0)
    send_cost: dict[str, float] = Field(
        default_factory=dict, description="cost of one send per channel (e.g. app: 0.01)"
    )
    min_value: float = Field(
        0.0, description="offers whose expected incremental value is not above this are not sent"
    )
    uncertainty_z: float = Field(
        UNCERTAINTY_Z,
        ge=0,
        le=5,
        description="incremental spend taken at its lower confidence bound, effect - z x the "
        "standard error of the offer's effect level (the uplift model's meta); 0: the estimate",
    )

    @field_validator("send_cost")
    @classmethod
    def _channels(cls, v: dict[str, float]) -> dict[str, float]:
        for ch, cost in v.items():
            if ch not in CHANNELS:
                raise ValueError(f"send_cost: channel {ch!r} is not one of {', '.join(CHANNELS)}")
            if cost < 0:
                raise ValueError(f"send_cost[{ch!r}]: {cost} is negative")
        return v


def _default_boosts() -> dict[str, dict[str, float]]:
    return {
        "onboarding": {"onboarding": 1.5, "discount_pct": 1.15, "bonus_points": 1.15},
        "active": {"experience": 1.25, "early_access": 1.25, "member_only": 1.15},
        "lapsing": {"win_back": 1.5},
        "lapsed": {"win_back": 1.5},
    }


class LifecyclePolicy(_Group):
    """Multiplicative boosts of the ranking score per lifecycle stage and offer tag.

    Tags of an offer (see ``serving.engine.offers``): its kind, ``surprise``, its moment,
    ``category:<name>``, ``onboarding`` (eligible for onboarding members only), ``win_back``
    (lapsing/lapsed members only, or a win-back moment), ``member_only`` (restricted by tier or
    points), plus ``extra_tags`` per offer id. An offer matching several tags gets the product.
    A boost multiplies a positive score and divides a negative one, so a boost above 1 always
    moves an offer up. Boosts steer the ranking; they never make an ineligible offer eligible.
    """

    boosts: dict[str, dict[str, float]] = Field(default_factory=_default_boosts)
    extra_tags: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("boosts")
    @classmethod
    def _stages(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for stage, tags in v.items():
            if stage not in LIFECYCLE_STAGES:
                raise ValueError(
                    f"boosts: stage {stage!r} is not one of {', '.join(LIFECYCLE_STAGES)}"
                )
            for tag, b in tags.items():
                if not b > 0:
                    raise ValueError(f"boosts[{stage!r}][{tag!r}]: {b} must be > 0")
        return v


class MomentSettings(_Group):
    """Thresholds of the surprise-moment detectors (``serving.engine.moments``)."""

    birthday_days_before: int = Field(14, ge=0, description="birthday within this many days")
    birthday_days_after: int = Field(3, ge=0, description="... or this many days ago")
    anniversary_days_before: int = Field(14, ge=0)
    anniversary_min_tenure_days: float = Field(300, ge=0)
    tier_nudge_share: float = Field(
        0.2, ge=0, le=1, description="points to next tier <= share x next tier's threshold"
    )
    tier_nudge_max_points: float | None = Field(
        None, ge=0, description="... and at most this many points (None: no absolute limit)"
    )
    onboarding_days: float = Field(60, ge=0)
    welcome_days: float = Field(7, ge=0, description="onboarding moment: joined this recently")
    onboarding_purchases: tuple[int, ...] = Field(
        (1, 3), description="onboarding moment: purchase counts reached while onboarding"
    )
    lapse_risk_days: float = Field(40, ge=0, description="no purchase for at least this many days")
    lapse_max_days: float = Field(365, ge=0, description="... and at most this many (win-back)")
    milestone_within: int = Field(
        1, ge=0, description="purchases to the next milestone at most this (1 = the next visit)"
    )
    streak_weeks: int = Field(4, ge=1, description="purchase streak of at least this many weeks")
    large_basket_factor: float = Field(2.0, gt=0, description="basket >= factor x avg basket")
    large_basket_min: float = Field(30.0, ge=0, description="... and at least this amount")

    @model_validator(mode="after")
    def _lapse(self) -> MomentSettings:
        if self.lapse_max_days < self.lapse_risk_days:
            raise ValueError(
                f"lapse_max_days: {self.lapse_max_days} is below lapse_risk_days "
                f"{self.lapse_risk_days}"
            )
        return self


class SurpriseSettings(_Group):
    """Surprise rewards: at most one per decision, for a detected moment."""

    yearly_cap: int = Field(3, ge=0, description="surprises per member per 365 days")
    budget: float | None = Field(
        None, ge=0, description="money for surprises in one send (expected cost); None: no limit"
    )
    min_value: float = Field(
        0.0, description="a surprise needs an expected incremental value above this"
    )
    takes_slot: bool = Field(True, description="the surprise is one of the k offers")


class CapSettings(_Group):
    """Frequency caps per channel: at most ``per_channel[ch]`` offers per ``period_days``."""

    per_channel: dict[str, int] = Field(
        default_factory=lambda: {"email": 4, "app": 6, "checkout": 8}
    )
    period_days: float = Field(7.0, gt=0)

    @field_validator("per_channel")
    @classmethod
    def _channels(cls, v: dict[str, int]) -> dict[str, int]:
        for ch, cap in v.items():
            if ch not in CHANNELS:
                raise ValueError(f"per_channel: channel {ch!r} is not one of {', '.join(CHANNELS)}")
            if cap < 0:
                raise ValueError(f"per_channel[{ch!r}]: {cap} is negative")
        return v


class ConsentSettings(_Group):
    """Channel consent (``email_opt_in``, ``app_opt_in``): an explicit opt-out always excludes
    the channel; ``unknown`` says what a missing value (null, or a source without the column)
    means."""

    unknown: Literal["allow", "deny"] = Field(
        "allow", description="a member whose consent for the channel is not known"
    )


class HoldoutSettings(_Group):
    """Program holdout: a salted hash of the member id (``serving.engine.holdout``)."""

    share: float = Field(0.05, ge=0, lt=1)
    salt: str = Field("holdout-2026", min_length=1)


class ExplorationSettings(_Group):
    """Exploration: per slot, with probability ``epsilon`` a uniform pick among the eligible."""

    epsilon: float = Field(0.05, ge=0, le=1)
    salt: str = Field("explore-2026", min_length=1)


class AllocationSettings(_Group):
    """Budget-aware allocation of a whole send (``serving.engine.allocation``)."""

    budget_basis: Literal["expected", "worst_case"] = Field(
        "expected",
        description="budgets are spent by expected redemptions (P(redeem)) or by every send",
    )
    max_iter: int = Field(40, ge=1)
    tolerance: float = Field(1e-3, gt=0, description="relative budget slack to stop at")
    chunk_rows: int = Field(250_000, ge=1, description="members per vectorised chunk")
    repair_rounds: int = Field(3, ge=0, description="refill rounds after the repair pass")


class ExplanationSettings(_Group):
    """When the loyalty-language phrases fire."""

    often_buys_share: float = Field(0.2, ge=0, le=1, description="category share of spend")
    currency: str = ""


class EngineSettings(BaseSettings):
    """Everything the decision engine is configured by (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix="OFFERS_ENGINE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    k: int = Field(3, ge=1, description="offers per response")
    max_per_kind: int = Field(1, ge=1, description="diversity: offers of one kind per response")
    scoring: ScoringSettings = ScoringSettings()
    lifecycle: LifecyclePolicy = LifecyclePolicy()
    moments: MomentSettings = MomentSettings()
    surprise: SurpriseSettings = SurpriseSettings()
    caps: CapSettings = CapSettings()
    consent: ConsentSettings = ConsentSettings()
    holdout: HoldoutSettings = HoldoutSettings()
    exploration: ExplorationSettings = ExplorationSettings()
    allocation: AllocationSettings = AllocationSettings()
    explanations: ExplanationSettings = ExplanationSettings()
    fallback_chain: tuple[str, ...] = (SEGMENT_POPULAR, GLOBAL_POPULAR)
    segment_column: str = Field("segment", description="member column the segment fallback uses")

    @field_validator("fallback_chain")
    @classmethod
    def _chain(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if name not in (SEGMENT_POPULAR, GLOBAL_POPULAR):
                raise ValueError(
                    f"fallback_chain: {name!r} is not one of {SEGMENT_POPULAR}, {GLOBAL_POPULAR}"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"fallback_chain: {list(v)} names a fallback twice")
        return v

    def fingerprint(self) -> str:
        """A short stable hash of the resolved settings (recorded on every decision)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
