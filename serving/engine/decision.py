"""One member's decision as the real-time path passes it on: from the decider
(:class:`serving.engine.single.SingleDecider`, or :func:`serving.engine.single.decision_dicts`
for a batch) through the serving bundle to the routes, the checkout session and the grants.

Typed dicts rather than classes: the decider builds one per request on the hot path and the
routes copy its fields into the response models, and a dict is the cheapest thing to build and
copy; the types let mypy check every key at every boundary.
"""

from __future__ import annotations

from typing import Literal, TypedDict

__all__ = ["Decision", "Fallback", "Reward", "RewardField"]

# Which answered: the models' personalised scores or a fallback (serving.engine.fallback).
Fallback = Literal["personalised", "segment_popular", "global_popular"]
# The keys of a Reward, for the routes that copy a subset of them into a response model.
RewardField = Literal[
    "offer_id",
    "name",
    "kind",
    "reward_value",
    "rank",
    "score",
    "propensity",
    "explanation",
    "reasons",
    "cost",
    "surprise",
    "moment",
]


class Reward(TypedDict):
    """One offer of a decision, in slot order."""

    offer_id: str
    name: str
    kind: str
    reward_value: float  # to the member
    rank: int  # 1 = first
    score: float  # expected incremental value
    propensity: float  # probability the policy picked it (1 unless explored)
    explanation: str
    reasons: list[str]  # the surprise moment, if any
    cost: float  # to the business
    surprise: bool
    moment: str | None


class Decision(TypedDict):
    """The decision for one member: its id (feedback attribution), which fallback answered,
    whether the member is held out or an offer explored, the moments detected, the offers."""

    decision_id: str
    fallback: Fallback
    held_out: bool
    explored: bool
    moments: list[str]
    offers: list[Reward]
