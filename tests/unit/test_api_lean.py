"""``serving.api.lean.LeanRoutes`` on its own (the service functions replaced): what it answers
itself, what it hands to FastAPI, and that a handed-over request gets the body it was sent.
Parity with the FastAPI routes on real servers: tests/integration/test_api_lean.py."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from fastapi import HTTPException

from serving.api import lean
from serving.api.metrics import ApiMetrics
from serving.api.routes import checkout, decisions
from serving.api.schemas import CheckoutResponse, MemberOffersResponse
from serving.auth import PRINCIPAL_KEY, ApiKeyRing

KEY = "unit-key"
READ_ONLY = "unit-read-only"
BODY = {
    "transaction_id": "t-1",
    "member_id": "m-1",
    "basket": [{"category": "coffee", "quantity": 2, "unit_price": 2.5}],
    "total": 5.0,
}
ANSWER = CheckoutResponse(
    transaction_id="t-1",
    decision_id="d-1",
    member_id="m-1",
    rewards=[],
    moments=["birthday"],
    fallback="personalised",
    model_versions={"affinity": "1", "uplift": "2"},
)
OFFERS = MemberOffersResponse(
    decision_id="d-2",
    member_id="m-1",
    channel="app",
    offers=[],
    fallback="global_popular",
    model_versions={"affinity": "1"},
)


class Inner:
    """The FastAPI app behind the middleware: records what it was handed (and the body)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        messages = []
        if scope["method"] == "POST":
            while True:
                message = await receive()
                messages.append(message)
                if not message.get("more_body", False):
                    break
        self.calls.append({"path": scope["path"], "messages": messages})
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b"fastapi"})


@pytest.fixture
def world(monkeypatch):
    calls: list[tuple] = []

    async def fake_checkout(state, body, dry_run):
        calls.append(("checkout", body, dry_run))
        if body.transaction_id == "conflict":
            raise HTTPException(status_code=409, detail="belongs to another member")
        return ANSWER

    async def fake_offers(state, member_id, channel, k):
        calls.append(("offers", member_id, channel, k))
        return OFFERS

    monkeypatch.setattr(lean, "checkout_answer", fake_checkout)
    monkeypatch.setattr(lean, "offers_for_member", fake_offers)
    state = SimpleNamespace(
        metrics=ApiMetrics(),
        keyring=ApiKeyRing({KEY: ["offers:read", "checkout:write"], READ_ONLY: ["offers:read"]}),
        bundle=SimpleNamespace(current=object()),
    )
    inner = Inner()
    routes = [*checkout.router.routes, *decisions.router.routes]
    return SimpleNamespace(
        app=lean.LeanRoutes(inner, state=state, routes=routes),
        inner=inner,
        state=state,
        calls=calls,
    )


