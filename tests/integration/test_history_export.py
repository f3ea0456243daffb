"""Member history across ``offers export``: a checkout grant exported into the service's own
``offer_events`` and still in the store counts once, on the API's paths (one member, many) and
in ``offers score``'s history, so exporting and reloading changes no counter.

A simulated program's data directory, a real SQLite store filled as checkout fills it (grants,
then the decision record written a few ms later), the real ``offers export`` command, and the
snapshot read back as the service reads it at (re)load.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from sqlalchemy import update
from typer.testing import CliRunner

from features.catalog.model import load_catalog
from features.sim.simulate import simulate
from features.sources import schema as S
from features.sources.io import find_table_file, read_raw, to_canonical_frame
from serving.batch.history import with_store_grants
from serving.engine.offers import OfferTable
from serving.engine.state import SnapshotHistory, state_from_events
from serving.store import open_store, utcnow
from serving.store.tables import grants

pytestmark = pytest.mark.integration

FIELDS = ("received", "active", "channel_recent", "last_surprise", "surprises_year")


def _cli() -> typer.Typer:
    from offers import cmd_export

    app = typer.Typer()
    app.callback()(lambda: None)
    cmd_export.register(app)
    return app


def _snapshot(data: Path) -> pd.DataFrame:
    """The data's offer_events as the bundle reads OFFERS_OFFER_EVENTS at (re)load."""
    path = find_table_file(data, "offer_events")
    assert path is not None
    return to_canonical_frame(read_raw(path), "offer_events")


def _states(data: Path, store, ids: np.ndarray, offers: OfferTable, as_of) -> dict:
    events = _snapshot(data)
    history = SnapshotHistory.from_events(events, ids, offers)
    per_member = [store.member_grants(m) for m in ids]
    rows = np.arange(len(ids))
    many = history.state_many(rows, offers, as_of, per_member)
    ones = [history.state_one(int(r), offers, as_of, per_member[r]) for r in rows]
    batch = state_from_events(with_store_grants(events, store), ids, offers, as_of)
    return {"many": many, "ones": ones, "batch": batch, "exported": len(history.exported)}


def _assert_equal(a, b) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_an_exported_checkout_grant_counts_once_after_the_reload(tmp_path: Path) -> None:
    data = tmp_path / "data"
    simulate(150, seed=4).write(data)
    offers = OfferTable.from_catalog(load_catalog(data / "catalog.yaml"))
    ids = pd.read_parquet(data / "members.parquet")[S.MEMBER_ID].to_numpy(dtype=object)
    m0, m1 = str(ids[0]), str(ids[1])
    plain = next(o for o in offers.ids if not offers.surprise[offers.index_of[o]])
    surprise = next(o for o in offers.ids if offers.surprise[offers.index_of[o]])
    url = f"sqlite:///{tmp_path / 'offers.db'}"
    store = open_store(url)
    granted = utcnow().replace(microsecond=0) - timedelta(hours=2)
    row = {"channel": "checkout", "amount": None, "caps": [], "state": "granted",
           "granted_at": granted, "valid_until": None}  # fmt: skip
    with store.engine.begin() as connection:
        connection.execute(
            grants.insert(),
            [
                {**row, "transaction_id": "t-1", "member_id": m0, "decision_id": "d-1",
                 "offer_id": plain, "surprise": False},
                {**row, "transaction_id": "t-1", "member_id": m0, "decision_id": "d-1",
                 "offer_id": surprise, "surprise": True},
                {**row, "transaction_id": "t-2", "member_id": m1, "decision_id": "d-2",
                 "offer_id": plain, "surprise": False},
            ],
        )  # fmt: skip
    written = granted + timedelta(milliseconds=5)  # the batched decision log, just after
    store.log_decisions(
        [
            {"decision_id": d, "member_id": m, "channel": "checkout", "model_versions": {},
             "offers": [{"offer_id": o, "rank": k + 1, "score": 1.0, "propensity": 1.0}
                        for k, o in enumerate(os)],
             "fallback": "personalised", "created_at": written, "held_out": False,
             "holdout_share": 0.05}
            for d, m, os in (("d-1", m0, [plain, surprise]), ("d-2", m1, [plain]))
        ]
    )  # fmt: skip
    as_of = pd.Timestamp(granted + timedelta(hours=1))
    try:
        before = _states(data, store, ids, offers, as_of)
        assert before["exported"] == 0  # the simulated program's sends carry no decision id
        j, s = offers.index_of[plain], offers.index_of[surprise]
        snapshot_only = state_from_events(_snapshot(data), ids, offers, as_of)
        assert before["many"].received[0, j] == snapshot_only.received[0, j] + 1
        assert before["many"].surprises_year[0] == snapshot_only.surprises_year[0] + 1

        result = CliRunner().invoke(_cli(), ["export", "--store", url, "--out", str(data)])
        assert result.exit_code == 0, result.output
        exported = _snapshot(data)
        mine = exported.loc[exported[S.DECISION_ID].isin(["d-1", "d-2"])]
        assert sorted(mine[S.EVENT_ID]) == sorted(
            [f"d-1:{plain}:sent", f"d-1:{surprise}:sent", f"d-2:{plain}:sent"]
        )

        after = _states(data, store, ids, offers, as_of)
        assert after["exported"] == 3
        for path in ("many", "batch"):
            _assert_equal(after[path], before["many"])  # the export changed no counter
        _assert_equal(before["batch"], before["many"])
        for r, one in enumerate(after["ones"]):
            _assert_equal(one, before["many"].take(np.array([r])))
        assert after["many"].received[0, j] == snapshot_only.received[0, j] + 1
        assert after["many"].last_surprise[0] == s

        # redeemed after the export: the store says so, the snapshot does not yet
        with store.engine.begin() as connection:
            connection.execute(
                update(grants)
                .where(grants.c.transaction_id == "t-2")
                .values(state="redeemed", redeemed_at=granted + timedelta(minutes=10))
            )
        redeemed = _states(data, store, ids, offers, as_of)
        assert not redeemed["many"].active[1, j] and after["many"].active[1, j]
        assert redeemed["many"].received[1, j] == after["many"].received[1, j]
        _assert_equal(redeemed["batch"], redeemed["many"])
        _assert_equal(redeemed["ones"][1], redeemed["many"].take(np.array([1])))
    finally:
        store.close()
