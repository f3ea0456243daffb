"""The canonical tables: the contract every source is converted into.

One place for column names, dtypes and allowed values. Everything downstream (validation,
feature pipeline, models, serving) refers to these constants instead of string literals.

Conventions (see ``DESIGN.md``):

* ids are strings;
* timestamps are timezone-naive UTC (``datetime64[us]``);
* nullable columns may be absent from a source file and are then filled with nulls;
  required columns may not be absent;
* list-valued fields are stored as ``|``-separated strings (``"email|app"``) and the
  eligibility rules as a JSON object string, so CSV and Parquet hold the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CHANNELS",
    "EVENTS",
    "LIFECYCLE_STAGES",
    "MEMBERS",
    "OFFERS",
    "OFFER_EVENTS",
    "OFFER_KINDS",
    "TABLES",
    "TABLE_ORDER",
    "TIERS",
    "TRANSACTIONS",
    "ColumnSpec",
    "TableSpec",
]

Dtype = Literal["string", "timestamp", "float", "int", "bool"]

# ---- allowed values -------------------------------------------------------------------------
OFFER_KINDS: tuple[str, ...] = (
    "discount_pct",
    "credit",
    "bonus_points",
    "free_shipping",
    "bogo",
    "free_item",
    "early_access",
    "experience",
    "donation",
    "informational",
)
EVENTS: tuple[str, ...] = ("sent", "viewed", "redeemed", "dismissed", "held_out")
CHANNELS: tuple[str, ...] = ("email", "checkout", "app", "web", "social", "store")
# Tiers of the synthetic program (ordered, lowest first). Real sources may have no tier.
TIERS: tuple[str, ...] = ("bronze", "silver", "gold", "platinum")
LIFECYCLE_STAGES: tuple[str, ...] = ("onboarding", "active", "lapsing", "lapsed")
BUDGET_UNITS: tuple[str, ...] = ("count", "money")

LIST_SEPARATOR = "|"

# ---- column names ----------------------------------------------------------------------------
MEMBER_ID = "member_id"
JOINED_AT = "joined_at"
BIRTH_DATE = "birth_date"
TIER = "tier"
POINTS_BALANCE = "points_balance"
AGE = "age"
GENDER = "gender"
INCOME = "income"
REGION = "region"
SEGMENT = "segment"
EMAIL_OPT_IN = "email_opt_in"
APP_OPT_IN = "app_opt_in"
# Consent per channel: a member whose column is False never gets an offer on that channel.
CONSENT_COLUMNS: dict[str, str] = {"email": EMAIL_OPT_IN, "app": APP_OPT_IN}

OFFER_ID = "offer_id"
NAME = "name"
KIND = "kind"
REWARD_VALUE = "reward_value"
COST = "cost"
MIN_SPEND = "min_spend"
DURATION_DAYS = "duration_days"
CHANNELS_COL = "channels"
CATEGORY = "category"
ELIGIBILITY = "eligibility"
BUDGET = "budget"
BUDGET_UNIT = "budget_unit"
PER_MEMBER_CAP = "per_member_cap"
SURPRISE = "surprise"
VALID_FROM = "valid_from"
VALID_TO = "valid_to"

TRANSACTION_ID = "transaction_id"
TS = "ts"
AMOUNT = "amount"
SKU = "sku"
QUANTITY = "quantity"
STORE_ID = "store_id"
CHANNEL = "channel"

EVENT_ID = "event_id"
EVENT = "event"
CAMPAIGN_ID = "campaign_id"
DECISION_ID = "decision_id"
PROPENSITY = "propensity"


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a canonical table."""

    name: str
    dtype: Dtype
    required: bool = True
    unique: bool = False
    allowed: tuple[str, ...] | None = None
    non_negative: bool = False
    # Closed interval [lo, hi] for numeric columns (e.g. a propensity in (0, 1]).
    bounds: tuple[float, float] | None = None
    # Foreign key: (table, column) this column must reference when not null.
    references: tuple[str, str] | None = None
    # Timestamps that may not lie in the future (after the validation's `now`).
    not_future: bool = False


