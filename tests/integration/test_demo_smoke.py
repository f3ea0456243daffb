"""Smoke test of the main job: `offers demo` end to end as a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from features.validate import validate_dir


@pytest.mark.slow
def test_offers_demo_end_to_end(tmp_path):
    env = {**os.environ, "OFFERS_HOME": str(tmp_path / "home"), "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-m", "offers", "demo", "--members", "1500", "--seed", "7"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for heading in (
        "members by tier and lifecycle stage",
        "offers by kind",
        "redemption by offer kind",
        "treated vs control",
    ):
        assert heading in out
    data_dir = tmp_path / "home" / "data" / "demo"
    result = validate_dir(data_dir)
    assert result.ok and result.counts["members"].kept == 1500
    assert (data_dir / "truth").is_dir()
