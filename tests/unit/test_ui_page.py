"""The program page in process: key and cookie rules, admin-only reload, the store's figures,
and that the page, /docs and /redoc reference no asset outside the app (no CDN)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert

from serving.api import create_app
from serving.api.routes.ui import COOKIE
from serving.settings import Settings
from serving.store import open_store
from serving.store.tables import grants

KEYS = {"reader": ["offers:read"], "boss": ["offers:read", "admin"], "writer": ["events:write"]}


def _settings(tmp_path: Path) -> Settings:
    return Settings(data={"home": tmp_path}, serving={"api_keys": KEYS})


def _seed(tmp_path: Path, settings: Settings) -> None:
    store = open_store(settings.database_url())
    try:
        store.set_budget("coffee-20pct", 100.0)
        store.set_budget("bday-treat", 50.0)
        assert store.reserve_budget("coffee-20pct", 30.0)
        now = datetime(2026, 12, 1, 12, 0)
        store.log_decisions(
            [
                {
                    "decision_id": f"d{i}",
                    "member_id": f"m{i}",
                    "channel": "app",
                    "offers": [
                        {"offer_id": "coffee-20pct", "rank": 1, "score": 1.0, "propensity": 0.5}
                    ],
                    "model_versions": {"offers-uplift": "1"},
                    "fallback": "personalised",
                    "created_at": now - timedelta(days=i % 3),
                }
                for i in range(6)
            ]
        )
        with store.engine.begin() as c:
            c.execute(
                insert(grants),
                [
                    {
                        "transaction_id": f"t{i}",
                        "offer_id": "coffee-20pct",
                        "member_id": f"m{i}",
                        "decision_id": f"d{i}",
                        "channel": "checkout",
                        "surprise": False,
                        "amount": 10.0,
                        "caps": [],
                        "state": "redeemed" if i < 2 else "granted",
                        "granted_at": now - timedelta(days=i),
                        "redeemed_at": now if i < 2 else None,
                    }
                    for i in range(3)
                ],
            )
    finally:
        store.close()


def test_page_needs_a_read_key_and_keeps_it_in_an_httponly_cookie(tmp_path):
    settings = _settings(tmp_path)
    _seed(tmp_path, settings)
    with TestClient(create_app(settings)) as c:
        first = c.get("/ui")
        assert first.status_code == 401 and 'name="key"' in first.text
        assert c.get("/ui", headers={"X-API-Key": "nope"}).status_code == 401
        bad = c.post("/ui/login", data={"key": "nope"}, follow_redirects=False)
        assert bad.status_code == 401 and "unknown API key" in bad.text
        no_scope = c.post("/ui/login", data={"key": "writer"}, follow_redirects=False)
        assert no_scope.status_code == 403 and "offers:read" in no_scope.text
        assert COOKIE not in c.cookies

        ok = c.post("/ui/login", data={"key": "reader"}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/ui"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        page = c.get("/ui")
        assert page.status_code == 200
        assert 'data-figure="fig-budgets"' in page.text and 'data-figure="fig-daily"' in page.text
        assert "coffee-20pct" in page.text
        assert 'id="reload"' not in page.text  # model controls only with admin
        refused = c.post("/ui/reload", follow_redirects=False)
        assert refused.status_code == 403

        c.post("/ui/logout", follow_redirects=False)
        c.cookies.clear()
        assert c.get("/ui").status_code == 401
        # The API's header works too (scripts, curl).
        assert c.get("/ui", headers={"X-API-Key": "boss"}).status_code == 200


def test_admin_sees_the_reload_button_and_reload_reports_its_outcome(tmp_path):
    settings = _settings(tmp_path)
    with TestClient(create_app(settings)) as c:
        c.post("/ui/login", data={"key": "boss"})
        page = c.get("/ui")
        assert 'id="reload"' in page.text
        done = c.post("/ui/reload", follow_redirects=False)
        assert done.status_code == 303 and "msg=" in done.headers["location"]
        page = c.get(done.headers["location"])
        assert 'id="last-reload"' in page.text and "reload" in page.text


def test_budget_and_daily_figures_come_from_the_store(tmp_path):
    from serving.api import ui_data
    from serving.store import open_store as open_

    settings = _settings(tmp_path)
    _seed(tmp_path, settings)
    store = open_(settings.database_url())
    try:
        b = ui_data.budgets_frame(store).set_index("offer_id")
        assert b.loc["coffee-20pct", "spent"] == 30.0 and b.loc["coffee-20pct", "used"] == 0.3
        assert b.loc["bday-treat", "spent"] == 0.0
        d = ui_data.daily_frame(store).set_index("day")
        assert d["decisions"].sum() == 6 and d["grants"].sum() == 3
        assert d.loc["2026-12-01", "redemptions"] == 2
        assert d.loc["2026-11-29", "grants"] == 1
    finally:
        store.close()


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(
        r"""url:\s*['"]([^'"]+)['"]""", html
    )


def test_page_and_docs_load_no_asset_from_another_host(tmp_path):
    with TestClient(create_app(_settings(tmp_path))) as c:
        for path, headers in (("/ui", {"X-API-Key": "reader"}), ("/docs", {}), ("/redoc", {})):
            page = c.get(path, headers=headers)
            assert page.status_code == 200, path
            urls = _asset_urls(page.text)
            assert urls, path
            for url in urls:
                assert not re.match(r"^(https?:)?//", url), (path, url)
                if url.startswith("/") and not url.startswith("/openapi"):
                    assert c.get(url).status_code == 200, url
        js = c.get("/ui/vendor/plotly.min.js")
        assert js.status_code == 200 and len(js.content) > 1_000_000
        assert "javascript" in js.headers["content-type"]