@dataclass(frozen=True)
class TableSpec:
    """A canonical table: its columns in order, and the file stem it is stored under."""

    name: str
    columns: tuple[ColumnSpec, ...]
    key: str | None = None
    notes: str = ""
    by_name: dict[str, ColumnSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


def _c(name: str, dtype: Dtype, **kw: Any) -> ColumnSpec:
    return ColumnSpec(name, dtype, **kw)


MEMBERS = TableSpec(
    "members",
    (
        _c(MEMBER_ID, "string", unique=True),
        _c(JOINED_AT, "timestamp", not_future=True),
        _c(BIRTH_DATE, "timestamp", required=False, not_future=True),
        _c(TIER, "string", required=False),
        _c(POINTS_BALANCE, "float", required=False, non_negative=True),
        _c(AGE, "float", required=False, bounds=(0.0, 120.0)),
        _c(GENDER, "string", required=False),
        _c(INCOME, "float", required=False, non_negative=True),
        _c(REGION, "string", required=False),
        _c(SEGMENT, "string", required=False),
        _c(EMAIL_OPT_IN, "bool", required=False),
        _c(APP_OPT_IN, "bool", required=False),
    ),
    key=MEMBER_ID,
    notes="`segment` is a program-defined member segment used by catalog eligibility rules.",
)

OFFERS = TableSpec(
    "offers",
    (
        _c(OFFER_ID, "string", unique=True),
        _c(NAME, "string"),
        _c(KIND, "string", allowed=OFFER_KINDS),
        _c(REWARD_VALUE, "float", non_negative=True),
        _c(COST, "float", non_negative=True),
        _c(MIN_SPEND, "float", required=False, non_negative=True),
        _c(DURATION_DAYS, "float", required=False, non_negative=True),
        _c(CHANNELS_COL, "string", required=False),
        _c(CATEGORY, "string", required=False),
        _c(ELIGIBILITY, "string", required=False),
        _c(BUDGET, "float", required=False, non_negative=True),
        _c(BUDGET_UNIT, "string", required=False, allowed=BUDGET_UNITS),
        _c(PER_MEMBER_CAP, "int", required=False, non_negative=True),
        _c(SURPRISE, "bool", required=False),
        _c(VALID_FROM, "timestamp", required=False),
        _c(VALID_TO, "timestamp", required=False),
    ),
    key=OFFER_ID,
    notes=(
        "`channels` is `|`-separated; `eligibility` is a JSON object (see features.catalog.model)."
    ),
)

TRANSACTIONS = TableSpec(
    "transactions",
    (
        _c(TRANSACTION_ID, "string"),
        _c(MEMBER_ID, "string", references=("members", MEMBER_ID)),
        _c(TS, "timestamp", not_future=True),
        _c(AMOUNT, "float", non_negative=True),
        _c(SKU, "string", required=False),
        _c(CATEGORY, "string", required=False),
        _c(QUANTITY, "float", required=False, non_negative=True),
        _c(STORE_ID, "string", required=False),
        _c(CHANNEL, "string", required=False),
    ),
    notes="One row per basket line; `transaction_id` repeats across the lines of one basket.",
)

OFFER_EVENTS = TableSpec(
    "offer_events",
    (
        _c(EVENT_ID, "string", unique=True),
        _c(MEMBER_ID, "string", references=("members", MEMBER_ID)),
        _c(TS, "timestamp", not_future=True),
        _c(EVENT, "string", allowed=EVENTS),
        _c(OFFER_ID, "string", required=False, references=("offers", OFFER_ID)),
        _c(CAMPAIGN_ID, "string", required=False),
        _c(CHANNEL, "string", required=False),
        _c(DECISION_ID, "string", required=False),
        _c(PROPENSITY, "float", required=False, bounds=(0.0, 1.0)),
    ),
    key=EVENT_ID,
    notes="`offer_id` is null only for `held_out` rows (a control member at send time).",
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (MEMBERS, OFFERS, TRANSACTIONS, OFFER_EVENTS)}
# Order matters for validation: referenced tables first.
TABLE_ORDER: tuple[str, ...] = ("members", "offers", "transactions", "offer_events")
