"""``offers export`` on a real store (SQLite file and PostgreSQL): decisions, grants and feedback
become canonical offer_events that ``offers validate`` accepts; re-exporting adds nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.sim.simulate import simulate
from features.sources import schema as S
from features.sources.validate import validate_dir
from serving.batch.export import serving_campaign_id
from serving.store import open_store, utcnow
from serving.store.tables import grants
from tests.support.servers import fresh_postgres_database

pytestmark = pytest.mark.integration


def _cli() -> typer.Typer:
    """``offers export`` alone (the command keeps its name under a root callback)."""
    from offers import cmd_export

    app = typer.Typer()
    app.callback()(lambda: None)
    cmd_export.register(app)
    return app


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "data"
    simulate(150, seed=4).write(out)
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'offers.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    with fresh_postgres_database(server) as url:
        yield url


def _fill(url: str, members: list[str], offers: list[str]) -> dict:
    """Decisions (offers, held out, none), a grant without its decision record, feedback."""
    store = open_store(url)
    now = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    a, b = offers[0], offers[1]
    store.log_decisions(
        [
            {"decision_id": "d-1", "member_id": members[0], "channel": "app",
             "offers": [{"offer_id": a, "rank": 1, "score": 1.0, "propensity": 0.9},
                        {"offer_id": b, "rank": 2, "score": 0.5, "propensity": 0.05}],
             "model_versions": {"affinity": "1"}, "fallback": "personalised",
             "created_at": now, "held_out": False, "holdout_share": 0.05},
            {"decision_id": "d-2", "member_id": members[1], "channel": "email",
             "offers": [], "model_versions": {}, "fallback": "personalised",
             "created_at": now, "held_out": True, "holdout_share": 0.05,
             "campaign_id": "dec-newsletter"},
            {"decision_id": "d-3", "member_id": members[2], "channel": "app", "offers": [],
             "model_versions": {}, "fallback": "global_popular", "created_at": now,
             "held_out": False, "holdout_share": 0.05},
        ]
    )  # fmt: skip
    grant = {
        "member_id": members[3], "channel": "checkout", "surprise": False, "amount": None,
        "caps": [], "state": "granted", "granted_at": now, "valid_until": None,
    }  # fmt: skip
    with store.engine.begin() as connection:
        connection.execute(
            grants.insert(),
            [
                # its decision record was lost: the grant alone says it was sent
                {**grant, "transaction_id": "t-1", "offer_id": a, "decision_id": "d-4"},
                # d-1's own offer (as if granted at checkout too): one sent event, not two
                {**grant, "transaction_id": "t-2", "offer_id": a, "decision_id": "d-1",
                 "member_id": members[0]},
            ],
        )  # fmt: skip
    later = now + timedelta(minutes=1)
    store.record_events(
        [
            {"event_id": "e-1", "member_id": members[0], "offer_id": a, "decision_id": "d-1",
             "event": "viewed", "channel": "app", "ts": later},
            {"event_id": "e-2", "member_id": members[0], "offer_id": a, "decision_id": "d-1",
             "event": "viewed", "channel": "app", "ts": later + timedelta(seconds=30)},
            {"event_id": "e-3", "member_id": members[0], "offer_id": a, "decision_id": "d-1",
             "event": "redeemed", "channel": "app", "ts": later + timedelta(minutes=1)},
            {"event_id": "e-4", "member_id": members[4], "offer_id": b, "decision_id": None,
             "event": "dismissed", "channel": "app", "ts": later},
        ]
    )  # fmt: skip
    store.close()
    return {"now": now, "a": a, "b": b}


def test_export_merges_without_duplicates_and_validates(
    program_dir: Path, store_url: str, tmp_path: Path
) -> None:
    app = _cli()
    data = tmp_path / "data"
    shutil.copytree(program_dir, data)
    before = pd.read_parquet(data / "offer_events.parquet")
    members = pd.read_parquet(data / "members.parquet")[S.MEMBER_ID].tolist()
    offers = pd.read_parquet(data / "offers.parquet")[S.OFFER_ID].tolist()
    filled = _fill(store_url, members, offers)
    runner = CliRunner()
    args = ["export", "--store", store_url, "--out", str(data), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    counts = json.loads(first.stdout)
    # d-1: 2 sent; d-2: held_out; d-4 (grant only): 1 sent; feedback: viewed once (two
    # views of one decision's offer are one event), redeemed, dismissed (no decision)
    assert counts["events"] == {
        "sent": 3, "viewed": 1, "redeemed": 1, "dismissed": 1, "held_out": 1,
    }  # fmt: skip
    assert counts["read"] == {"decisions": 3, "grants": 2, "feedback_events": 4}
    assert counts["written"] == 7 and counts["already_present"] == 0
    assert counts["total"] == len(before) + 7
    ev = pd.read_parquet(data / "offer_events.parquet")
    new = ev.loc[~ev[S.EVENT_ID].isin(before[S.EVENT_ID])].set_index(S.EVENT_ID)
    a = filled["a"]
    sent = new.loc[f"d-1:{a}:sent"]
    assert sent[S.PROPENSITY] == pytest.approx(0.9)  # the decision's, not the grant's (none)
    assert sent[S.CAMPAIGN_ID] == serving_campaign_id("app", filled["now"])
    held = new.loc["d-2:held_out"]
    assert pd.isna(held[S.OFFER_ID]) and held[S.PROPENSITY] == pytest.approx(0.05)
    assert held[S.CAMPAIGN_ID] == "dec-newsletter"
    assert new.loc[f"d-1:{a}:redeemed", S.CAMPAIGN_ID] == sent[S.CAMPAIGN_ID]
    assert new.loc[f"d-1:{a}:viewed", S.TS] == filled["now"] + timedelta(minutes=1)  # earliest
    assert new.loc[f"d-4:{a}:sent", S.CHANNEL] == "checkout"
    assert "fb:e-4" in new.index and pd.isna(new.loc["fb:e-4", S.CAMPAIGN_ID])
    result = validate_dir(data)
    assert result.ok, [p.message for p in result.problems]
    assert result.counts["offer_events"].rejected == 0

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    counts2 = json.loads(again.stdout)
    assert counts2["written"] == 0 and counts2["already_present"] == 7
    assert len(pd.read_parquet(data / "offer_events.parquet")) == len(before) + 7

    # --since after everything: nothing read
    late = (filled["now"] + timedelta(hours=1)).isoformat(timespec="seconds")
    none = runner.invoke(app, [*args, "--since", late])
    assert none.exit_code == 0, none.output
    assert json.loads(none.stdout)["read"] == {"decisions": 0, "grants": 0, "feedback_events": 0}


def test_export_into_a_csv_table_and_an_empty_directory(program_dir: Path, tmp_path: Path) -> None:
    from serving.batch.export import export_events

    url = f"sqlite:///{tmp_path / 'offers.db'}"
    members = pd.read_parquet(program_dir / "members.parquet")[S.MEMBER_ID].tolist()
    offers = pd.read_parquet(program_dir / "offers.parquet")[S.OFFER_ID].tolist()
    _fill(url, members, offers)
    store = open_store(url, migrate_schema=False)
    try:
        empty = export_events(store, tmp_path / "fresh")
        assert (empty.written, empty.total) == (7, 7)
        csv_dir = tmp_path / "csv"
        csv_dir.mkdir()
        pd.read_parquet(program_dir / "offer_events.parquet").head(20).to_csv(
            csv_dir / "offer_events.csv", index=False
        )
        merged = export_events(store, csv_dir)
    finally:
        store.close()
    assert (merged.written, merged.total) == (7, 27)
    assert not (csv_dir / "offer_events.csv").exists()  # replaced by the Parquet table
    assert len(pd.read_parquet(csv_dir / "offer_events.parquet")) == 27


def test_export_names_an_old_store_and_a_bad_url(tmp_path: Path) -> None:
    from serving.store import make_engine, migrate

    app = _cli()
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0002")
    engine.dispose()
    runner = CliRunner()
    old = runner.invoke(
        app, ["export", "--store", f"sqlite:///{tmp_path / 'old.db'}", "--out", str(tmp_path)]
    )
    assert old.exit_code == 1
    assert "schema revision '0002'" in " ".join(old.output.split())
    bad = runner.invoke(app, ["export", "--store", "mysql://u:secret@h/db", "--out", str(tmp_path)])
    assert bad.exit_code == 1
    message = " ".join(bad.output.split())
    assert "'mysql' is not supported" in message and "secret" not in message
