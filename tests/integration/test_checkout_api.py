"""Checkout sessions through real ``offers serve`` / uvicorn processes on SQLite and a real
PostgreSQL: retries, cancels, dry runs, member caps at grant time under concurrency (one
process, ``--workers 2``, two replicas), and recovery after client timeouts and kill -9.

The catalog is the test program's with one checkout offer (``target``: per_member_cap 1,
min_spend 50) valid now and one (``future``) valid only in 2030; every other offer is e-mail
only, and the engine explores every slot (``OFFERS_ENGINE_EXPLORATION__EPSILON=1``: a uniform
pick among the eligible offers), so checkout grants the target whenever the member is eligible
for it: what is tested is the service around the decision, not the models' preferences."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.support.api import KEY_ALL, ROOT, Server, checkout_target, server_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger(__name__)

BASKET = [{"category": "grocery", "quantity": 4, "unit_price": 20.0}]  # lines: 80.0
FUTURE_TS = "2030-06-01T12:00:00"
EXPLORE = "OFFERS_ENGINE_EXPLORATION__EPSILON"


def _body(tid: str, member: str, basket=BASKET, total: float = 80.0, **extra) -> dict:
    return {"transaction_id": tid, "member_id": member, "basket": basket, "total": total, **extra}


def _probe(world: dict, catalog: Path, members: list[str], **kw) -> dict[str, list[str]]:
    """Offers the engine gives each member at checkout, decided in this process on exactly
    what a test server of this catalog decides with (``server_settings``: the same champions,
    snapshot, members' past offer events and engine settings)."""
    from serving.api.bundle import build_bundle
    from serving.api.modelset import DEFAULT_MODELS, ModelHolder
    from serving.engine import DecisionContext
    from serving.loader import lkg_loader

    home, tracking = world["home"], world["registry"].tracking_uri
    loader = lkg_loader(tracking, home / "probe-models")
    models = ModelHolder(DEFAULT_MODELS, loader).reload()
    config = server_settings(home, {**world["program"], "catalog": catalog}, tracking)
    bundle = build_bundle(models, config)
    as_of = pd.Timestamp(kw.get("as_of") or pd.Timestamp.now())
    out = {}
    for m in members:
        d = bundle.decide_one(
            m,
            DecisionContext("checkout", as_of, f"probe-{m}"),
            basket_total=kw.get("total", 80.0),
            exhausted=frozenset(kw.get("exhausted", ())),
            basket=("category:grocery",),  # BASKET's category, folded in as the server does
        )
        out[m] = [x["offer_id"] for x in d["offers"]]
    return out


def _capped_catalog(raw: dict, target: str, future: str, path: Path) -> Path:
    for o in raw["offers"]:
        if o["offer_id"] == target:
            o.update(channels=["email", "checkout"], per_member_cap=1, min_spend=50)
            o.pop("valid_from", None), o.pop("valid_to", None)
        elif o["offer_id"] == future:
            o.update(channels=["checkout"], valid_from="2030-01-01", valid_to="2030-12-31")
            for key in ("min_spend", "per_member_cap", "eligibility"):
                o.pop(key, None)
        else:
            o["channels"] = ["email"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def explore_all():
    """Every slot explores (in the probes of this process and in the servers started)."""
    old = os.environ.get(EXPLORE)
    os.environ[EXPLORE] = "1"
    yield
    if old is None:
        os.environ.pop(EXPLORE, None)
    else:
        os.environ[EXPLORE] = old


@pytest.fixture(scope="module")
def capped(world, explore_all, tmp_path_factory) -> dict:
    members = world["program"]["members"][:200]
    text = Path(world["program"]["catalog"]).read_text()
    offers = yaml.safe_load(text)["offers"]
    best, _ = checkout_target(world, members, 80.0)
    checkout = [o["offer_id"] for o in offers if "checkout" in (o.get("channels") or [])]
    candidates = [best, *[o for o in checkout if o != best]]
    later: list[str] = []
    for target in candidates[:6]:  # an offer most members are eligible for at checkout
        plain = [o["offer_id"] for o in offers if not o.get("surprise") and o["offer_id"] != target]
        for future in plain[:4]:  # and one it would choose in 2030, once valid
            path = _capped_catalog(
                yaml.safe_load(text), target, future, tmp_path_factory.mktemp("capped") / "c.yaml"
            )
            now = _probe(world, path, members)
            chosen = [m for m in members if target in now[m]]
            if len(chosen) < 15:
                break  # another target
            in_2030 = _probe(world, path, chosen, as_of=FUTURE_TS, exhausted=[target])
            later = [m for m in chosen if future in in_2030[m]]
            if later:
                break
        if later:
            break
    assert len(chosen) >= 15, f"probe: {target} chosen at checkout for {len(chosen)} of 200"
    assert later, f"probe: {future} is never chosen in 2030 (the client-ts test needs one)"
    assert all(future not in now[m] for m in members), f"{future} is not valid now"
    return {
        "target": target,
        "future": future,
        "members": chosen,
        "future_members": later,
        "program": {**world["program"], "catalog": path},
    }


def _server(world, capped, db_url: str, workers: int = 1) -> Server:
    return Server(
        world["home"], capped["program"], world["registry"].tracking_uri, db_url, workers
    ).start()


def _store(url: str):
    from serving.store import open_store

    return open_store(url, migrate_schema=False)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('checkout-db') / 'offers.db'}"


@pytest.fixture(scope="module")
def srv(world, capped, sqlite_url):
    server = _server(world, capped, sqlite_url)
    yield server
    server.stop()


# -- sessions -------------------------------------------------------------------------------
def test_the_server_grants_the_target_to_every_member_the_probe_chose(srv, capped) -> None:
    """What the tests below rely on: the server decides as the in-process probe did. Every
    chosen member gets the target in a dry run (which reserves nothing). A probe deciding on
    other inputs than the server's (it once decided without the members' past offer events,
    so members who had already received the target were chosen and then refused by the server
    at per_member_cap 1) fails here, naming the members, before the tests that use them."""
    target = capped["target"]
    refused = []
    with srv.client() as c:
        for i, member in enumerate(capped["members"]):
            r = c.post(
                "/v1/checkout/rewards", params={"dry_run": "true"}, json=_body(f"pr-{i}", member)
            )
            assert r.status_code == 200, r.text
            if target not in [x["offer_id"] for x in r.json()["rewards"]]:
                refused.append((i, member))
    assert not refused, f"the server does not grant {target} to (position, member) {refused}"


def test_retry_returns_the_stored_answer_and_cancel_restores_budget_and_cap(
    srv, capped, sqlite_url
) -> None:
    target, member = capped["target"], capped["members"][0]
    store = _store(sqlite_url)
    try:
        spent0 = store.budget(target)["spent"]
        with srv.client() as c:
            first = c.post("/v1/checkout/rewards", json=_body("s-1", member))
            assert first.status_code == 200, first.text
            out = first.json()
            assert [x["offer_id"] for x in out["rewards"]] == [target]
            assert (out["state"], out["transaction_id"], out["dropped"]) == ("open", "s-1", [])
            spent1 = store.budget(target)["spent"]
            assert spent1 > spent0 and store.cap_usage(member, "all") == {f"offer:{target}": 1}
            for _ in range(3):  # the till retries: same answer, nothing new reserved
                again = c.post("/v1/checkout/rewards", json=_body("s-1", member))
                assert again.status_code == 200
                assert again.json()["decision_id"] == out["decision_id"]
                assert again.json()["rewards"] == out["rewards"]
            assert store.budget(target)["spent"] == spent1
            assert store.grant_counts()[target] == {"granted": 1}
            other = c.post("/v1/checkout/rewards", json=_body("s-1", capped["members"][1]))
            assert other.status_code == 409 and "'s-1'" in other.json()["detail"]
            # ten more purchases: the cap-1 offer is never granted again
            for i in range(10):
                r = c.post("/v1/checkout/rewards", json=_body(f"s-more-{i}", member))
                assert r.status_code == 200, r.text
                assert target not in [x["offer_id"] for x in r.json()["rewards"]]
            assert store.grant_counts()[target] == {"granted": 1}
            # states and illegal transitions
            r = c.post("/v1/checkout/s-1/cancel", json={"offer_ids": [target]})
            assert r.status_code == 409 and "is open" in r.json()["detail"]
            assert c.post("/v1/checkout/s-1/close").json()["state"] == "closed"
            assert c.post("/v1/checkout/s-1/close").json()["state"] == "closed"
            r = c.post("/v1/checkout/s-1/cancel", json={"offer_ids": ["not-granted"]})
            assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.offer_ids"
            r = c.post("/v1/checkout/s-1/cancel")
            assert r.status_code == 200, r.text
            assert (r.json()["state"], r.json()["released"]) == ("cancelled", [target])
            assert c.post("/v1/checkout/s-1/cancel").json()["released"] == []  # idempotent
            r = c.post("/v1/checkout/s-1/close")
            assert r.status_code == 409 and "is cancelled" in r.json()["detail"]
            r = c.post("/v1/checkout/rewards", json=_body("s-1", member))
            assert r.status_code == 409 and "cancelled" in r.json()["detail"]
            assert c.get("/v1/checkout/s-1").json()["state"] == "cancelled"
            assert c.post("/v1/checkout/nope/cancel").status_code == 404
            assert c.post("/v1/checkout/nope/close").status_code == 404
            # budget and cap exactly as before: the offer can be granted again
            assert store.budget(target)["spent"] == spent0
            assert store.cap_usage(member, "all") == {f"offer:{target}": 0}
            r = c.post("/v1/checkout/rewards", json=_body("s-2", member))
            assert [x["offer_id"] for x in r.json()["rewards"]] == [target]
    finally:
        store.close()


def test_dry_run_reserves_and_logs_nothing(srv, capped, sqlite_url) -> None:
    target, member = capped["target"], capped["members"][2]
    store = _store(sqlite_url)
    try:
        before = (store.budget(target)["spent"], store.grant_counts())
        with srv.client() as c:
            r = c.post(
                "/v1/checkout/rewards", params={"dry_run": "true"}, json=_body("d-1", member)
            )
            assert r.status_code == 200, r.text
            preview = r.json()
            assert preview["dry_run"] is True and preview["state"] is None
            assert [x["offer_id"] for x in preview["rewards"]] == [target]
            assert c.get("/v1/checkout/d-1").status_code == 404
            time.sleep(0.5)  # the decision log flushes every 0.05 s in these servers
            assert store.get_decision(preview["decision_id"]) is None
            assert (store.budget(target)["spent"], store.grant_counts()) == before
            real = c.post("/v1/checkout/rewards", json=_body("d-1", member)).json()
            assert [x["offer_id"] for x in real["rewards"]] == [target]
    finally:
        store.close()


def test_checkout_rules_are_the_servers(srv, capped, sqlite_url) -> None:
    """Issue 17 item 2: checkout channels only, server time, min_spend on the lines, total."""
    future = capped["future"]
    members = capped["members"]
    with srv.client() as c:
        r = c.post("/v1/checkout/rewards", json=_body("r-1", members[3], channel="email"))
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.channel"
        r = c.post("/v1/checkout/rewards", json=_body("r-2", members[3], total=1e7))
        assert r.status_code == 422
        (err,) = r.json()["detail"]
        assert err["field"] == "body.total" and "10000000.00" in err["reason"]
        assert "80.00" in err["reason"]
        small = [{"category": "grocery", "quantity": 1, "unit_price": 10.0}]
        r = c.post("/v1/checkout/rewards", json=_body("r-3", members[3], small, total=10.0))
        assert r.status_code == 200 and r.json()["rewards"] == []  # min_spend 50 > 10
        # within 1% of the lines' sum: accepted, and decided on the lines. The same basket with
        # the exact total (a dry run, which changes nothing) gets the same rewards. (Compared
        # with the server's own answer, not the in-process probe's target: the probe and the
        # server can differ for a member with surprise moments, which made this line flaky.)
        exact = c.post(
            "/v1/checkout/rewards", params={"dry_run": "true"}, json=_body("r-4", members[3])
        )
        assert exact.status_code == 200, exact.text
        r = c.post("/v1/checkout/rewards", json=_body("r-4", members[3], total=80.5))
        assert r.status_code == 200, r.text
        offers = [x["offer_id"] for x in r.json()["rewards"]]
        assert offers == [x["offer_id"] for x in exact.json()["rewards"]]
        who = capped["future_members"][0]
        r = c.post("/v1/checkout/rewards", json=_body("r-5", who, ts=FUTURE_TS))
        assert r.status_code == 200
        assert future not in [x["offer_id"] for x in r.json()["rewards"]]
    store = _store(sqlite_url)
    try:
        assert str(store.get_session("r-5")["client_ts"]) == "2030-06-01 12:00:00"
    finally:
        store.close()


# -- caps at grant time under concurrency ---------------------------------------------------
def _burst(
    url: str,
    bodies: list[dict],
    timeout: float | httpx.Timeout = 120.0,
    threads: int = 100,
    retries_503: int = 20,
) -> list:
    """POST every body concurrently; a 503 (store busy, nothing reserved) is sent again."""
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(
        base_url=url, headers={"X-API-Key": KEY_ALL}, timeout=timeout, limits=limits
    ) as c:

        def one(body: dict):
            for _ in range(retries_503 + 1):  # the till's retry: same transaction id
                try:
                    r = c.post("/v1/checkout/rewards", json=body)
                except httpx.HTTPError as exc:
                    return exc
                if r.status_code != 503:
                    return r
                time.sleep(float(r.headers.get("Retry-After", "1")) / 4)
            return r

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(one, bodies))