def _call(
    app, method, path, *, query=b"", body=None, key=KEY, chunks=None, ctype=b"application/json"
):
    """One request through the middleware; ``chunks``: the body in several messages, or an
    exception raised by ``receive`` after them. Returns (status, headers, body, scope)."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    parts = chunks if chunks is not None else [raw]
    heads = [(b"content-type", ctype)] if ctype is not None else []
    if key:
        heads.append((b"x-api-key", key.encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": heads,
        "root_path": "",
    }
    if method == "POST" and key == KEY:
        scope[PRINCIPAL_KEY] = ApiKeyRing({KEY: ["offers:read", "checkout:write"]}).authenticate(
            KEY
        )
    queue = list(parts)
    sent: list[dict] = []

    async def receive():
        if not queue:
            return {"type": "http.disconnect"}
        part = queue.pop(0)
        if isinstance(part, Exception):
            raise part
        return {"type": "http.request", "body": part, "more_body": bool(queue)}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body_out = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body_out, scope


def test_a_good_checkout_is_answered_by_the_lean_path(world) -> None:
    status, headers, body, scope = _call(world.app, "POST", "/v1/checkout/rewards", body=BODY)
    assert status == 200 and not world.inner.calls
    assert body == ANSWER.model_dump_json().encode()
    length = str(len(body)).encode()
    assert headers == {b"content-length": length, b"content-type": b"application/json"}
    kind, request, dry_run = world.calls[0]
    assert kind == "checkout" and request.member_id == "m-1" and dry_run is False
    assert request.basket[0].quantity == 2 and request.total == 5.0
    assert scope["route"].path == "/v1/checkout/rewards"  # the metrics' route label
    status, *_ = _call(world.app, "POST", "/v1/checkout/rewards", body=BODY, query=b"dry_run=true")
    assert status == 200 and world.calls[-1][2] is True


@pytest.mark.parametrize(
    "change",
    [
        {"member_id": "a b"},
        {"basket": []},
        {"total": "5"},
        {"extra": 1},
        {"basket": [{"category": "coffee", "quantity": "2", "unit_price": 2.5}]},
    ],
)
def test_a_body_that_does_not_validate_goes_to_fastapi_whole(world, change) -> None:
    raw = json.dumps({**BODY, **change}).encode()
    chunks = [raw[:10], raw[10:20], raw[20:]]
    status, _h, body, _s = _call(world.app, "POST", "/v1/checkout/rewards", chunks=chunks)
    assert (status, body) == (599, b"fastapi") and not world.calls
    (call,) = world.inner.calls
    assert [m["body"] for m in call["messages"]] == chunks  # replayed as received


def test_what_the_lean_path_leaves_to_fastapi(world) -> None:
    path = "/v1/checkout/rewards"
    cases = [
        {"query": b"dry_run=1"},  # FastAPI reads it as true
        {"query": b"dry_run=true&dry_run=false"},  # repeated
        {"key": READ_ONLY},  # 403 from FastAPI
        {"key": None},  # 401
        {"body": b"{not json"},
        {"body": b""},
        {"ctype": b"text/plain"},
        {"ctype": b"application/vnd.x+json"},  # FastAPI reads it as JSON
        {"ctype": None},
    ]
    for case in cases:
        before = len(world.inner.calls)
        status, *_ = _call(world.app, "POST", path, **{"body": BODY, **case})
        assert status == 599 and len(world.inner.calls) == before + 1, case
    assert not world.calls
    status, *_ = _call(world.app, "POST", path, body=BODY, ctype=b"Application/JSON; charset=utf-8")
    assert status == 200 and len(world.calls) == 1
    world.state.bundle.current = None  # models not loaded: FastAPI's 503
    status, *_ = _call(world.app, "POST", path, body=BODY)
    assert status == 599 and len(world.calls) == 1


def test_a_body_refused_while_read_is_refused_by_fastapi(world) -> None:
    refused = HTTPException(status_code=413, detail="too large")
    seen: list[BaseException] = []

    async def inner(scope, receive, send):
        await receive()
        try:
            await receive()
        except HTTPException as exc:
            seen.append(exc)
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    world.app.app = inner
    status, *_ = _call(world.app, "POST", "/v1/checkout/rewards", chunks=[b'{"a":', refused])
    assert status == 413 and seen == [refused] and not world.calls


def test_service_errors_get_the_apps_error_body(world) -> None:
    status, _h, body, _s = _call(
        world.app, "POST", "/v1/checkout/rewards", body={**BODY, "transaction_id": "conflict"}
    )
    assert status == 409
    assert json.loads(body) == {"error": "conflict", "detail": "belongs to another member"}


def test_member_offers(world) -> None:
    path = "/v1/members/m-1/offers"
    status, _h, body, scope = _call(world.app, "GET", path, query=b"channel=email&k=3&x=1")
    assert status == 200 and body == OFFERS.model_dump_json().encode()
    assert world.calls[-1] == ("offers", "m-1", "email", 3)
    assert scope["route"].path == "/v1/members/{member_id}/offers"
    assert scope["path_params"] == {"member_id": "m-1"}
    status, *_ = _call(world.app, "GET", path)
    assert status == 200 and world.calls[-1] == ("offers", "m-1", "app", 5)
    handed = [
        (path, b"k=03"),
        (path, b"k=0"),
        (path, b"k=51"),
        (path, b"channel=fax"),
        (path, b"k=2&k=3"),
        ("/v1/members/a b/offers", b""),
        ("/v1/members/-a/offers", b""),
        ("/v1/members/a\n/offers", b""),
        (f"/v1/members/{'m' * 65}/offers", b""),
        ("/v1/members/m-1/offers/", b""),
    ]
    for p, q in handed:
        before = len(world.calls)
        status, *_ = _call(world.app, "GET", p, query=q)
        assert status == 599 and len(world.calls) == before, (p, q)
    for key in (None, "not-a-key"):
        status, *_ = _call(world.app, "GET", path, key=key)
        assert status == 599
    counted = world.state.metrics.lean.labels
    assert counted(lean.OFFERS_PATH, "lean")._value.get() == 2
    # the two bad keys, and the handed ones but the trailing slash (not this route)
    assert counted(lean.OFFERS_PATH, "fastapi")._value.get() == len(handed) - 1 + 2


def _random_body(rng) -> bytes:
    """A checkout body with random numbers and texts, each field valid 9 times in 10."""

    def pick(valid: list, invalid: list):
        return rng.choice(valid if rng.random() < 0.9 else invalid)

    lines = [
        {
            "category": pick(["coffee", "café", "\U0001f600" * 64, " padded ", "a\\u00e9"],
                             ["\U0001f600" * 65, ""]),
            "sku": pick(["sku-1", " sku-2 ", None], ["a b", 5]),
            "quantity": pick([1, 2.0, 3, 10_000], [10_001, 2.5, -1, 0, "2", True]),
            "unit_price": pick(
                [rng.uniform(0, 100), rng.random() * 1e-9, 1e7, 5, 0.1 + 0.2], [1e7 + 1, "5", -0.5]
            ),
        }
        for _ in range(rng.randint(1, 4))
    ]  # fmt: skip
    total = sum(
        line["quantity"] * line["unit_price"]
        for line in lines
        if all(isinstance(line[k], int | float) for k in ("quantity", "unit_price"))
    )
    body = {
        "transaction_id": pick(["t-1", "x" * 64, " t-2"], ["t 1", "x" * 65]),
        "member_id": "m-1",
        "basket": lines,
        "total": pick([total, total * 1.02, round(total, 2)], [-1.0, "1"]),
        "ts": pick([None, "2026-12-02T10:00:00Z", "2026-12-02 10:00", "2026-12-02T10:00+05:30"],
                   ["yesterday", 1733133600]),
    }  # fmt: skip
    text = json.dumps(body, ensure_ascii=rng.random() < 0.5)
    return text.replace("\\\\u00e9", "\\u00e9").encode()


def test_one_json_validation_reads_bodies_as_fastapi_does() -> None:
    """The lean path's ``model_validate_json`` accepts exactly the bodies FastAPI's
    ``json.loads`` then Python-mode validation accepts, with the same values."""
    import random

    from pydantic import TypeAdapter, ValidationError

    from serving.api.schemas import CheckoutRequest

    fastapi_way = TypeAdapter(CheckoutRequest)
    rng = random.Random(7)
    accepted = 0
    for _ in range(600):
        raw = _random_body(rng)
        try:
            lean_value = CheckoutRequest.model_validate_json(raw)
        except ValidationError:
            lean_value = None
        try:
            fastapi_value = fastapi_way.validate_python(json.loads(raw), from_attributes=True)
        except ValidationError:
            fastapi_value = None
        assert lean_value == fastapi_value, raw
        accepted += lean_value is not None
    assert 50 < accepted < 550  # both kinds were tried
