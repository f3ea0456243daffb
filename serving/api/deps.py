"""Dependencies as ``Annotated`` aliases (tests override ``get_settings`` or the state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from serving.api.metrics import ApiMetrics
from serving.api.modelset import ModelHolder
from serving.auth import ApiKeyRing, Principal, require_scope
from serving.settings import ServingSettings, get_settings
from serving.store import DecisionLogWriter, OffersStore

__all__ = [
    "Admin",
    "AppState",
    "CheckoutWriter",
    "EventsWriter",
    "OffersReader",
    "SettingsDep",
    "StateDep",
    "get_state",
]


@dataclass
class AppState:
    """What the lifespan builds once and every request shares."""

    settings: ServingSettings
    keyring: ApiKeyRing
    metrics: ApiMetrics
    models: ModelHolder
    store: OffersStore | None = None
    decision_log: DecisionLogWriter | None = None
    bundle: Any = None  # serving.api.bundle.BundleHolder when decisions are served
    budget_counters: frozenset[str] = field(default_factory=frozenset)
    grants: Any = None  # serving.api.grants.GrantService


def get_state(request: Request) -> AppState:
    return request.app.state.offers


SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
StateDep = Annotated[AppState, Depends(get_state)]
OffersReader = Annotated[Principal, Depends(require_scope("offers:read"))]
CheckoutWriter = Annotated[Principal, Depends(require_scope("checkout:write"))]
EventsWriter = Annotated[Principal, Depends(require_scope("events:write"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