@pytest.mark.parametrize("workers", [1, 2])
def test_100_concurrent_checkouts_of_one_member_grant_a_cap_1_offer_once(
    world, capped, database_url, workers
) -> None:
    target, member = capped["target"], capped["members"][4]
    srv = _server(world, capped, database_url, workers)
    try:
        responses = _burst(srv.url, [_body(f"c-{i}", member) for i in range(100)])
        dupes = _burst(srv.url, [_body("dup", capped["members"][5]) for _ in range(30)])
    finally:
        srv.stop()
    assert [r.status_code for r in responses] == [200] * 100
    granted = [x["offer_id"] for r in responses for x in r.json()["rewards"]]
    assert granted.count(target) == 1
    assert [r.status_code for r in dupes] == [200] * 30
    assert len({r.json()["decision_id"] for r in dupes}) == 1
    store = _store(database_url)
    try:
        assert store.grant_counts()[target] == {"granted": 2}  # member 4 once, member 5 once
        assert store.cap_usage(member, "all") == {f"offer:{target}": 1}
    finally:
        store.close()


def test_two_replicas_sharing_the_store_grant_a_cap_1_offer_once(
    world, capped, database_url
) -> None:
    target, member = capped["target"], capped["members"][6]
    a = _server(world, capped, database_url)
    try:
        b = _server(world, capped, database_url)
    except Exception:
        a.stop()
        raise
    bodies = [_body(f"p-{i}", member) for i in range(100)]
    shared = [_body(f"s-{i}", capped["members"][7 + i % 5]) for i in range(25)]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            ra, rb = pool.map(
                lambda x: _burst(*x),
                [(a.url, bodies[::2] + shared), (b.url, bodies[1::2] + shared)],
            )
    finally:
        a.stop()
        b.stop()
    everything = ra + rb
    bad = [r.text if isinstance(r, httpx.Response) else repr(r) for r in everything]
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in everything), [
        b for b, r in zip(bad, everything, strict=True) if getattr(r, "status_code", 0) != 200
    ][:3]
    granted = [x["offer_id"] for r in ra[:50] + rb[:50] for x in r.json()["rewards"]]
    assert granted.count(target) == 1
    for x, y in zip(ra[50:], rb[50:], strict=True):  # the same transaction on both replicas
        assert x.json()["decision_id"] == y.json()["decision_id"]
        assert x.json()["rewards"] == y.json()["rewards"]
    store = _store(database_url)
    try:
        assert store.cap_usage(member, "all") == {f"offer:{target}": 1}
        shared_grants = sum(1 for r in ra[50:] for x in r.json()["rewards"])
        assert sum(store.grant_counts()[target].values()) == 1 + shared_grants
    finally:
        store.close()


