"""The lean path (``serving/api/lean.py``) answers checkout and member offers exactly as the
FastAPI routes do. Two real servers on the same models and catalog, each with its own store,
one with the lean path and one without (``OFFERS_LEAN_ROUTES=false``), get the same requests
in the same order, good and bad (wrong types, too-long lists and strings, missing keys, bad
JSON, other content types, repeated query parameters, missing or wrong keys and scopes, a body
over the limit): status, headers and body are the same byte for byte (member offers: but the
decision id, which is per process by design). Afterwards the request metrics, the decision log,
the sessions and the grants of the two servers are the same.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.api import KEY_ALL, KEY_READ, SCOPES_ALL, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY_CHECKOUT = "test-key-checkout-only"
KEYS = {KEY_ALL: SCOPES_ALL, KEY_READ: ["offers:read"], KEY_CHECKOUT: ["checkout:write"]}
BASKET = [{"category": "grocery", "quantity": 2, "unit_price": 40.0}]
SIDES = ("lean", "fastapi")


@pytest.fixture(scope="module")
def pair(world, tmp_path_factory):
    db = tmp_path_factory.mktemp("lean-db")
    common = {
        "OFFERS_API_KEYS": json.dumps(KEYS),
        # member offers' exploration draws are keyed on a per-process request id
        "OFFERS_ENGINE_EXPLORATION__EPSILON": "0",
        "OFFERS_MAX_BODY_BYTES": "100000",
    }
    servers: dict[str, Server] = {}
    try:
        for side, lean in zip(SIDES, ("true", "false"), strict=True):
            servers[side] = Server(
                world["home"],
                world["program"],
                world["registry"].tracking_uri,
                f"sqlite:///{db / side}.db",
                env={**common, "OFFERS_LEAN_ROUTES": lean},
            ).start()
        yield {**servers, "db": db}
    finally:
        for server in servers.values():
            server.stop()


def _send(pair, method: str, path: str, key: str | None = KEY_ALL, headers=None, **kw) -> dict:
    """The same request to both servers (lean first): {side: response}. A callable
    ``content`` is called once per server (a generator: a chunked body)."""
    answers = {}
    for side in SIDES:
        sent = dict(headers or {})
        if key is not None:
            sent.setdefault("X-API-Key", key)
        content = kw.get("content")
        args = {**kw, "content": content() if callable(content) else content}
        with httpx.Client(base_url=pair[side].url, timeout=60) as client:
            answers[side] = client.request(method, path, headers=sent, **args)
    return answers


def _same(answers: dict, ignore: tuple[str, ...] = ()) -> httpx.Response:
    lean, fast = answers["lean"], answers["fastapi"]
    assert lean.status_code == fast.status_code, (lean.text, fast.text)
    heads = [{k: v for k, v in r.headers.items() if k != "date"} for r in (lean, fast)]
    for h in heads:  # a redirect names its own server
        if "location" in h:
            h["location"] = urlsplit(h["location"])._replace(scheme="", netloc="").geturl()
    if ignore:  # the bodies differ only in these top-level fields
        bodies = [{k: v for k, v in r.json().items() if k not in ignore} for r in (lean, fast)]
        assert bodies[0] == bodies[1]
        for h in heads:
            h.pop("content-length")
    else:
        assert lean.content == fast.content
    assert heads[0] == heads[1]
    return lean


def _checkout(tid: str, member: str, **fields) -> dict:
    return {"transaction_id": tid, "member_id": member, "basket": BASKET, "total": 80.0, **fields}


def _post(
    pair,
    body,
    key: str | None = KEY_ALL,
    params=None,
    headers=None,
    content_type="application/json",
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    answers = _send(
        pair, "POST", "/v1/checkout/rewards", key, content=content, params=params, headers=headers
    )
    return _same(answers)


def test_checkout_same_answers_good_and_bad(pair, world) -> None:
    members = world["program"]["members"]
    granted = 0
    for i, member in enumerate(members[:8]):
        r = _post(pair, _checkout(f"lean-{i}", member))
        assert r.status_code == 200, r.text
        granted += len(r.json()["rewards"])
    assert granted > 0, "no reward granted: the comparison would not cover grants"
    good = {
        "retry": (_checkout("lean-0", members[0]), None, None),
        "dry run": (_checkout("lean-d1", members[1]), {"dry_run": "true"}, None),
        "dry run false": (_checkout("lean-d2", members[2]), {"dry_run": "false"}, None),
        "dry run 1 (FastAPI reads it)": (_checkout("lean-d3", members[3]), {"dry_run": "1"}, None),
        "other fields": (
            _checkout(
                "lean-x1",
                members[9],
                basket=[
                    {"sku": "sku-1", "category": "coffee", "quantity": 1.0, "unit_price": 5},
                    {"category": "grocery", "quantity": 3, "unit_price": 10.5},
                ],
                total=36.5,
                channel="store",
                store_id="store-7",
                ts="2026-12-02T10:00:00+01:00",
            ),
            None,
            None,
        ),
        "ids with spaces around": (_checkout(" lean-x2 ", f" {members[10]} "), None, None),
        "unknown member": (_checkout("lean-x3", "walk-in-1"), None, None),
        "charset": (_checkout("lean-x4", members[11]), None, {"Content-Type": "application/json; charset=utf-8"}),  # noqa: E501
        "+json type": (_checkout("lean-x5", members[12]), None, {"Content-Type": "application/vnd.x+json"}),  # noqa: E501
    }  # fmt: skip
    good["dry_run twice (the last counts)"] = (
        _checkout("lean-d4", members[4]),
        [("dry_run", "true"), ("dry_run", "false")],
        None,
    )
    for name, (body, params, headers) in good.items():
        r = _post(pair, body, params=params, headers=headers)
        assert r.status_code == 200, (name, r.text)
    m = members[20]
    bad = {
        "dry_run maybe": (_checkout("b-1", m), {"dry_run": "maybe"}),
        "conflict": (_checkout("lean-0", members[1]), None),
        "missing member_id": ({k: v for k, v in _checkout("b-3", m).items() if k != "member_id"}, None),  # noqa: E501
        "member_id a number": (_checkout("b-4", 5), None),
        "member_id empty": (_checkout("b-5", ""), None),
        "member_id too long": (_checkout("b-6", "m" * 65), None),
        "member_id pattern": (_checkout("b-7", "a b"), None),
        "basket empty": (_checkout("b-8", m, basket=[]), None),
        "basket too long": (_checkout("b-9", m, basket=BASKET * 501, total=80.0 * 501), None),
        "basket text": (_checkout("b-10", m, basket="x"), None),
        "quantity text": (_checkout("b-11", m, basket=[{**BASKET[0], "quantity": "2"}]), None),
        "quantity 0": (_checkout("b-12", m, basket=[{**BASKET[0], "quantity": 0}]), None),
        "quantity 2.5": (_checkout("b-13", m, basket=[{**BASKET[0], "quantity": 2.5}]), None),
        "quantity true": (_checkout("b-14", m, basket=[{**BASKET[0], "quantity": True}]), None),
        "price text": (_checkout("b-15", m, basket=[{**BASKET[0], "unit_price": "40"}]), None),
        "price negative": (_checkout("b-16", m, basket=[{**BASKET[0], "unit_price": -1}]), None),
        "total mismatch": (_checkout("b-17", m, total=81.0), None),
        "total true": (_checkout("b-18", m, total=True), None),
        "extra field": (_checkout("b-19", m, coupon="x"), None),
        "channel email": (_checkout("b-20", m, channel="email"), None),
        "ts a number": (_checkout("b-21", m, ts=1733133600), None),
        "ts text": (_checkout("b-22", m, ts="yesterday"), None),
        "store_id too long": (_checkout("b-23", m, store_id="s" * 65), None),
        "category too long": (_checkout("b-24", m, basket=[{**BASKET[0], "category": "c" * 65}]), None),  # noqa: E501
        "not json": (b"{not json", None),
        "empty": (b"", None),
        "a list": (b"[]", None),
        "null": (b"null", None),
        "NaN": (json.dumps(_checkout("b-25", m, total=float("nan"))).encode(), None),
        "huge integer": (json.dumps(_checkout("b-26", m)).replace('"quantity": 2', '"quantity": ' + "9" * 5000).encode(), None),  # noqa: E501
        "lone surrogate": (json.dumps(_checkout("b-27", m)).replace('"grocery"', '"\\udc00x"').encode(), None),  # noqa: E501
        "duplicate key": (json.dumps(_checkout("b-28", m))[:-1].encode() + b', "member_id": "a b"}', None),  # noqa: E501
    }  # fmt: skip
    for name, (body, params) in bad.items():
        r = _post(pair, body, params=params)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    # FastAPI's json.loads reads a byte order mark and UTF-16: the lean path leaves them to it
    for encoded in (
        b"\xef\xbb\xbf" + json.dumps(_checkout("b-29", m)).encode(),
        json.dumps(_checkout("b-30", m)).encode("utf-16"),
    ):
        assert _post(pair, encoded).status_code == 200
    plain = json.dumps(_checkout("b-40", m)).encode()
    for content_type in ("text/plain", "", None):  # None: no content-type header
        r = _post(pair, plain, content_type=content_type)
        assert r.status_code == 422, (content_type, r.text)
    assert _post(pair, plain, key=None).status_code == 401
    assert _post(pair, plain, key="not-a-key").status_code == 401
    assert _post(pair, plain, key=KEY_READ).status_code == 403
    bearer = {"Authorization": f"Bearer {KEY_CHECKOUT}"}
    assert _post(pair, _checkout("b-41", m), key=None, headers=bearer).status_code == 200
    # over the body limit (100,000 bytes): declared, and counted while a chunked body arrives
    big = json.dumps(_checkout("b-42", m, store_id="x" * 150_000)).encode()
    assert _post(pair, big).status_code == 413
    answers = _send(
        pair,
        "POST",
        "/v1/checkout/rewards",
        content=lambda: (big[i : i + 8192] for i in range(0, len(big), 8192)),
        headers={"Content-Type": "application/json"},
    )
    assert _same(answers).status_code == 413


def test_member_offers_same_answers_good_and_bad(pair, world) -> None:
    members = world["program"]["members"]

    def get(path: str, key: str | None = KEY_ALL, params=None, ignore=()) -> httpx.Response:
        return _same(_send(pair, "GET", path, key, params=params), ignore)

    for member in members[:6]:
        r = get(
            f"/v1/members/{member}/offers",
            params={"channel": "app", "k": 3},
            ignore=("decision_id",),
        )
        assert r.status_code == 200 and r.json()["member_id"] == member
    good = [
        (members[6], None),
        (members[7], {"k": "50", "channel": "email"}),
        (members[8], {"k": "1", "foo": "bar"}),
        (members[9], {"k": "03"}),  # FastAPI reads it as 3
        ("walk-in-2", {"channel": "web"}),
    ]  # fmt: skip
    for member, params in good:
        r = get(f"/v1/members/{member}/offers", params=params, ignore=("decision_id",))
        assert r.status_code == 200, r.text
    m = members[10]
    for params in ({"k": "0"}, {"k": "51"}, {"k": "abc"}, {"channel": "fax"}, {"k": ""}):
        assert get(f"/v1/members/{m}/offers", params=params).status_code == 422, params
    r = get(f"/v1/members/{m}/offers", params=[("k", "2"), ("k", "4")], ignore=("decision_id",))
    assert r.status_code == 200 and len(r.json()["offers"]) <= 4
    for bad_id in ("a%20b", "m" * 65, "-abc", "a%0A"):
        assert get(f"/v1/members/{bad_id}/offers").status_code == 422, bad_id
    assert get(f"/v1/members/{m}/offers/").status_code in (307, 404)
    assert get(f"/v1/members/{m}/offers", key=None).status_code == 401
    assert get(f"/v1/members/{m}/offers", key="not-a-key").status_code == 401
    assert get(f"/v1/members/{m}/offers", key=KEY_CHECKOUT).status_code == 403
    ok = get(f"/v1/members/{m}/offers", key=KEY_READ, ignore=("decision_id",))
    assert ok.status_code == 200


def _rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return sorted(con.execute(query).fetchall(), key=repr)


def test_metrics_decision_log_and_grants_are_the_same(pair) -> None:
    """After the two tests above (run first in this module)."""

    def requests_metrics(side: str) -> list[str]:
        text = httpx.get(f"{pair[side].url}/metrics", headers={"X-API-Key": KEY_ALL}).text
        return sorted(
            line
            for line in text.splitlines()
            if line.startswith(("offers_http_requests_total", "offers_decisions_total"))
        )

    def answered_by(side: str) -> dict[str, float]:
        text = httpx.get(f"{pair[side].url}/metrics", headers={"X-API-Key": KEY_ALL}).text
        return {
            line[line.index("{") + 1 : line.rindex("}")]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("offers_lean_path_requests_total{")
        }

    counts = answered_by("lean")
    for route in ("/v1/checkout/rewards", "/v1/members/{member_id}/offers"):
        # most requests above are good ones: the lean path answered them
        assert counts[f'answered_by="lean",route="{route}"'] >= 10, counts
        assert counts[f'answered_by="fastapi",route="{route}"'] >= 5, counts
    assert not any(answered_by("fastapi").values())  # lean path off: nothing counted
    lean, fast = requests_metrics("lean"), requests_metrics("fastapi")
    assert any('route="/v1/checkout/rewards"' in line for line in lean)
    assert any('route="/v1/members/{member_id}/offers"' in line for line in lean)
    assert lean == fast
    time.sleep(0.5)  # the decision logs flush every 0.05 s
    queries = {
        "decisions": "SELECT member_id, channel, offers, fallback, held_out FROM decisions",
        "sessions": "SELECT transaction_id, member_id, decision_id, state, response "
        "FROM checkout_sessions",
        "grants": "SELECT transaction_id, offer_id, member_id, amount, caps, state FROM grants",
        "budgets": "SELECT offer_id, spent FROM budgets",
        "caps": "SELECT member_id, cap_key, period, used FROM member_caps",
    }
    for name, query in queries.items():
        rows = {side: _rows(pair["db"] / f"{side}.db", query) for side in SIDES}
        assert rows["lean"], f"no {name} stored"
        assert rows["lean"] == rows["fastapi"], name
