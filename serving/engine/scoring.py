"""Scoring: expected incremental value of every (member, offer), from the models' outputs.

The engine takes the models' outputs as plain arrays (:class:`ScoreInputs`), so it does not
depend on how they were produced (``serving.engine.adapters`` fills them from the real models):

* ``p_redeem``: calibrated P(redeem | member, offer sent), (n, m);
* ``incremental_spend``: the uplift model's effect of sending the offer on the member's spend
  over the effect window (currency, may be negative), (n, m).

With the settings' weights (``ScoringSettings``)::

    incremental margin     = margin_rate x incremental_spend
    uplift-adjusted margin = incremental margin / P(redeem)        (per redemption; a score part)
    expected cost          = P(redeem) x cost + send cost of the channel
    expected incremental value (EIV)
        = value_weight x P(redeem) x uplift-adjusted margin - cost_weight x expected cost
        = value_weight x incremental margin - cost_weight x expected cost

The ranking score applies the lifecycle policy: ``EIV x boost`` when EIV >= 0, ``EIV / boost``
otherwise (a boost above 1 always moves an offer up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.sources.schema import LIFECYCLE_STAGES
from serving.engine.errors import EngineInputError
from serving.engine.members import MemberTable
from serving.engine.offers import OfferTable
from serving.engine.settings import (
    GLOBAL_POPULAR,
    PERSONALISED,
    SEGMENT_POPULAR,
    LifecyclePolicy,
    ScoringSettings,
)

FALLBACK_NAMES = (PERSONALISED, SEGMENT_POPULAR, GLOBAL_POPULAR)

__all__ = ["ScoreInputs", "Scores", "lifecycle_boosts", "score"]


@dataclass
class ScoreInputs:
    """The models' outputs for a batch of members (rows) and the catalog's offers (columns).

    Rows where ``has_row`` is False have no model row (a member the models do not know); their
    values are ignored and the fallback chain fills them (``serving.engine.fallback``).
    ``model_versions`` (e.g. ``{"affinity": "offers-affinity/7", "uplift": "offers-uplift/3"}``)
    is recorded on every decision.
    """

    p_redeem: np.ndarray
    incremental_spend: np.ndarray
    has_row: np.ndarray | None = None
    model_versions: dict[str, str] = field(default_factory=dict)
    fallback: np.ndarray | None = None  # (n,) the models' own fallback name per model row

    def check(self, n_members: int, n_offers: int) -> None:
        """Validate shapes and values (raises :class:`EngineInputError` naming the field)."""
        want = (n_members, n_offers)
        for name in ("p_redeem", "incremental_spend"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != want:
                raise EngineInputError(
                    f"score inputs: {name} has shape {arr.shape}, expected {want}"
                )
        if self.has_row is None:
            self.has_row = np.isfinite(self.p_redeem).all(axis=1) & np.isfinite(
                self.incremental_spend
            ).all(axis=1)
        self.has_row = np.asarray(self.has_row, dtype=bool)
        if self.has_row.shape != (n_members,):
            raise EngineInputError(
                f"score inputs: has_row has shape {self.has_row.shape}, expected ({n_members},)"
            )
        if self.fallback is not None:
            self.fallback = np.asarray(self.fallback, dtype=object)
            if self.fallback.shape != (n_members,):
                raise EngineInputError(
                    f"score inputs: fallback has shape {self.fallback.shape}, "
                    f"expected ({n_members},)"
                )
            bad = set(self.fallback[self.has_row].tolist()) - set(FALLBACK_NAMES)
            if bad:
                raise EngineInputError(
                    f"score inputs: fallback names {sorted(map(str, bad))} are not one of "
                    f"{list(FALLBACK_NAMES)}"
                )
        p = np.asarray(self.p_redeem)[self.has_row]
        s = np.asarray(self.incremental_spend)[self.has_row]
        if not (np.isfinite(p).all() and np.isfinite(s).all()):
            raise EngineInputError(
                "score inputs: p_redeem and incremental_spend must be finite on model rows"
            )
        if p.size and (p.min() < 0 or p.max() > 1):
            raise EngineInputError(
                f"score inputs: p_redeem must lie in [0, 1], got {p.min():.4g}..{p.max():.4g}"
            )

    def take(self, rows: np.ndarray) -> ScoreInputs:
        return ScoreInputs(
            p_redeem=np.asarray(self.p_redeem)[rows],
            incremental_spend=np.asarray(self.incremental_spend)[rows],
            has_row=None if self.has_row is None else np.asarray(self.has_row)[rows],
            model_versions=dict(self.model_versions),
        )


@dataclass
class Scores:
    """Score parts per (member, offer) (float32 matrices)."""

    p_redeem: np.ndarray
    incremental_margin: np.ndarray
    expected_cost: np.ndarray
    eiv: np.ndarray
    boost: np.ndarray
    rank_score: np.ndarray

    def uplift_adjusted_margin(self) -> np.ndarray:
        """Incremental margin per redemption (nan where P(redeem) is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.p_redeem > 0, self.incremental_margin / self.p_redeem, np.nan)


def lifecycle_boosts(offers: OfferTable, policy: LifecyclePolicy) -> np.ndarray:
    """(len(LIFECYCLE_STAGES), n_offers): product of the boosts of the offer's tags per stage."""
    table = np.ones((len(LIFECYCLE_STAGES), offers.n))
    for s, stage in enumerate(LIFECYCLE_STAGES):
        for tag, b in policy.boosts.get(stage, {}).items():
            has = np.array([tag in t for t in offers.tags], dtype=bool)
            table[s, has] *= b
    return table


def score(
    inputs_p: np.ndarray,
    inputs_s: np.ndarray,
    members: MemberTable,
    offers: OfferTable,
    scoring: ScoringSettings,
    boosts: np.ndarray,
    channel: str,
) -> Scores:
    """Score parts for filled (no missing rows) P(redeem) and incremental-spend matrices."""
    f32 = np.float32
    p = np.asarray(inputs_p, dtype=f32)
    margin = (f32(scoring.margin_rate) * np.asarray(inputs_s, dtype=f32)).astype(f32)
    send = f32(scoring.send_cost.get(channel, 0.0))
    cost = p * offers.cost.astype(f32)[None, :] + send
    eiv = f32(scoring.value_weight) * margin - f32(scoring.cost_weight) * cost
    boost = boosts.astype(f32)[members.stage]
    rank = np.where(eiv >= 0, eiv * boost, eiv / boost).astype(f32)
    return Scores(
        p_redeem=p,
        incremental_margin=margin,
        expected_cost=cost.astype(f32),
        eiv=eiv.astype(f32),
        boost=boost,
        rank_score=rank,
    )