# -- recovery: reserved == delivered + released ---------------------------------------------
def _ledger(url: str) -> tuple[dict, dict, dict]:
    """Per offer: grant rows (reserved), released rows, and budget spent vs the grants kept."""
    from sqlalchemy import func, select

    from serving.store.tables import budgets, grants

    store = _store(url)
    try:
        with store.engine.connect() as c:
            rows = c.execute(
                select(
                    grants.c.offer_id, grants.c.state, func.count(), func.sum(grants.c.amount)
                ).group_by(grants.c.offer_id, grants.c.state)
            ).all()
            spent = dict(c.execute(select(budgets.c.offer_id, budgets.c.spent)).all())
    finally:
        store.close()
    reserved, released, kept = Counter(), Counter(), Counter()
    for offer, state, n, amount in rows:
        reserved[offer] += n
        if state in ("released", "expired"):
            released[offer] += n
        else:
            kept[offer] += amount or 0.0
    for offer, amount in kept.items():
        assert spent[offer] == pytest.approx(amount), f"{offer}: budget spent != grants kept"
    return reserved, released, spent


def _sweep(url: str) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "offers", "sessions", "sweep", "--store", url,
         "--open-seconds", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _close_all(url: str, tids: list[str]) -> None:
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY_ALL}, timeout=60) as c:
        for tid in tids:
            assert c.post(f"/v1/checkout/{tid}/close").status_code == 200


