"""The offer catalog: a YAML file program managers write, validated into the ``offers`` table.

Format (one mapping per offer under ``offers:``; optional program-level keys on top)::

    program: Acme Rewards
    currency: EUR
    offers:
      - offer_id: bday-coffee          # unique, a string
        name: Birthday coffee on us
        kind: free_item                # one of features.sources.schema.OFFER_KINDS
        reward_value: 4.5              # value to the member (currency)
        cost: 1.2                      # cost to the business (currency)
        min_spend: 0                   # optional
        duration_days: 14              # optional: how long the member has to use it
        channels: [email, app]         # optional: subset of features.sources.schema.CHANNELS
        category: coffee               # optional: product category it applies to
        eligibility:                   # optional; every rule optional
          tiers: [gold, platinum]
          lifecycle_stages: [active]
          segments: [commuter]
          min_points: 500
        budget: {count: 20000}         # optional: {count: N} or {money: X}
        per_member_cap: 1              # optional: times one member may receive it
        surprise: true                 # optional: an unannounced reward for a moment
        moment: birthday               # optional, catalog-only: the moment a surprise is for
        valid_from: 2025-09-01         # optional dates, valid_to >= valid_from
        valid_to: 2026-12-31
        description: free text         # optional, catalog-only

``moment`` and ``description`` stay in the :class:`Catalog` (the decision engine reads
moments from it); they are not columns of the canonical ``offers`` table.

Errors name the file, the offer (id and position) and the field in plain words, e.g.
``catalog.yaml: offer 'bday-coffee' (offers[3]) field 'kind': 'discount' is not one of ...``.
All problems of a file are reported at once in one :class:`CatalogError`.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from features.sources import schema as S
from features.sources.io import to_canonical_frame

__all__ = [
    "MOMENTS",
    "Budget",
    "Catalog",
    "CatalogError",
    "CatalogOffer",
    "Eligibility",
    "dump_catalog",
    "load_catalog",
    "parse_catalog",
]

# Moments a surprise offer can be written for (see DESIGN.md, "Surprise moments").
MOMENTS: tuple[str, ...] = (
    "birthday",
    "anniversary",
    "tier_nudge",
    "onboarding",
    "win_back",
    "milestone",
    "streak",
)


class CatalogError(ValueError):
    """A catalog file that cannot be used; ``errors`` lists every problem, one line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def _one_of(value: object, allowed: tuple[str, ...]) -> str:
    return f"{value!r} is not one of {', '.join(allowed)}"


def _check_allowed(values: list[str] | None, allowed: tuple[str, ...]) -> list[str] | None:
    if values is None:
        return None
    for v in values:
        if v not in allowed:
            raise ValueError(_one_of(v, allowed))
    if len(set(values)) != len(values):
        raise ValueError(f"{values!r} lists a value twice")
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Eligibility(_Strict):
    """Who may receive an offer; every rule is optional and all given rules must hold."""

    tiers: list[str] | None = None
    lifecycle_stages: list[str] | None = None
    segments: list[str] | None = None
    min_points: float | None = Field(default=None, ge=0)

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: list[str] | None) -> list[str] | None:
        return _check_allowed(v, S.TIERS)

    @field_validator("lifecycle_stages")
    @classmethod
    def _stages(cls, v: list[str] | None) -> list[str] | None:
        return _check_allowed(v, S.LIFECYCLE_STAGES)

    def rules(self) -> dict[str, Any]:
        """The rules that are set (no None values)."""
        return self.model_dump(exclude_none=True)


class Budget(_Strict):
    """A budget in number of redemptions (``count``) or in money spent (``money``)."""

    count: int | None = Field(default=None, ge=0)
    money: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Budget:
        if (self.count is None) == (self.money is None):
            raise ValueError("give exactly one of 'count' or 'money', e.g. {count: 5000}")
        return self

    @property
    def unit(self) -> str:
        return "count" if self.count is not None else "money"

    @property
    def amount(self) -> float:
        if self.count is not None:
            return float(self.count)
        if self.money is None:  # the model validator requires exactly one of the two
            raise ValueError("budget: neither 'count' nor 'money' is set")
        return float(self.money)


class CatalogOffer(_Strict):
    """One offer of the catalog (one row of the canonical ``offers`` table)."""

    offer_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    kind: str
    reward_value: float = Field(ge=0)
    cost: float = Field(ge=0)
    min_spend: float | None = Field(default=None, ge=0)
    duration_days: float | None = Field(default=None, gt=0)
    channels: list[str] | None = None
    category: str | None = None
    eligibility: Eligibility | None = None
    budget: Budget | None = None
    per_member_cap: int | None = Field(default=None, ge=1)
    surprise: bool = False
    moment: str | None = None
    valid_from: date | None = None
    valid_to: date | None = None
    description: str | None = None

    @field_validator("offer_id", mode="before")
    @classmethod
    def _id_is_text(cls, v: object) -> object:
        # YAML reads `offer_id: 17` as an int; ids are strings, so accept and convert.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in S.OFFER_KINDS:
            raise ValueError(_one_of(v, S.OFFER_KINDS))
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list; leave the field out to allow every channel")
        return _check_allowed(v, S.CHANNELS)

    @field_validator("moment")
    @classmethod
    def _moment(cls, v: str | None) -> str | None:
        if v is not None and v not in MOMENTS:
            raise ValueError(_one_of(v, MOMENTS))
        return v

    @field_validator("valid_to")
    @classmethod
    def _window(cls, v: date | None, info: Any) -> date | None:
        start = info.data.get("valid_from")
        if v is not None and start is not None and v < start:
            raise ValueError(f"{v.isoformat()} is before valid_from {start.isoformat()}")
        return v


