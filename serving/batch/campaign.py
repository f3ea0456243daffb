"""A campaign file: what one e-mail (or app) send asks the batch scorer for.

YAML, validated by pydantic; an error names the field and the value::

    campaign_id: nov-2026-newsletter   # seeds decision ids: same campaign + member = same id
    channel: email
    send_date: 2026-11-01              # features are computed as of this time
    catalog: catalog.yaml              # default: <data dir>/catalog.yaml
    offers: [coffee-10, bogo-pastry]   # offers allowed in this send (default: all)
    offers_per_member: 2
    budgets: {coffee-10: 5000}         # overrides of the catalog's budgets, in each offer's unit
    total_money: 20000                 # optional budget on the expected cost of the whole send
    price_sample: 200000               # members the budget prices are solved on (null: all)
    models:                            # default: the registered champions in MLflow
      affinity: models:/offers-affinity@champion
      uplift: models:/offers-uplift@champion
    engine: {holdout: {share: 0.05}}   # optional EngineSettings overrides
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.sources.schema import CHANNELS

__all__ = ["DEFAULT_MODELS", "Campaign", "CampaignError", "load_campaign", "parse_campaign"]

DEFAULT_MODELS = {
    "affinity": "models:/offers-affinity@champion",
    "uplift": "models:/offers-uplift@champion",
}


class CampaignError(ValueError):
    """A campaign file that cannot be used (the message names the file and the field)."""


class Campaign(BaseModel):
    """One send (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    campaign_id: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.:-]+$")
    channel: str
    send_date: pd.Timestamp
    catalog: Path | None = None
    offers: list[str] | None = None
    offers_per_member: int = Field(1, ge=1, le=20)
    budgets: dict[str, float] = Field(default_factory=dict)
    total_money: float | None = Field(None, ge=0)
    price_sample: int | None = Field(200_000, ge=1)
    models: dict[str, str] | None = None
    engine: dict[str, Any] = Field(default_factory=dict)

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        if v not in CHANNELS:
            raise ValueError(f"{v!r} is not one of {', '.join(CHANNELS)}")
        return v

    @field_validator("send_date", mode="before")
    @classmethod
    def _date(cls, v: Any) -> pd.Timestamp:
        try:
            t = pd.Timestamp(v)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{v!r} is not a date ({exc})") from None
        if t is pd.NaT:
            raise ValueError(f"{v!r} is not a date")
        if t.tzinfo is not None:
            t = t.tz_convert("UTC").tz_localize(None)
        return t

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: dict[str, float]) -> dict[str, float]:
        for offer_id, amount in v.items():
            if not amount >= 0:
                raise ValueError(f"budget of {offer_id!r} is {amount}; must be >= 0")
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            unknown = sorted(set(v) - {*DEFAULT_MODELS, "synthetic"})
            if unknown:
                raise ValueError(
                    f"unknown model(s) {unknown}; expected affinity and uplift (or synthetic)"
                )
        return v

    def check_offers(self, catalog_ids: list[str]) -> None:
        """Every offer named in ``offers`` and ``budgets`` must be in the catalog."""
        known = set(catalog_ids)
        for field, ids in (("offers", self.offers or []), ("budgets", list(self.budgets))):
            unknown = [o for o in ids if o not in known]
            if unknown:
                raise CampaignError(f"campaign {field}: offer(s) {unknown} are not in the catalog")

    def fingerprint(self) -> str:
        """Stable text of the resolved campaign (a resumed run must match it)."""
        return self.model_dump_json()


def parse_campaign(raw: object, file: str = "campaign") -> Campaign:
    """Validate a parsed mapping; raises :class:`CampaignError` naming the field."""
    if not isinstance(raw, dict):
        raise CampaignError(f"{file}: expected a mapping, got {type(raw).__name__}")
    try:
        return Campaign.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{file}: {loc}: {msg} (got {err.get('input')!r})")
        raise CampaignError("\n".join(lines)) from None


def load_campaign(path: Path | str) -> Campaign:
    """Read and validate a campaign YAML file (a relative ``catalog`` is resolved from it)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CampaignError(f"{path}: cannot be read ({exc})") from None
    camp = parse_campaign(raw, str(path))
    if camp.catalog is not None and not camp.catalog.is_absolute():
        camp = camp.model_copy(update={"catalog": path.parent / camp.catalog})
    return camp
