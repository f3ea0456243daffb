"""Issue 17 clarity and availability items, in process: strict numbers, huge integers, event
conflicts, the event time window, events and readiness when the store cannot write, and who
may read /metrics."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.settings import ServingSettings, Settings, StoreSettings

KEYS = {"w": ["events:write"], "c": ["checkout:write"], "a": ["admin"], "r": ["offers:read"]}
W = {"X-API-Key": "w"}


def _settings(tmp_path: Path, **serving) -> Settings:
    return Settings(data={"home": tmp_path}, serving={"api_keys": KEYS, **serving})


@pytest.fixture
def client(tmp_path: Path):
    with TestClient(create_app(_settings(tmp_path))) as c:
        yield c


def _event(event_id: str, **kw) -> dict:
    return {"event_id": event_id, "member_id": "m1", "offer_id": "o1", "event": "viewed", **kw}


def _fields(response) -> dict[str, str]:
    return {d["field"]: d["reason"] for d in response.json()["detail"]}


def _now_iso(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + delta).replace(tzinfo=None).isoformat(timespec="seconds")


# -- item 9: strict numbers and booleans, huge integers ------------------------------------
@pytest.mark.parametrize("total", ["10", True])
def test_checkout_total_as_string_or_boolean_is_422_naming_the_field(client, total):
    body = {"member_id": "m1", "basket": [{"quantity": 1, "unit_price": 10.0}], "total": total}
    response = client.post("/v1/checkout/rewards", json=body, headers={"X-API-Key": "c"})
    assert response.status_code == 422
    assert "body.total" in _fields(response)


@pytest.mark.parametrize("quantity", ["2", True, 2.5])
def test_basket_quantity_must_be_an_integer(quantity):
    from pydantic import ValidationError

    from serving.api.schemas import BasketLine

    with pytest.raises(ValidationError, match="quantity"):
        BasketLine.model_validate({"quantity": quantity, "unit_price": 1.0})
    assert BasketLine.model_validate({"quantity": 2, "unit_price": 3}).unit_price == 3.0
    assert BasketLine.model_validate({"quantity": 2.0, "unit_price": 3}).quantity == 2  # JSON


def test_batch_k_as_a_string_is_422(client):
    body = {"member_ids": ["m1"], "k": "3"}
    response = client.post("/v1/offers/batch", json=body, headers={"X-API-Key": "r"})
    assert response.status_code == 422 and "body.k" in _fields(response)


def test_integer_longer_than_4300_digits_is_422_naming_the_field(client):
    huge = "9" * 5000
    raw = '{"member_id": "m1", "basket": [{"quantity": 1, "unit_price": 1}], "total": ' + huge + "}"
    headers = {"X-API-Key": "c", "content-type": "application/json"}
    response = client.post("/v1/checkout/rewards", content=raw, headers=headers)
    assert response.status_code == 422
    fields = _fields(response)
    assert "body.total" in fields and "5000 digits" in fields["body.total"]
    nested = '{"events": [{"event_id": "e1", "member_id": ' + huge + "}]}"
    response = client.post("/v1/events", content=nested, headers={**W, **headers})
    assert response.status_code == 422 and "body.events.0.member_id" in _fields(response)


def test_malformed_json_is_still_a_422_and_not_a_crash(client):
    headers = {**W, "content-type": "application/json"}
    response = client.post("/v1/events", content='{"events": [', headers=headers)
    assert response.status_code == 422


# -- item 10: the same event id with other contents is a conflict ---------------------------
def test_same_event_id_with_other_contents_is_409_and_the_first_is_kept(client, tmp_path):
    assert client.post("/v1/events", json={"events": [_event("e1")]}, headers=W).json()[
        "stored"
    ] == ["e1"]
    changed = {"events": [_event("e2"), _event("e1", event="redeemed")]}
    response = client.post("/v1/events", json=changed, headers=W)
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "conflict"
    assert body["detail"][0]["field"] == "body.events.1.event_id"
    assert "'e1'" in body["detail"][0]["reason"] and "event" in body["detail"][0]["reason"]
    replay = client.post("/v1/events", json={"events": [_event("e1")]}, headers=W).json()
    assert replay == {"received": 1, "stored": [], "duplicates": ["e1"]}
    # nothing of the refused request was stored: e2 is new now
    assert client.post("/v1/events", json={"events": [_event("e2")]}, headers=W).json()[
        "stored"
    ] == ["e2"]
    con = sqlite3.connect(tmp_path / "offers.db")
    assert con.execute("SELECT event FROM feedback_events WHERE event_id='e1'").fetchall() == [
        ("viewed",)
    ]
    con.close()


def test_repeated_id_inside_one_request_conflicts_only_when_contents_differ(client):
    same = client.post("/v1/events", json={"events": [_event("x"), _event("x")]}, headers=W)
    assert same.status_code == 200 and same.json()["duplicates"] == ["x"]
    other = {"events": [_event("y"), _event("y", offer_id="o2")]}
    response = client.post("/v1/events", json=other, headers=W)
    assert response.status_code == 409 and "'y'" in response.json()["detail"][0]["reason"]


def test_replay_with_the_same_timestamp_is_a_duplicate(client):
    ts = _now_iso(-timedelta(hours=1))
    first = client.post("/v1/events", json={"events": [_event("t1", ts=ts)]}, headers=W)
    again = client.post("/v1/events", json={"events": [_event("t1", ts=ts + "Z")]}, headers=W)
    assert first.status_code == 200 and again.json()["duplicates"] == ["t1"]
    moved = client.post(
        "/v1/events", json={"events": [_event("t1", ts=_now_iso(-timedelta(hours=2)))]}, headers=W
    )
    assert moved.status_code == 409 and "ts" in moved.json()["detail"][0]["reason"]


# -- item 11: timestamps within a window around server time --------------------------------
@pytest.mark.parametrize("ts", ["9999-12-31T00:00:00", "0001-01-01T00:00:00"])
def test_event_time_far_from_now_is_422_naming_field_and_value(client, ts):
    response = client.post("/v1/events", json={"events": [_event("e", ts=ts)]}, headers=W)
    assert response.status_code == 422
    fields = _fields(response)
    assert ts[:10] in fields["body.events.0.ts"]


def test_event_time_as_epoch_number_is_422(client):
    response = client.post("/v1/events", json={"events": [_event("e", ts=32503680000)]}, headers=W)
    assert response.status_code == 422 and "body.events.0.ts" in _fields(response)


def test_event_time_window_edges_follow_the_settings(tmp_path):
    settings = _settings(tmp_path, event_max_age_days=10, event_max_ahead_seconds=3600)
    with TestClient(create_app(settings)) as c:
        ok = [_event("a", ts=_now_iso(-timedelta(days=9))), _event("b", ts=_now_iso())]
        assert c.post("/v1/events", json={"events": ok}, headers=W).status_code == 200
        too_old = [_event("c", ts=_now_iso(-timedelta(days=11)))]
        too_far = [_event("d", ts=_now_iso(timedelta(hours=2)))]
        old = c.post("/v1/events", json={"events": too_old}, headers=W)
        ahead = c.post("/v1/events", json={"events": too_far}, headers=W)
        assert old.status_code == 422 and ahead.status_code == 422
        assert "body.events.0.ts" in _fields(ahead)


# -- item 4: the store cannot write ---------------------------------------------------------
def test_lock_wait_default_is_well_under_a_second():
    assert StoreSettings().store_lock_wait_seconds < 1.0


def test_events_answer_503_when_the_sqlite_write_lock_is_held(tmp_path):
    with TestClient(create_app(_settings(tmp_path))) as c:
        assert c.get("/readyz").status_code == 200
        holder = sqlite3.connect(tmp_path / "offers.db", timeout=1, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            start = time.monotonic()
            response = c.post("/v1/events", json={"events": [_event("e1")]}, headers=W)
            waited = time.monotonic() - start
            assert response.status_code == 503
            assert response.headers["Retry-After"]
            assert "no event was stored" in response.json()["detail"]
            assert waited < 10  # the 30 s busy timeout of before is not on this path
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert "cannot write" in ready.json()["checks"]["store"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert c.post("/v1/events", json={"events": [_event("e1")]}, headers=W).status_code == 200
        assert c.get("/readyz").status_code == 200


def test_events_answer_503_when_the_database_is_full(tmp_path):
    """SQLite's "database or disk is full" (max_page_count pinned at the current size)."""
    from sqlalchemy import event

    with TestClient(create_app(_settings(tmp_path))) as c:
        engine = c.app.state.offers.store.engine

        @event.listens_for(engine, "connect")
        def _full(dbapi_connection, _record) -> None:
            pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

        engine.dispose()  # new connections get the cap
        many = {"events": [_event(f"full-{i}", member_id=f"m{i:060d}") for i in range(1000)]}
        response = c.post("/v1/events", json=many, headers=W)
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert "no event was stored" in response.json()["detail"]
        event.remove(engine, "connect", _full)
        engine.dispose()
        assert c.post("/v1/events", json=many, headers=W).json()["stored"][:1] == ["full-0"]