class Catalog(_Strict):
    """A validated catalog: program-level info and the offers, in file order."""

    program: str | None = None
    currency: str | None = None
    description: str | None = None
    offers: list[CatalogOffer] = Field(min_length=1)

    @property
    def offer_ids(self) -> list[str]:
        return [o.offer_id for o in self.offers]

    def to_offers_frame(self) -> pd.DataFrame:
        """The canonical ``offers`` table (``features.sources.schema.OFFERS`` dtypes and column
        order)."""
        rows = []
        for o in self.offers:
            rules = o.eligibility.rules() if o.eligibility is not None else {}
            rows.append(
                {
                    S.OFFER_ID: o.offer_id,
                    S.NAME: o.name,
                    S.KIND: o.kind,
                    S.REWARD_VALUE: o.reward_value,
                    S.COST: o.cost,
                    S.MIN_SPEND: o.min_spend,
                    S.DURATION_DAYS: o.duration_days,
                    S.CHANNELS_COL: S.LIST_SEPARATOR.join(o.channels) if o.channels else None,
                    S.CATEGORY: o.category,
                    S.ELIGIBILITY: json.dumps(rules, sort_keys=True) if rules else None,
                    S.BUDGET: o.budget.amount if o.budget is not None else None,
                    S.BUDGET_UNIT: o.budget.unit if o.budget is not None else None,
                    S.PER_MEMBER_CAP: o.per_member_cap,
                    S.SURPRISE: o.surprise,
                    S.VALID_FROM: pd.Timestamp(o.valid_from) if o.valid_from else None,
                    S.VALID_TO: pd.Timestamp(o.valid_to) if o.valid_to else None,
                }
            )
        return to_canonical_frame(pd.DataFrame(rows), "offers")


def _describe(err: ErrorDetails) -> str:
    """Plain words for one pydantic error."""
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see features/catalog/model.py for the format)"
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return f"{value!r}: {msg[0].lower()}{msg[1:]}" if msg else repr(value)


def _locate(err: ErrorDetails, raw: dict[str, Any], file: str) -> str:
    loc = list(err["loc"])
    if len(loc) >= 2 and loc[0] == "offers" and isinstance(loc[1], int):
        i = loc[1]
        entry = raw["offers"][i] if i < len(raw.get("offers") or []) else None
        oid = entry.get("offer_id") if isinstance(entry, dict) else None
        who = f"offer {str(oid)!r} (offers[{i}])" if oid is not None else f"offers[{i}]"
        field = ".".join(str(p) for p in loc[2:])
        return f"{file}: {who} field {field!r}" if field else f"{file}: {who}"
    field = ".".join(str(p) for p in loc)
    return f"{file}: field {field!r}" if field else file


def parse_catalog(raw: object, file: str = "catalog") -> Catalog:
    """Validate an already-parsed catalog mapping; ``file`` names it in error messages."""
    if not isinstance(raw, dict):
        got = type(raw).__name__
        raise CatalogError([f"{file}: expected a mapping with an 'offers' list, got {got}"])
    if isinstance(raw.get("offers"), list):
        bad = [i for i, o in enumerate(raw["offers"]) if not isinstance(o, dict)]
        if bad:
            raise CatalogError([f"{file}: offers[{i}] is not a mapping of fields" for i in bad])
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(
            [f"{_locate(e, raw, file)}: {_describe(e)}" for e in exc.errors()]
        ) from None
    seen: dict[str, int] = {}
    dups = []
    for i, o in enumerate(catalog.offers):
        if o.offer_id in seen:
            dups.append(
                f"{file}: offer {o.offer_id!r} (offers[{i}]) field 'offer_id': duplicate of "
                f"offers[{seen[o.offer_id]}]"
            )
        seen.setdefault(o.offer_id, i)
    if dups:
        raise CatalogError(dups)
    return catalog


def load_catalog(path: Path | str) -> Catalog:
    """Read and validate a YAML catalog; raises :class:`CatalogError` naming offer and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([f"{path}: cannot be read ({exc.strerror or exc})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError([f"{path.name}: not valid YAML{where}: {problem}"]) from None
    return parse_catalog(raw, path.name)


def dump_catalog(catalog: Catalog, path: Path | str) -> Path:
    """Write a catalog as YAML (deterministic; loads back to an equal catalog)."""
    path = Path(path)
    data = catalog.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    path.write_text(
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8"
    )
    return path


def default_catalog_path() -> Path:
    """The example catalog shipped with the package (``features/catalog/data/catalog.yaml``)."""
    return Path(__file__).parent / "data" / "catalog.yaml"
