"""The program page and /docs in a real headless browser (Debian's chromium, Playwright).

``offers demo --no-serve`` trains a small program and leaves its store with the sample
requests' decisions; ``offers serve`` then serves that home as a real process, more traffic is
sent (decisions for a few hundred members, so some are held out, and checkouts after them), and
chromium opens ``/ui``: the login form, a read-only key, every chart drawn (plotly's SVG in the
DOM), the incrementality table, no console error, no request to another host, a screenshot
kept as a test artifact (``<basetemp>/ui/ui-page.png`` and ``.artifacts/ui-page.png``). An
admin key sees the reload button and a reload reports its outcome. ``/docs`` renders Swagger UI
from the app's own assets.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
READER_KEY = "ui-reader-key-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"

if not CHROMIUM.exists():  # CI installs it (.ci/run); say why locally
    pytest.skip(
        "needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "OFFERS_HOME": str(home), "COLUMNS": "200", "OPENBLAS_NUM_THREADS": "1"}
    for var in ("MLFLOW_TRACKING_URI", "OFFERS_DATABASE_URL", "OFFERS_API_KEYS"):
        env.pop(var, None)
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    """(base URL, admin key, data dir) of ``offers serve`` on a trained demo home."""
    home = tmp_path_factory.mktemp("ui-home")
    demo = subprocess.run(
        [sys.executable, "-m", "offers", "demo", "--no-serve", "--members", "1500",
         "--port", str(_free_port())],
        capture_output=True, text=True, env=_env(home), timeout=600,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    admin_key = (home / "demo_api_key").read_text().strip()
    port = _free_port()
    env = {
        **_env(home),
        "OFFERS_API_KEYS_FILE": str(home / "api_keys.json"),
        "OFFERS_API_KEYS": json.dumps({READER_KEY: ["offers:read"]}),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "OFFERS_MODELS": json.dumps(
            {
                "affinity": "models:/offers-affinity@champion",
                "uplift": "models:/offers-uplift@champion",
            }
        ),
        "OFFERS_CATALOG": str(home / "data" / "demo" / "catalog.yaml"),
        "OFFERS_MEMBER_FEATURES": str(home / "features" / "member_features.parquet"),
    }
    log = (home / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "offers", "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).json().get("ready"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert proc.poll() is None, (home / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server not ready in 180 s"
            time.sleep(0.5)
        _traffic(url, admin_key, home / "data" / "demo")
        yield url, admin_key, home / "data" / "demo"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _traffic(url: str, key: str, data: Path) -> None:
    """Decisions for 400 members (about 5 % held out), then checkouts for half of them."""
    members = pd.read_parquet(data / "members.parquet", columns=["member_id"])["member_id"]
    ids = members.iloc[:400].tolist()
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
        r = c.post("/v1/offers/batch", json={"member_ids": ids, "channel": "app", "k": 2})
        assert r.status_code == 200, r.text[:500]
        time.sleep(1.5)  # outcomes count strictly after the decision's second
        for i, m in enumerate(ids[::2][:120]):
            body = {
                "transaction_id": f"ui-t{i}",
                "member_id": m,
                "basket": [{"sku": "cof-0001", "category": "coffee", "quantity": 1,
                            "unit_price": 12.5}],
                "total": 12.5,
            }  # fmt: skip
            r = c.post("/v1/checkout/rewards", json=body)
            assert r.status_code in (200, 503), r.text[:500]
    time.sleep(1.0)  # the decision log flushes every 0.2 s


def _browser(p):
    return p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


def _other_hosts(page, base: str) -> list[str]:
    seen: list[str] = []
    page.on(
        "request",
        lambda req: (
            seen.append(req.url)
            if not (req.url.startswith(base) or req.url.startswith("data:"))
            else None
        ),
    )
    return seen


def test_program_page_renders_its_charts_without_errors(served, tmp_path_factory):
    url, _, _ = served
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            outside = _other_hosts(page, url)
            page.goto(f"{url}/ui")
            assert page.locator("input[name=key]").count() == 1  # the login form first
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.fill("input[name=key]", READER_KEY)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/ui")
            figures = page.locator("[data-figure]")
            n = figures.count()
            assert n >= 2  # budgets and grants per day at least
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}",
                timeout=30_000,
            )
            for i in range(n):
                chart = figures.nth(i)
                assert chart.locator(".main-svg").count() >= 1
                assert chart.locator("g.trace").count() >= 1, chart.get_attribute("data-figure")
            bars = page.locator("[data-figure=fig-budgets] g.trace.bars path")
            assert bars.count() >= 1
            assert page.locator("#incr-table tr").count() >= 2  # header and the "all" row
            assert page.locator("#reload").count() == 0  # read-only key: no model controls
            # Champions of both models, each with its gate metrics.
            rows = page.locator("#versions tr").all_inner_texts()
            assert any("offers-affinity" in r and "champion" in r for r in rows), rows
            assert any("offers-uplift" in r and "champion" in r and "qini" in r for r in rows), rows
            shot = tmp_path_factory.mktemp("ui") / "ui-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(shot, ARTIFACTS / "ui-page.png")
            assert errors == []
            assert outside == []
        finally:
            browser.close()


def test_admin_reload_from_the_page(served):
    url, admin_key, _ = served
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.goto(f"{url}/ui")
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.fill("input[name=key]", admin_key)
            page.click("button[type=submit]")
            page.wait_for_selector("#reload")
            page.click("#reload")
            page.wait_for_selector("#last-reload", timeout=120_000)
            assert "reloaded" in page.locator("#last-reload").inner_text()
            assert errors == []
        finally:
            browser.close()


def test_docs_render_offline(served):
    url, _, _ = served
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            outside = _other_hosts(page, url)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{url}/docs")
            page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
            assert page.locator(".swagger-ui .opblock").count() >= 5
            assert outside == [] and errors == []
        finally:
            browser.close()


def test_report_html_draws_its_plots_offline(served, tmp_path):
    """``offers report incrementality``'s HTML on the demo's data: every plot drawn from the
    inlined plotly.js, opened as a file (no server, no network)."""
    from serving.reports import incrementality, unit_outcomes, write_report
    from serving.reports.sources import from_data_dir

    _, _, data = served
    inputs = from_data_dir(data)
    units = unit_outcomes(inputs)
    _, html = write_report(incrementality(inputs, units=units), {"source": "demo"}, tmp_path)
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            outside = _other_hosts(page, "file://")
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html.as_uri())
            plots = page.locator(".plotly-graph-div")
            assert plots.count() >= 8  # conversion and spend per offer, moment, stage, campaign
            page.wait_for_function(
                f"document.querySelectorAll('.plotly-graph-div .main-svg').length >= "
                f"{plots.count()}",
                timeout=30_000,
            )
            assert page.locator(".plotly-graph-div g.trace").count() >= plots.count()
            assert errors == [] and outside == []
        finally:
            browser.close()