def test_readyz_reports_a_read_only_store(tmp_path):
    with TestClient(create_app(_settings(tmp_path))) as c:
        state = c.app.state.offers
        writable = state.store
        state.store = type(writable)(
            _readonly_engine(tmp_path / "offers.db")
        )  # same file, opened read-only
        try:
            ready = c.get("/readyz").json()
            assert ready["ready"] is False and "cannot write" in ready["checks"]["store"]
            response = c.post("/v1/events", json={"events": [_event("e9")]}, headers=W)
            assert response.status_code == 503
        finally:
            state.store.close()
            state.store = writable


def _readonly_engine(path: Path):
    from sqlalchemy import create_engine

    return create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False),
    )


# -- item 8: /metrics ------------------------------------------------------------------------
def test_metrics_need_the_admin_scope_by_default(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=W).status_code == 403
    response = client.get("/metrics", headers={"Authorization": "Bearer a"})
    assert response.status_code == 200 and "offers_http_requests_total" in response.text


@pytest.mark.parametrize(("mode", "anonymous", "admin"), [("open", 200, 200), ("off", 404, 404)])
def test_metrics_exposure_setting(tmp_path, mode, anonymous, admin):
    with TestClient(create_app(_settings(tmp_path, metrics_exposure=mode))) as c:
        assert c.get("/metrics").status_code == anonymous
        assert c.get("/metrics", headers={"X-API-Key": "a"}).status_code == admin


