"""Dependencies as ``Annotated`` aliases (tests override ``get_state``).

All of them are ``async`` and read the app's state: a sync dependency would run in the thread
pool (tens of microseconds and a thread switch per request), and any entry in
``app.dependency_overrides`` makes FastAPI rebuild every route's dependency tree on every
request, so the app itself sets none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from serving.api.admission import CheckoutAdmission
from serving.api.bundle import BundleHolder
from serving.api.checkout import InFlight
from serving.api.grants import GrantService
from serving.api.history import MemberHistory
from serving.api.metrics import ApiMetrics
from serving.api.modelset import ModelHolder
from serving.auth import ApiKeyRing, Principal, require_scope
from serving.settings import Settings
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

    settings: Settings
    keyring: ApiKeyRing
    metrics: ApiMetrics
    models: ModelHolder
    store: OffersStore | None = None
    decision_log: DecisionLogWriter | None = None
    bundle: BundleHolder | None = None  # when decisions are served
    budget_counters: frozenset[str] = field(default_factory=frozenset)
    grants: GrantService | None = None
    problems: dict[str, str] = field(default_factory=dict)  # check -> why not ready (start-up)
    history: MemberHistory | None = None  # members' grants (cached)
    checkouts: InFlight | None = None  # checkouts being decided
    admission: CheckoutAdmission | None = None  # checkout's overload rule, with the grants


async def get_state(request: Request) -> AppState:
    return request.app.state.offers


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.offers.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StateDep = Annotated[AppState, Depends(get_state)]
OffersReader = Annotated[Principal, Depends(require_scope("offers:read"))]
CheckoutWriter = Annotated[Principal, Depends(require_scope("checkout:write"))]
EventsWriter = Annotated[Principal, Depends(require_scope("events:write"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
