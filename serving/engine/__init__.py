"""The decision engine: one pure library that the API and e-mail batch scoring both call.

Public API::

    engine = DecisionEngine(load_catalog(path), EngineSettings())
    batch = engine.decide(member_features, ScoreInputs(p_redeem, incremental_spend),
                          DecisionContext("email", as_of, request_id="cmp-2026-11"),
                          state=state_from_events(events, ids, engine.offers, as_of))
    batch.rows              # one row per shown offer (+ one per member without an offer)
    batch.to_offer_events() # sent / held_out events with decision ids and propensities

Errors: :class:`EngineInputError` (a ``ValueError`` naming the field and the value) and its
subclass :class:`MissingColumnError`. No web framework is imported here. See docs/engine.md.
"""

from serving.engine.allocation import Allocation, Budgets, allocate, greedy_slate
from serving.engine.context import DecisionContext
from serving.engine.decision import Decision, Reward
from serving.engine.engine import STATUSES, DecisionBatch, DecisionEngine
from serving.engine.errors import EngineInputError, MissingColumnError
from serving.engine.fallback import FALLBACKS, FallbackTables
from serving.engine.holdout import in_holdout
from serving.engine.members import MemberTable
from serving.engine.moments import DETECTED_MOMENTS, detect_moments
from serving.engine.offers import OfferTable
from serving.engine.scoring import ScoreInputs
from serving.engine.settings import EngineSettings
from serving.engine.state import MemberOfferState, remaining_budgets, state_from_events

__all__ = [
    "DETECTED_MOMENTS",
    "FALLBACKS",
    "STATUSES",
    "Allocation",
    "Budgets",
    "Decision",
    "DecisionBatch",
    "DecisionContext",
    "DecisionEngine",
    "EngineInputError",
    "EngineSettings",
    "FallbackTables",
    "MemberOfferState",
    "MemberTable",
    "MissingColumnError",
    "OfferTable",
    "Reward",
    "ScoreInputs",
    "allocate",
    "detect_moments",
    "greedy_slate",
    "in_holdout",
    "remaining_budgets",
    "state_from_events",
]
