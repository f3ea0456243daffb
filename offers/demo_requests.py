"""Sample requests of ``offers demo``: what e-mail tooling, a checkout and a feedback client send,
each response printed compactly (one JSON line, long explanations shortened).

Plain ``urllib`` (no client library needed). Event ids carry a per-run prefix so a re-run on the
same store stores its events again; the duplicate is the same id sent twice within one run.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = ["DemoClient", "Reply", "SampleResults", "run_samples"]

COLD_MEMBER = "walk-in-new-member"
CHECKOUT_MOMENTS = {"birthday", "milestone"}  # moments with a surprise offer at checkout
_MAX_TEXT = 60


@dataclass
class Reply:
    """One HTTP exchange: status (0: no answer), decoded body (JSON, or a list for NDJSON) and
    wall time."""

    method: str
    path: str
    status: int
    body: Any
    ms: float


class DemoClient:
    """Tiny JSON client for the demo server with the demo key in ``X-API-Key``."""

    def __init__(self, base_url: str, key: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if auth:
            headers["X-API-Key"] = self.key
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(), exc.headers.get("content-type", "")
        except OSError as exc:  # no answer: status 0, the error as the body
            ms = 1000 * (time.perf_counter() - t0)
            return Reply(method, path, 0, {"error": f"{type(exc).__name__}: {exc}"}, ms)
        ms = 1000 * (time.perf_counter() - t0)
        text = raw.decode("utf-8", "replace")
        if "ndjson" in ctype:
            parsed: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif "json" in ctype:
            parsed = json.loads(text or "null")
        else:
            parsed = text
        return Reply(method, path, status, parsed, ms)


def _short(value: Any) -> Any:
    """The body with long strings cut and per-offer reasons dropped (compact printing)."""
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items() if k != "reasons"}
    if isinstance(value, list):
        return [_short(v) for v in value]
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[: _MAX_TEXT - 1] + "…"
    if isinstance(value, float):
        return round(value, 4)
    return value


def show(console: Console, who: str, reply: Reply) -> None:
    """``who  METHOD path -> status (ms)`` then the body as compact JSON, one line per
    NDJSON line; lines are never wrapped (``soft_wrap``) so they stay valid JSON."""
    good = 200 <= reply.status < 300
    style = "green" if good else "red"
    head = Text.assemble(
        (f"{who:<16}", "bold cyan"),
        f"{reply.method} {reply.path} -> ",
        (str(reply.status), style),
        f" ({reply.ms:.0f} ms)",
    )
    console.print(head, soft_wrap=True)
    bodies = reply.body if isinstance(reply.body, list) else [reply.body]
    for body in bodies:
        line = json.dumps(_short(body), separators=(",", ":"), ensure_ascii=False)
        console.print(Text("  " + line, style="dim" if good else "red"), soft_wrap=True)


@dataclass
class SampleResults:
    """What the samples observed (for the closing summary and the smoke test)."""

    replies: list[Reply] = field(default_factory=list)
    model_versions: dict[str, str] = field(default_factory=dict)
    moment_member: str | None = None
    duplicate_stored_once: bool = False

    @property
    def ok(self) -> bool:
        return all(200 <= r.status < 300 for r in self.replies)


def _find_moment_member(client: DemoClient, members: list[str], tries: int) -> Reply | None:
    """The moments reply of a member among the first ``tries`` of ``members`` with a moment now:
    the first whose moment has a checkout surprise (birthday, milestone), else the first with
    any moment."""
    first = None
    for member in members[:tries]:
        reply = client.request("GET", f"/v1/members/{urllib.parse.quote(member)}/moments")
        names = {m["name"] for m in reply.body.get("moments", [])} if reply.status == 200 else set()
        if names & CHECKOUT_MOMENTS:
            return reply
        if names and first is None:
            first = reply
    return first


def run_samples(
    client: DemoClient, members: list[str], console: Console, run_id: str | None = None
) -> SampleResults:
    """Send the sample requests for ``members`` (ids known to the snapshot) and print each."""
    run_id = run_id or uuid.uuid4().hex[:8]
    res = SampleResults()

    def call(who: str, method: str, path: str, body: Any = None, auth: bool = True) -> Reply:
        reply = client.request(method, path, body, auth=auth)
        res.replies.append(reply)
        show(console, who, reply)
        return reply

    call("ops", "GET", "/healthz", auth=False)
    call("ops", "GET", "/readyz", auth=False)

    console.rule("e-mail tooling: tonight's send")
    batch = call(
        "e-mail tooling",
        "POST",
        "/v1/offers/batch",
        {"member_ids": members[:4], "channel": "email", "k": 3},
    )
    if batch.status == 200 and batch.body:
        res.model_versions = dict(batch.body[0]["model_versions"])

    console.rule("app: one member's offers and moments")
    member = members[0]
    offers = call("app", "GET", f"/v1/members/{member}/offers?channel=app&k=3")
    moment = _find_moment_member(client, members[1:], tries=100)
    if moment is not None:
        res.replies.append(moment)
        show(console, "app", moment)
        res.moment_member = moment.body["member_id"]
    else:
        call("app", "GET", f"/v1/members/{members[1]}/moments")

    console.rule("checkout: rewards to grant now")
    basket: list[dict[str, Any]] = [
        {"sku": "sku-coffee-1", "category": "coffee", "quantity": 2, "unit_price": 4.5},
        {"sku": "sku-bakery-7", "category": "bakery", "quantity": 1, "unit_price": 6.0},
        {"category": "grocery", "quantity": 3, "unit_price": 12.0},
    ]
    total = sum(x["quantity"] * x["unit_price"] for x in basket)
    first_member = res.moment_member or members[1]
    regular = next(m for m in members[1:3] if m != first_member)
    for n, who in enumerate((first_member, regular, COLD_MEMBER)):
        tid = f"demo-{run_id}-till-{n + 1}"  # the till's transaction id: a retry sends it again
        body = {"transaction_id": tid, "member_id": who, "basket": basket, "total": total,
                "store_id": "store-001"}  # fmt: skip
        if call("checkout", "POST", "/v1/checkout/rewards", body).status == 200:
            call("checkout", "POST", f"/v1/checkout/{tid}/close")  # the answer reached the till

    console.rule("feedback client: viewed, redeemed, and a retry")
    decision = offers.body if offers.status == 200 else {}
    offer_id = decision["offers"][0]["offer_id"] if decision.get("offers") else "no-offer"
    events = [
        {
            "event_id": f"demo-{run_id}-{kind}",
            "member_id": member,
            "offer_id": offer_id,
            "event": kind,
            "decision_id": decision.get("decision_id"),
            "channel": "app",
        }
        for kind in ("viewed", "redeemed")
    ]
    first = call("feedback", "POST", "/v1/events", {"events": events})
    again = call("feedback", "POST", "/v1/events", {"events": events[:1]})  # a client retry
    res.duplicate_stored_once = (
        first.status == 200
        and again.status == 200
        and events[0]["event_id"] in first.body["stored"]
        and again.body["duplicates"] == [events[0]["event_id"]]
        and again.body["stored"] == []
    )

    console.rule("models")
    call("ops", "GET", "/v1/models")
    return res