def test_unknown_metrics_exposure_names_the_setting(monkeypatch):
    monkeypatch.setenv("OFFERS_METRICS_EXPOSURE", "public")
    with pytest.raises(ValueError, match="metrics_exposure"):
        ServingSettings()


# -- item 7: `offers serve` hands the timeouts and the connection limit to uvicorn ----------
def test_offers_serve_passes_timeouts_and_connection_limit(monkeypatch, tmp_path):
    import uvicorn

    from offers import cmd_serve
    from serving.api.limits import ReadTimeoutHttpToolsProtocol
    from serving.settings import get_settings

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.setattr(ReadTimeoutHttpToolsProtocol, "header_timeout", None)
    monkeypatch.setattr(ReadTimeoutHttpToolsProtocol, "body_timeout", None)
    monkeypatch.setenv("OFFERS_HOME", str(tmp_path))
    monkeypatch.setenv("OFFERS_MODELS", '{"offers-uplift": "models:/offers-uplift@champion"}')
    monkeypatch.setenv("OFFERS_HEADER_READ_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("OFFERS_BODY_READ_TIMEOUT_SECONDS", "4")
    monkeypatch.setenv("OFFERS_KEEP_ALIVE_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("OFFERS_MAX_CONNECTIONS", "77")
    get_settings.cache_clear()
    try:
        cmd_serve.serve(host="127.0.0.1", port=8999, workers=1, log_level="warning")
    finally:
        get_settings.cache_clear()
    [kw] = calls
    assert kw["http"] is ReadTimeoutHttpToolsProtocol
    assert ReadTimeoutHttpToolsProtocol.header_timeout == 3
    assert ReadTimeoutHttpToolsProtocol.body_timeout == 4
    assert (kw["timeout_keep_alive"], kw["limit_concurrency"]) == (2, 77)


@pytest.mark.parametrize(
    ("url", "preset", "expected"),
    [("sqlite", None, "5.0"), ("sqlite", "0.3", "0.3"), ("postgresql", None, None)],
)
def test_workers_sharing_sqlite_wait_longer_unless_told(
    monkeypatch, tmp_path, url, preset, expected
):
    import uvicorn

    import serving.api.app
    from offers import cmd_serve
    from serving.settings import get_settings

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    monkeypatch.setattr(serving.api.app, "prepare_shared_state", lambda settings: None)
    monkeypatch.setenv("OFFERS_HOME", str(tmp_path))
    monkeypatch.setenv("OFFERS_MODELS", '{"offers-uplift": "models:/offers-uplift@champion"}')
    monkeypatch.setenv("OFFERS_MIGRATE_ON_START", "true")
    if url == "postgresql":
        monkeypatch.setenv("OFFERS_DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    else:
        monkeypatch.delenv("OFFERS_DATABASE_URL", raising=False)
    if preset is None:  # set first so that monkeypatch restores what serve() writes
        monkeypatch.setenv("OFFERS_STORE_LOCK_WAIT_SECONDS", "1")
        monkeypatch.delenv("OFFERS_STORE_LOCK_WAIT_SECONDS")
    else:
        monkeypatch.setenv("OFFERS_STORE_LOCK_WAIT_SECONDS", preset)
    get_settings.cache_clear()
    try:
        cmd_serve.serve(host="127.0.0.1", port=8999, workers=2, log_level="warning")
    finally:
        get_settings.cache_clear()
    assert os.environ.get("OFFERS_STORE_LOCK_WAIT_SECONDS") == expected


# -- the store could not be opened at start-up: checkout answers 503, not a 500 on None ------
def test_checkout_routes_answer_503_when_the_store_did_not_open(tmp_path):
    settings = _settings(tmp_path)
    (tmp_path / "a-file").write_text("not a directory")
    settings.store.database_url = f"sqlite:///{tmp_path / 'a-file' / 'offers.db'}"
    C = {"X-API-Key": "c"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert "cannot open the store" in ready.json()["checks"]["store"]
        calls = [
            ("POST", "/v1/checkout/t1/close", None),
            ("POST", "/v1/checkout/t1/cancel", None),
            ("GET", "/v1/checkout/t1", None),
            (
                "POST",
                "/v1/checkout/rewards",
                {
                    "transaction_id": "t1",
                    "member_id": "m1",
                    "basket": [{"category": "coffee", "quantity": 1, "unit_price": 4.5}],
                    "total": 4.5,
                },
            ),
        ]
        for method, path, body in calls:
            response = c.request(method, path, json=body, headers=C)
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["Retry-After"]
            assert "store" in response.json()["detail"], (method, path, response.text)