def _delivered(responses: dict[str, dict]) -> Counter:
    return Counter(x["offer_id"] for out in responses.values() for x in out["rewards"])


def test_client_timeouts_then_retries_and_the_sweep_balance_every_budget(
    world, capped, database_url
) -> None:
    members = capped["members"]
    bodies = [_body(f"to-{i}", members[i % len(members)]) for i in range(300)]
    srv = _server(world, capped, database_url)
    try:
        # the request is sent in full, the answer is given up on after 20 ms: with 300 at once
        # most answers never reach the till, on a quiet machine too
        lost_answers = httpx.Timeout(10.0, read=0.02)
        first = _burst(srv.url, bodies, timeout=lost_answers, threads=300)
        got = {b["transaction_id"]: r.json() for b, r in zip(bodies, first, strict=True)
               if isinstance(r, httpx.Response) and r.status_code == 200}  # fmt: skip
        lost = [b for b in bodies if b["transaction_id"] not in got]
        retried = lost[::2]  # the till retries half; the other half never comes back
        again = _burst(srv.url, retried)
        assert all(r.status_code == 200 for r in again)
        got.update({b["transaction_id"]: r.json() for b, r in zip(retried, again, strict=True)})
        _close_all(srv.url, list(got))
    finally:
        srv.stop()
    swept = _sweep(database_url)
    reserved, released, _ = _ledger(database_url)
    delivered = _delivered(got)
    assert sum(reserved.values()) > 0 and len(lost) > 0, "no timeouts: raise the burst"
    log.info(
        "timeouts: %d of 300 lost, %d retried; reserved %s delivered %s released %s",
        len(lost), len(retried), dict(reserved), dict(delivered), dict(released),
    )  # fmt: skip
    for offer in reserved:
        assert reserved[offer] == delivered[offer] + released[offer], offer
    assert swept["abandoned_grants_released"] == sum(released.values())


