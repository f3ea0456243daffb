"""Checkout admission with real servers: an overloaded grant writer sheds a checkout at once
with 503 and ``Retry-After``, and the shed request reserves nothing.

The overload is made, not waited for: the test holds the SQLite write lock of the server's
store (``BEGIN IMMEDIATE`` on the file; the server's lock wait is 60 s), so the grant writer's
first group waits in its commit and the next checkouts queue behind it; ``/metrics`` shows the
queue (``offers_checkout_grant_queue``). With ``OFFERS_CHECKOUT_MAX_QUEUE=2`` and two queued,
the next checkout is shed. Two servers, the lean path on and off, get the same requests: the
503 is the same byte for byte (the parity of tests/integration/test_api_lean.py, which cannot
hold this case: it needs its own settings and a held lock). After the lock is released the
admitted checkouts are answered 200, and the store holds their sessions, grants, caps and
budget reservations and nothing of the shed one.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.api import KEY_ALL, SCOPES_ALL, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASKET = [{"category": "grocery", "quantity": 2, "unit_price": 40.0}]
HEADERS = {"X-API-Key": KEY_ALL, "Content-Type": "application/json"}


def _body(tid: str, member: str) -> bytes:
    return json.dumps(
        {"transaction_id": tid, "member_id": member, "basket": BASKET, "total": 80.0}
    ).encode()


def _metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{url}/metrics", headers={"X-API-Key": KEY_ALL}, timeout=30).text
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _until(predicate, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached in {seconds:.0f} s: {what}")


def _rows(db: Path, query: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return sorted(con.execute(query, args).fetchall(), key=repr)


def _store_state(db: Path) -> dict[str, list[tuple]]:
    return {
        "sessions": _rows(db, "SELECT transaction_id, member_id, state FROM checkout_sessions"),
        "grants": _rows(db, "SELECT transaction_id, offer_id, member_id, amount FROM grants"),
        "budgets": _rows(db, "SELECT offer_id, spent FROM budgets"),
        "caps": _rows(db, "SELECT member_id, cap_key, period, used FROM member_caps"),
    }


def _run_side(world, db: Path, lean: str) -> dict:
    """One server: overload it, probe, release; what the test compares and checks."""
    members = world["program"]["members"]
    server = Server(
        world["home"],
        world["program"],
        world["registry"].tracking_uri,
        f"sqlite:///{db}",
        env={
            "OFFERS_API_KEYS": json.dumps({KEY_ALL: SCOPES_ALL}),
            "OFFERS_LEAN_ROUTES": lean,
            "OFFERS_CHECKOUT_MAX_QUEUE": "2",
            "OFFERS_CHECKOUT_QUEUE_WAIT_MS": "60000",  # only the queue bound sheds here
            "OFFERS_STORE_LOCK_WAIT_SECONDS": "60",
            "OFFERS_CHECKOUT_SWEEP_SECONDS": "0",
        },
    ).start()
    out: dict = {}
    try:
        url = server.url
        post = f"{url}/v1/checkout/rewards"
        # the shed member: one a checkout would grant something to (a dry run reserves nothing)
        shed_member = next(
            m
            for m in members[40:]
            if httpx.post(
                post, params={"dry_run": "true"}, content=_body("probe", m), headers=HEADERS
            ).json()["rewards"]
        )
        admitted = [m for m in members[:20] if m != shed_member][:3]
        out["before"] = _store_state(db)
        lock = sqlite3.connect(db, isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")  # the store's write lock: the grant writer waits
        answers: dict[str, httpx.Response] = {}

        def send(tid: str, member: str) -> None:
            answers[tid] = httpx.post(post, content=_body(tid, member), headers=HEADERS, timeout=90)

        threads = []
        try:
            for i, member in enumerate(admitted):
                threads.append(threading.Thread(target=send, args=(f"ok-{i}", member)))
                threads[-1].start()
                if i == 0:  # the first group is in its commit, waiting for the lock
                    _until(
                        lambda: _metric(url, "offers_checkout_grant_oldest_wait_seconds") > 0,
                        "the first reservation waiting in its commit",
                    )
            _until(
                lambda: _metric(url, "offers_checkout_grant_queue") == 2,
                "two reservations queued behind it",
            )
            out["shed"] = httpx.post(
                post, content=_body("shed-1", shed_member), headers=HEADERS, timeout=30
            )
            dry = httpx.post(
                post,
                params={"dry_run": "true"},
                content=_body("shed-dry", shed_member),
                headers=HEADERS,
                timeout=30,
            )
            out["dry_run_while_overloaded"] = dry.status_code
            out["queued_after_shed"] = _metric(url, "offers_checkout_grant_queue")
        finally:
            lock.rollback()
            lock.close()
            for t in threads:
                t.join(90)
        out["admitted"] = {tid: r.status_code for tid, r in answers.items()}
        out["shed_count"] = _metric(url, "offers_checkout_shed_total", 'reason="queue_full"')
        out["shed_session"] = httpx.get(
            f"{url}/v1/checkout/shed-1", headers={"X-API-Key": KEY_ALL}, timeout=30
        ).status_code
        time.sleep(0.5)  # the decision log flushes every 0.05 s in tests
        out["after"] = _store_state(db)
        out["shed_decisions"] = _rows(
            db, "SELECT decision_id FROM decisions WHERE member_id = ?", shed_member
        )
        out["admitted_members"] = admitted
        out["shed_member"] = shed_member
        # the till's retry once the store keeps up: answered, and stored
        retry = httpx.post(post, content=_body("shed-1", shed_member), headers=HEADERS, timeout=30)
        out["retry"] = retry.status_code
        out["retry_session"] = _rows(
            db, "SELECT state FROM checkout_sessions WHERE transaction_id = 'shed-1'"
        )
    finally:
        server.stop()
    return out


def test_an_overloaded_writer_sheds_at_once_and_the_shed_request_reserves_nothing(
    world, tmp_path
) -> None:
    sides = {lean: _run_side(world, tmp_path / f"{lean}.db", lean) for lean in ("true", "false")}
    for lean, out in sides.items():
        shed = out["shed"]
        assert shed.status_code == 503, (lean, shed.text)
        assert shed.headers["retry-after"] == "1"
        assert shed.json() == {
            "error": "unavailable",
            "detail": "checkout overloaded (queue_full: 2 reservations wait for the store); "
            "nothing was reserved, retry",
        }
        assert out["dry_run_while_overloaded"] == 200  # a preview reserves nothing: not shed
        assert out["queued_after_shed"] == 2  # the shed request never joined the queue
        assert out["admitted"] == {"ok-0": 200, "ok-1": 200, "ok-2": 200}, lean
        assert out["shed_count"] == 1.0
        assert out["shed_session"] == 404
        assert out["shed_decisions"] == []
        before, after = out["before"], out["after"]
        # the store changed by the admitted checkouts only
        assert {r[0] for r in after["sessions"]} - {r[0] for r in before["sessions"]} == {
            "ok-0",
            "ok-1",
            "ok-2",
        }
        new_grants = [g for g in after["grants"] if g not in before["grants"]]
        assert new_grants and {g[0] for g in new_grants} <= {"ok-0", "ok-1", "ok-2"}
        shed_member = out["shed_member"]
        assert not any(g[2] == shed_member for g in after["grants"])
        assert not any(c[0] == shed_member for c in after["caps"])
        spent_before, spent_after = dict(before["budgets"]), dict(after["budgets"])
        reserved = sum(g[3] for g in new_grants if g[3] is not None)
        moved = sum(spent_after[o] - spent_before.get(o, 0.0) for o in spent_after)
        assert moved == pytest.approx(reserved, abs=1e-9)
        assert out["retry"] == 200 and out["retry_session"] == [("open",)]
    lean, fast = sides["true"]["shed"], sides["false"]["shed"]
    assert lean.content == fast.content
    heads = [{k: v for k, v in r.headers.items() if k != "date"} for r in (lean, fast)]
    assert heads[0] == heads[1]
