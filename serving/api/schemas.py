"""Request and response models of the serving API; every list and string has a limit.

Timestamps are UTC: naive values are taken as UTC, aware ones are converted and made naive
(the store's convention).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

__all__ = [
    "MAX_BATCH_MEMBERS",
    "MAX_EVENTS",
    "BasketLine",
    "BatchOffersLine",
    "BatchOffersRequest",
    "CheckoutCancelRequest",
    "CheckoutChannel",
    "CheckoutRequest",
    "CheckoutResponse",
    "CheckoutSessionResponse",
    "DroppedReward",
    "ErrorResponse",
    "EventsRequest",
    "EventsResponse",
    "FeedbackEvent",
    "FieldError",
    "HealthResponse",
    "MemberOffersParams",
    "MemberOffersResponse",
    "ModelInfo",
    "ModelsResponse",
    "Moment",
    "MomentsResponse",
    "OfferOut",
    "ReadyResponse",
    "ReloadResponse",
    "RewardOut",
]

MAX_EVENTS = 1_000
MAX_BATCH_MEMBERS = 10_000
MAX_K = 50

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]*$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ID_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=1_000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Channel = Literal["email", "checkout", "app", "web", "social", "store"]
Fallback = Literal["personalised", "segment_popular", "global_popular"]
FeedbackKind = Literal["viewed", "redeemed", "dismissed"]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
# Request numbers and flags are strict: "10" and true are not numbers, "true" is not a flag
# (an integer is still a valid amount). FastAPI validates the parsed JSON in Python mode.
Money = Annotated[float, Field(strict=True, ge=0.0, le=1e7, allow_inf_nan=False)]
Flag = Annotated[bool, Field(strict=True)]


def _whole_number(value: object) -> object:
    """A JSON number with no fraction (3 or 3.0, as JSON Schema's integer), not text or a flag."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a whole number (not text or true/false)")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("Input should be a whole number")
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_whole_number)]


def _iso_text(value: object) -> object:
    """Only ISO 8601 text is a time: an epoch number is ambiguous (seconds or milliseconds)."""
    if not isinstance(value, str | datetime):
        raise ValueError("give an ISO 8601 date-time string, e.g. 2026-12-02T10:00:00Z")
    return value