def test_kill_9_during_a_burst_then_retries_balance_every_budget(
    world, capped, database_url
) -> None:
    import threading

    members = capped["members"]
    bodies = [_body(f"k-{i}", members[i % len(members)]) for i in range(300)]
    srv = _server(world, capped, database_url)
    results: list = []
    sender = threading.Thread(target=lambda: results.extend(_burst(srv.url, bodies, 30.0, 300)))
    sender.start()
    store = _store(database_url)
    try:  # kill once the burst has committed some sessions, before it has finished
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not store.grant_counts():
            time.sleep(0.01)
    finally:
        store.close()
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    sender.join(120)
    got = {b["transaction_id"]: r.json() for b, r in zip(bodies, results, strict=True)
           if isinstance(r, httpx.Response) and r.status_code == 200}  # fmt: skip
    lost = [b for b in bodies if b["transaction_id"] not in got]
    assert lost, "the kill came after the burst: nothing to recover"
    before_restart, _, _ = _ledger(database_url)
    assert sum(before_restart.values()) > 0, "the kill came before any commit"
    srv = _server(world, capped, database_url)  # same store
    try:
        again = _burst(srv.url, lost)
        assert all(r.status_code == 200 for r in again), [r.text for r in again][:3]
        got.update({b["transaction_id"]: r.json() for b, r in zip(lost, again, strict=True)})
        _close_all(srv.url, list(got))
    finally:
        srv.stop()
    swept = _sweep(database_url)
    reserved, released, _ = _ledger(database_url)
    delivered = _delivered(got)
    log.info(
        "kill -9: %d of 300 unanswered; reserved before restart %s, after %s, delivered %s, "
        "released %s", len(lost), dict(before_restart), dict(reserved), dict(delivered),
        dict(released),
    )  # fmt: skip
    assert swept["abandoned_sessions_cancelled"] == 0  # every transaction came back
    for offer in reserved:
        assert reserved[offer] == delivered[offer] + released[offer], offer
        assert reserved[offer] >= before_restart[offer]
