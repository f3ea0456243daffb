"""Smoke test of the main job: ``offers demo --no-serve`` end to end as a real process.

Simulate -> features -> train and register both models -> serve on a free loopback port ->
sample requests -> stop. The printed responses are parsed back: every decision names a
decision id and the model versions the run registered, the cold-start checkout names its
fallback, and the event sent twice is stored once. A second run on the same ``OFFERS_HOME``
registers and serves the next versions.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from features.sources.validate import validate_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_demo(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OFFERS_HOME": str(home),
        "COLUMNS": "120",
        "OPENBLAS_NUM_THREADS": "1",
    }
    for var in ("MLFLOW_TRACKING_URI", "OFFERS_DATABASE_URL", "OFFERS_API_KEYS"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "offers", "demo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _exchanges(out: str) -> list[tuple[str, int, list[dict]]]:
    """(``METHOD path``, status, JSON bodies) of every printed response."""
    head = re.compile(r"^\S.*?\s((?:GET|POST) \S+) -> (\d{3}) \(\d+ ms\)$")
    found: list[tuple[str, int, list[dict]]] = []
    for line in out.splitlines():
        if m := head.match(line):
            found.append((m.group(1), int(m.group(2)), []))
        elif found and line.startswith("  {"):
            found[-1][2].append(json.loads(line.strip()))
    return found


def _registered(out: str) -> dict[str, str]:
    return dict(re.findall(r"registered offers-(affinity|uplift) v(\d+) ", out))


def _check_run(out: str) -> dict[str, str]:
    """Assert on one run's output; returns the versions it registered."""
    versions = _registered(out)
    assert set(versions) == {"affinity", "uplift"}, out[-3000:]
    calls = _exchanges(out)
    by_path: dict[str, list[tuple[int, list[dict]]]] = {}
    for path, status, bodies in calls:
        assert status == 200, (path, status, bodies)
        by_path.setdefault(path.split("?")[0], []).append((status, bodies))

    batch = by_path["POST /v1/offers/batch"][0][1]
    assert len(batch) == 4
    decisions = [line for line in batch if line["decision_id"]]
    assert len(decisions) == 4 and len({d["decision_id"] for d in decisions}) == 4
    assert all(d["model_versions"] == versions for d in batch)

    checkouts = [bodies[0] for _, bodies in by_path["POST /v1/checkout/rewards"]]
    assert len(checkouts) == 3
    assert all(c["decision_id"] and c["model_versions"] == versions for c in checkouts)
    assert checkouts[0]["moments"], "the first checkout is for a member with a moment"
    cold = checkouts[-1]
    assert cold["member_id"] == "walk-in-new-member"
    # the demo's model keeps ALS (min_als_weight): the walk-in's basket is folded in (issue 19)
    assert cold["fallback"] == "personalised"

    offers = [b[0] for p, v in by_path.items() if p.endswith("/offers") for _, b in v]
    assert offers and offers[0]["decision_id"] and offers[0]["model_versions"] == versions
    moments = [b[0] for p, v in by_path.items() if p.endswith("/moments") for _, b in v]
    assert moments and moments[0]["moments"]

    first, again = (bodies[0] for _, bodies in by_path["POST /v1/events"])
    assert first["received"] == 2 and len(first["stored"]) == 2 and first["duplicates"] == []
    assert again == {"received": 1, "stored": [], "duplicates": [first["stored"][0]]}

    models = by_path["GET /v1/models"][0][1][0]["models"]
    assert {m["name"]: m["version"] for m in models} == versions
    assert "duplicate event stored once: yes" in out
    assert "server stopped" in out
    key = re.search(r"demo API key .*: (demo-\S+)", out)
    assert key and f"X-API-Key: {key.group(1)}" in out
    return versions


@pytest.mark.integration
@pytest.mark.slow
def test_offers_demo_end_to_end_and_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    proc = _run_demo(home, "--members", "1000", "--seed", "7", "--no-serve", "--port", str(port))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    for heading in (
        "members by tier and lifecycle stage",
        "offers by kind",
        "redemption by offer kind",
        "treated vs control",
    ):
        assert heading in out
    first = _check_run(out)
    data_dir = home / "data" / "demo"
    result = validate_dir(data_dir)
    assert result.ok and result.counts["members"].kept == 1000
    assert (data_dir / "truth").is_dir()
    assert (home / "features" / "member_features.parquet").exists()
    key = (home / "demo_api_key").read_text().strip()

    # again on the same home: new versions registered, promoted and served; same key
    again = _run_demo(home, "--members", "1000", "--seed", "7", "--no-serve", "--port", str(port))
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    second = _check_run(again.stdout)
    assert second == {k: str(int(v) + 1) for k, v in first.items()}
    assert (home / "demo_api_key").read_text().strip() == key


@pytest.mark.integration
def test_port_in_use_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = _run_demo(tmp_path / "home", "--no-serve", "--port", str(port), timeout=60)
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert not (tmp_path / "home" / "data").exists(), "nothing simulated before the port check"


def test_demo_key_is_reused_and_only_its_digest_is_in_the_keys_file(tmp_path: Path) -> None:
    from offers.cmd_demo import demo_key
    from serving.auth import hash_key
    from serving.settings import SCOPES

    key = demo_key(tmp_path)
    assert key.startswith("demo-") and len(key) > 30
    assert (tmp_path / "demo_api_key").stat().st_mode & 0o777 == 0o600
    assert demo_key(tmp_path) == key
    keys = json.loads((tmp_path / "api_keys.json").read_text())
    assert keys == {f"sha256:{hash_key(key)}": list(SCOPES)}
    assert key not in (tmp_path / "api_keys.json").read_text()


def test_printed_responses_stay_whole_json_lines_on_a_narrow_console() -> None:
    import io

    from rich.console import Console

    from offers.demo_requests import Reply, show

    buf = io.StringIO()
    console = Console(file=buf, width=40, force_terminal=False)
    body = [
        {"member_id": f"m{i}", "explanation": "x" * 200, "reasons": ["a"], "score": 1.234567}
        for i in range(2)
    ]
    show(console, "e-mail tooling", Reply("POST", "/v1/offers/batch", 200, body, 12.3))
    calls = _exchanges(buf.getvalue())
    assert calls[0][:2] == ("POST /v1/offers/batch", 200)
    lines = calls[0][2]
    assert [x["member_id"] for x in lines] == ["m0", "m1"]
    assert all("reasons" not in x and x["score"] == 1.2346 for x in lines)
    assert all(len(x["explanation"]) == 60 and x["explanation"].endswith("…") for x in lines)
