"""Checkout admission (serving/api/admission.py): the rule, the grant writer's backlog it
reads, the 503 it raises before deciding, and its two settings. The backlog is driven
directly (a store that blocks until released, a clock the test sets), never by timing."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from serving.api.admission import (
    QUEUE_FULL,
    QUEUE_WAIT,
    AdmissionLimits,
    CheckoutAdmission,
    shed_reason,
)
from serving.api.grants import Backlog, GrantService
from serving.api.metrics import ApiMetrics
from serving.api.routes.checkout import checkout_answer
from serving.api.schemas import CheckoutRequest
from serving.settings import ServingSettings
from serving.store import GrantOutcome, GrantRequest, ReservationItem


@pytest.mark.parametrize(
    ("queued", "wait_s", "expected"),
    [
        (0, 0.0, None),
        (9, 0.0, None),  # below the queue bound
        (10, 0.0, QUEUE_FULL),  # at it: the queue is full
        (500, 9.0, QUEUE_FULL),  # both: the queue is named
        (0, 0.2, None),  # exactly the wait budget: admitted
        (0, 0.2001, QUEUE_WAIT),
        (9, 30.0, QUEUE_WAIT),
    ],
)
def test_shed_reason(queued: int, wait_s: float, expected: str | None) -> None:
    limits = AdmissionLimits(max_queue=10, queue_wait_ms=200.0)
    assert shed_reason(Backlog(queued, wait_s), limits) == expected


class _Blocking:
    """A store whose ``reserve_grants`` waits for ``release`` (records each group's size)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.groups: list[int] = []

    def reserve_grants(self, requests):
        self.groups.append(len(requests))
        self.entered.set()
        assert self.release.wait(30)
        return [GrantOutcome(granted=[0]) for _ in requests]


async def _until(predicate) -> None:
    for _ in range(6000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in 30 s")


def _request(i: int) -> GrantRequest:
    return GrantRequest((ReservationItem(f"offer-{i}", amount=1.0),))


def test_backlog_counts_queued_and_times_the_oldest_uncommitted() -> None:
    now = [100.0]
    store = _Blocking()
    service = GrantService(store, clock=lambda: now[0])  # type: ignore[arg-type]
    seen: dict[str, Backlog] = {}

    async def main() -> list[GrantOutcome]:
        seen["idle"] = service.backlog()
        first = asyncio.ensure_future(service.reserve(_request(0)))
        await _until(store.entered.is_set)  # taken by the writer, blocked in its commit
        now[0] = 100.5
        seen["committing"] = service.backlog()
        rest = [asyncio.ensure_future(service.reserve(_request(i))) for i in range(1, 4)]
        await _until(lambda: service.pending == 3)
        now[0] = 101.25
        seen["behind"] = service.backlog()
        store.release.set()
        return await asyncio.gather(first, *rest)

    try:
        outcomes = asyncio.run(main())
    finally:
        store.release.set()
        service.close()
    assert seen["idle"] == Backlog(0, 0.0)
    assert seen["committing"] == Backlog(0, pytest.approx(0.5))
    # three queued at 100.5, but the group in its commit was queued at 100.0: the oldest
    assert seen["behind"] == Backlog(3, pytest.approx(1.25))
    assert service.backlog() == Backlog(0, 0.0)  # all committed
    assert store.groups == [1, 3] and all(o.granted == [0] for o in outcomes)
    limits = AdmissionLimits(max_queue=3, queue_wait_ms=60_000)
    assert shed_reason(seen["behind"], limits) == QUEUE_FULL
    limits = AdmissionLimits(max_queue=4, queue_wait_ms=1_000)
    assert shed_reason(seen["behind"], limits) == QUEUE_WAIT
    assert shed_reason(seen["committing"], limits) is None


class _Grants:
    def __init__(self, backlog: Backlog) -> None:
        self.now = backlog

    def backlog(self) -> Backlog:
        return self.now


def _shed_count(metrics: ApiMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("offers_checkout_shed_total", {"reason": reason})
    return 0.0 if value is None else value


def test_check_raises_503_with_retry_after_and_counts_the_reason() -> None:
    metrics = ApiMetrics()
    grants = _Grants(Backlog(0, 0.0))
    admission = CheckoutAdmission(
        grants,  # type: ignore[arg-type]
        AdmissionLimits(max_queue=8, queue_wait_ms=50.0),
        metrics.checkout_shed,
    )
    admission.check()  # idle: admitted
    for backlog, reason, words in (
        (Backlog(8, 0.0), QUEUE_FULL, "queue_full: 8 reservations wait"),
        (Backlog(1, 0.051), QUEUE_WAIT, "queue_wait: a reservation has waited over 50 ms"),
    ):
        grants.now = backlog
        with pytest.raises(HTTPException) as caught:
            admission.check()
        assert caught.value.status_code == 503
        assert caught.value.headers == {"Retry-After": "1"}
        assert words in caught.value.detail and "nothing was reserved" in caught.value.detail
        assert _shed_count(metrics, reason) == 1.0
    grants.now = Backlog(7, 0.05)
    admission.check()  # just inside both bounds
    assert _shed_count(metrics, QUEUE_FULL) == 1.0 and _shed_count(metrics, QUEUE_WAIT) == 1.0


class _Untouchable:
    """Any attribute read fails the test: the shed request must not get this far."""

    def __getattr__(self, name: str):
        raise AssertionError(f"a shed checkout read {name!r}")


def test_a_shed_checkout_neither_decides_nor_reserves() -> None:
    metrics = ApiMetrics()
    admission = CheckoutAdmission(
        _Grants(Backlog(3, 0.0)),  # type: ignore[arg-type]
        AdmissionLimits(max_queue=3, queue_wait_ms=250.0),
        metrics.checkout_shed,
    )
    state = SimpleNamespace(
        admission=admission,
        checkouts=_Untouchable(),  # the in-flight map runs the decision and the reservation
        bundle=_Untouchable(),
        grants=_Untouchable(),
        history=_Untouchable(),
        decision_log=_Untouchable(),
    )
    body = CheckoutRequest.model_validate(
        {
            "transaction_id": "t-1",
            "member_id": "m-1",
            "basket": [{"category": "grocery", "quantity": 1, "unit_price": 4.0}],
            "total": 4.0,
        }
    )
    with pytest.raises(HTTPException) as caught:
        asyncio.run(checkout_answer(state, body, False))
    assert caught.value.status_code == 503
    assert _shed_count(metrics, QUEUE_FULL) == 1.0


def test_limits_from_settings() -> None:
    serving = ServingSettings(checkout_max_queue=17, checkout_queue_wait_ms=12.5)
    assert AdmissionLimits.from_settings(serving) == AdmissionLimits(17, 12.5)
    defaults = AdmissionLimits.from_settings(ServingSettings())
    assert defaults == AdmissionLimits(256, 2000.0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OFFERS_CHECKOUT_MAX_QUEUE", "0"),
        ("OFFERS_CHECKOUT_MAX_QUEUE", "-5"),
        ("OFFERS_CHECKOUT_MAX_QUEUE", "100001"),
        ("OFFERS_CHECKOUT_MAX_QUEUE", "2.5"),
        ("OFFERS_CHECKOUT_MAX_QUEUE", "many"),
        ("OFFERS_CHECKOUT_QUEUE_WAIT_MS", "0"),
        ("OFFERS_CHECKOUT_QUEUE_WAIT_MS", "-1"),
        ("OFFERS_CHECKOUT_QUEUE_WAIT_MS", "60001"),
        ("OFFERS_CHECKOUT_QUEUE_WAIT_MS", "nan"),
        ("OFFERS_CHECKOUT_QUEUE_WAIT_MS", "soon"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting_and_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        ServingSettings()
    text = str(caught.value)
    assert variable.removeprefix("OFFERS_").lower() in text
    assert f"input_value='{value}'" in text