def _utc_naive(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


UtcTime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_utc_naive)]
ModelVersions = Annotated[dict[Name, ShortText], Field(max_length=10)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ---------------------------------------------------------------------------------
class FieldError(_Out):
    field: str = Field(description="dotted location, e.g. body.events.0.event_id")
    reason: str


class ErrorResponse(_Out):
    error: str = Field(description="machine-readable code, e.g. validation_error")
    detail: list[FieldError] | str | None = None


# -- feedback events ------------------------------------------------------------------------
class FeedbackEvent(_In):
    """One feedback event; ``event_id`` is chosen by the client and makes retries safe."""

    event_id: Id
    member_id: Id
    offer_id: Id
    event: FeedbackKind
    decision_id: Id | None = None
    channel: Channel | None = None
    ts: UtcTime | None = Field(
        default=None,
        description="when it happened (ISO 8601, UTC unless an offset is given); default: "
        "now. Accepted from now - OFFERS_EVENT_MAX_AGE_DAYS (400) to now + "
        "OFFERS_EVENT_MAX_AHEAD_SECONDS (1 day); other times are a 422",
    )


class EventsRequest(_In):
    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(_Out):
    """Sent only after the events are committed; ``duplicates`` were stored before with the
    same contents (an id stored with other contents is a 409 and nothing is stored)."""

    received: int
    stored: list[str]
    duplicates: list[str]


# -- member offers --------------------------------------------------------------------------
class MemberOffersParams(_In):
    channel: Channel = "app"
    k: int = Field(default=5, ge=1, le=MAX_K)


class OfferOut(_Out):
    offer_id: Id
    name: ShortText
    kind: Name
    reward_value: float
    rank: int = Field(ge=1)
    score: float = Field(description="expected incremental value")
    propensity: Probability = Field(description="probability this offer was chosen (logged)")
    explanation: LongText = ""
    reasons: list[ShortText] = Field(default_factory=list, max_length=10)


class MemberOffersResponse(_Out):
    decision_id: Id
    member_id: Id
    channel: Channel
    offers: list[OfferOut] = Field(max_length=MAX_K)
    fallback: Fallback
    model_versions: ModelVersions
    held_out: bool = False
    explored: bool = False


# -- checkout -------------------------------------------------------------------------------
class BasketLine(_In):
    sku: Id | None = None
    category: Name | None = None
    quantity: Count = Field(ge=1, le=10_000)
    unit_price: Money


CheckoutChannel = Literal["checkout", "store", "web", "app"]
SessionState = Literal["open", "closed", "cancelled", "partially_returned"]
DropReason = Literal["per_member_cap", "frequency_cap", "surprise_cap", "budget"]


class CheckoutRequest(_In):
    """One purchase. ``transaction_id`` is the till's id: sending it again returns the same
    answer and reserves nothing new. The decision is made at server time; ``ts`` (the till's
    clock) is recorded only."""

    transaction_id: Id
    member_id: Id
    basket: list[BasketLine] = Field(min_length=1, max_length=500)
    total: Money = Field(description="must match the sum of quantity x unit_price (1%, 0.01)")
    store_id: Id | None = None
    channel: CheckoutChannel = "checkout"
    ts: UtcTime | None = Field(default=None, description="the till's time: recorded, not used")


class RewardOut(_Out):
    offer_id: Id
    name: ShortText
    kind: Name
    reward_value: float
    cost: float
    surprise: bool = False
    moment: Name | None = None
    explanation: LongText = ""


class DroppedReward(_Out):
    """A reward the decision chose that was not granted: a cap or budget was reached between
    the decision and the grant."""

    offer_id: Id
    reason: DropReason


class CheckoutResponse(_Out):
    transaction_id: Id
    decision_id: Id
    member_id: Id
    rewards: list[RewardOut] = Field(max_length=20)
    dropped: list[DroppedReward] = Field(default_factory=list, max_length=20)
    moments: list[Name] = Field(default_factory=list, max_length=20)
    fallback: Fallback
    model_versions: ModelVersions
    state: SessionState | None = Field(
        default="open", description="the checkout session's state; None on a dry run"
    )
    dry_run: bool = False


class CheckoutCancelRequest(_In):
    """No ``offer_ids``: void the whole transaction; else return these rewards only."""

    offer_ids: list[Id] | None = Field(default=None, min_length=1, max_length=20)


class CheckoutSessionResponse(_Out):
    transaction_id: Id
    member_id: Id
    state: SessionState
    released: list[Id] = Field(default_factory=list, max_length=20)
    kept_redeemed: list[Id] = Field(
        default_factory=list, max_length=20, description="redeemed: stay counted"
    )


# -- batch ----------------------------------------------------------------------------------
class BatchOffersRequest(_In):
    member_ids: list[Id] = Field(min_length=1, max_length=MAX_BATCH_MEMBERS)
    channel: Channel = "email"
    k: Count = Field(default=3, ge=1, le=MAX_K)


class BatchOffersLine(_Out):
    """One NDJSON line of the batch response (one per requested member, in request order)."""

    member_id: Id
    decision_id: Id
    offers: list[OfferOut] = Field(max_length=MAX_K)
    fallback: Fallback
    model_versions: ModelVersions
    held_out: bool = False


# -- moments --------------------------------------------------------------------------------
class Moment(_Out):
    name: Name
    detail: ShortText = ""


class MomentsResponse(_Out):
    member_id: Id
    moments: list[Moment] = Field(max_length=20)


# -- models and health ----------------------------------------------------------------------
class ModelInfo(_Out):
    name: Name
    uri: ShortText
    version: ShortText | None = None
    loaded_at: datetime
    # where it came from: "registry", "local_copy" (reason says why) or "local_dir"
    source: ShortText | None = None
    reason: LongText | None = None


class ModelsResponse(_Out):
    models: list[ModelInfo] = Field(max_length=20)
    configured: list[Name] = Field(max_length=20)


class ReloadResponse(_Out):
    reloaded: bool
    models: list[ModelInfo] = Field(max_length=20)


class HealthResponse(_Out):
    status: Literal["ok"] = "ok"


class ReadyResponse(_Out):
    ready: bool
    checks: dict[Name, LongText] = Field(max_length=20)
