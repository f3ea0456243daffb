"""Affinity inputs at scale: aggregated cells equal a line-by-line reference, on pandas frames and
on Parquet files read by DuckDB; the member sample of the validation search; the tables opened
for training (transactions stay in the backend)."""

from __future__ import annotations

from collections import defaultdict

import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pytest

from features.pipeline import load_tables
from features.pipeline.engines import connect
from models.affinity import InteractionSettings, build_interactions
from training.affinity.data import EVENT_COLUMNS, open_affinity_tables
from training.affinity.evaluate import EvalSettings, build_task, subsample_members

AS_OF = pd.Timestamp("2024-06-01")
START = pd.Timestamp("2024-01-01")


def _program(seed: int = 3, lines: int = 3000) -> dict[str, pd.DataFrame]:
    """A random canonical program: baskets of several lines, returns, unknown quantities, offer
    events of every kind, rows on and after ``AS_OF``."""
    rng = np.random.default_rng(seed)
    members = [f"m{i:03d}" for i in range(120)]
    basket = rng.integers(0, 900, lines)
    member_of = rng.integers(0, len(members), 900)
    # whole seconds: ages are counted in epoch seconds, as in the feature pipeline
    when = START + pd.to_timedelta(rng.integers(0, 200 * 86_400, 900), unit="s")
    tx = pd.DataFrame(
        {
            "transaction_id": [f"t{b}" for b in basket],
            "member_id": [members[member_of[b]] for b in basket],
            "ts": when[basket] + pd.to_timedelta(rng.integers(0, 60, lines), unit="s"),
            "amount": np.round(rng.choice([-3.0, 0.0, 2.5, 7.0, 11.0], lines), 2),
            "category": rng.choice(["coffee", "tea", "toys", "pets", None], lines),
            "sku": rng.choice([f"s{i}" for i in range(25)], lines),
            "quantity": rng.choice([1.0, 2.0, 0.0, np.nan], lines),
        }
    )
    n_ev = 1500
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n_ev)],
            "member_id": rng.choice(members, n_ev),
            "offer_id": rng.choice(["o1", "o2", "o3", None], n_ev),
            "event": rng.choice(["sent", "viewed", "redeemed", "dismissed"], n_ev),
            "ts": START + pd.to_timedelta(rng.integers(0, 200 * 86_400, n_ev), unit="s"),
        }
    )
    offers = pd.DataFrame(
        {
            "offer_id": ["o1", "o2", "o3", "o4"],
            "name": ["a", "b", "c", "d"],
            "kind": "bogo",
            "reward_value": 5.0,
            "cost": 2.0,
        }
    )
    return {"transactions": tx, "offer_events": events, "offers": offers}


def _reference(tables: dict[str, pd.DataFrame], settings: InteractionSettings, start=None):
    """(member, item) -> [confidence, count, youngest age] computed line by line."""
    hl = settings.half_life_days
    cells: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0, np.inf])

    def add(member: str, item: str, weight: float, ts: pd.Timestamp) -> None:
        age = (AS_OF - ts) / pd.Timedelta(days=1)
        c = cells[(member, item)]
        c[0] += weight * (0.5 ** (age / hl) if hl else 1.0)
        c[1] += 1
        c[2] = min(c[2], age)

    weights = settings.event_weights()
    for r in tables["offer_events"].itertuples():
        seen = r.ts < AS_OF and (start is None or r.ts >= start)
        if seen and not pd.isna(r.offer_id) and weights.get(r.event, 0) > 0:
            add(r.member_id, f"offer:{r.offer_id}", weights[r.event], r.ts)
    col = "category" if settings.purchase_items == "category" else "sku"
    latest: dict[tuple[str, str, str], pd.Timestamp] = {}
    for r in tables["transactions"].itertuples():
        value = getattr(r, col)
        if not (r.ts < AS_OF and (start is None or r.ts >= start)) or pd.isna(value):
            continue
        if r.amount <= 0 or r.quantity <= 0:  # NaN quantity (unknown) is kept
            continue
        key = (r.member_id, r.transaction_id, value)
        latest[key] = max(latest.get(key, r.ts), r.ts)
    for (member, _, value), ts in latest.items():
        add(member, f"{settings.purchase_items}:{value}", settings.purchase, ts)
    return cells


def _check(data, cells) -> None:
    assert data.confidence.nnz == len(cells)
    rows = data.member_index([m for m, _ in cells])
    cols = pd.Index(data.item_ids).get_indexer([i for _, i in cells])
    conf, count, last = (np.asarray(getattr(data, k)[rows, cols]).ravel() for k in
                         ("confidence", "count", "last_days"))  # fmt: skip
    want = np.array(list(cells.values()), dtype=np.float64)
    np.testing.assert_allclose(conf, want[:, 0], rtol=1e-5)
    np.testing.assert_array_equal(count, want[:, 1])
    np.testing.assert_allclose(last, want[:, 2] + 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "settings, start",
    [
        (InteractionSettings(), None),
        (InteractionSettings(purchase_items="product", half_life_days=None), START),
        (InteractionSettings(viewed=0.0, sent=2.0, half_life_days=30), pd.Timestamp("2024-03-01")),
    ],
)
def test_cells_equal_a_line_by_line_reference_on_frames_and_on_parquet(tmp_path, settings, start):
    tables = _program()
    cells = _reference(tables, settings, start)
    assert len(cells) > 300  # enough cells of every kind to mean something
    from_frames = build_interactions(tables, AS_OF, settings, start=start)
    _check(from_frames, cells)
    for name, df in tables.items():
        df.to_parquet(tmp_path / f"{name}.parquet")
    pd.DataFrame({"member_id": ["m000"], "joined_at": [START]}).to_parquet(
        tmp_path / "members.parquet"
    )
    ft = load_tables(tmp_path, connect("duckdb", memory_limit="256MB"))
    on_duckdb = build_interactions(ft, AS_OF, settings, start=start)
    _check(on_duckdb, cells)
    assert on_duckdb.member_ids.tolist() == from_frames.member_ids.tolist()
    assert on_duckdb.item_ids.tolist() == from_frames.item_ids.tolist()
    assert "offer:o4" in on_duckdb.item_ids  # every offer of the offers table is an item


def _task():
    rng = np.random.default_rng(1)
    n = 400
    members = [f"m{i:03d}" for i in range(n)]
    sends = pd.DataFrame(
        {
            "member_id": np.repeat(members, 3),
            "offer_id": np.tile(["o1", "o2", "o3"], n),
            "event": "sent",
            "ts": AS_OF - pd.Timedelta(days=5),
        }
    )
    past = sends.assign(event="redeemed", ts=AS_OF - pd.Timedelta(days=40))
    past = past[rng.uniform(size=len(past)) < 0.4]
    later = sends.assign(event="redeemed", ts=AS_OF + pd.Timedelta(days=2))
    later = later[rng.uniform(size=len(later)) < 0.3]
    # sends the window observes whole (calibration pairs): in it, redeemable until day 31
    inside = sends.assign(ts=AS_OF + pd.Timedelta(days=1))
    last = sends.head(1).assign(event="viewed", ts=AS_OF + pd.Timedelta(days=35))  # data's end
    events = pd.concat([sends, past, later, inside, last], ignore_index=True)
    tables = {
        "offer_events": events,
        "transactions": pd.DataFrame(columns=["transaction_id", "member_id", "ts", "amount"]),
        "offers": pd.DataFrame(
            {"offer_id": ["o1", "o2", "o3"], "kind": "bogo", "duration_days": 30.0}
        ),
    }
    seg = pd.Series("gold|active", index=members)

    def segments(_source, _at):
        return seg

    return tables, segments


def test_member_sample_keeps_each_sampled_members_task_rows(monkeypatch):
    tables, segments = _task()
    monkeypatch.setattr("training.affinity.evaluate.member_segments", segments)
    end = AS_OF + pd.Timedelta(days=40)
    task = build_task(tables, AS_OF, end, EvalSettings(), None)
    assert subsample_members(task, None) is task and subsample_members(task, 10_000) is task
    sub = subsample_members(task, 150, seed=4)
    assert sub.train.n_members == 150 and sub.sampled_from == task.train.n_members
    assert sub.summary()["sampled_from_members"] == task.train.n_members
    # the same members, in the same order, whatever the run
    again = subsample_members(task, 150, seed=4)
    assert again.train.member_ids.tolist() == sub.train.member_ids.tolist()
    assert 0 < len(sub.rows) < len(task.rows)
    old = task.train.member_index(sub.train.member_ids[sub.rows])
    pos = pd.Index(task.rows).get_indexer(old)
    assert (pos >= 0).all()  # every evaluated sampled member was evaluated in the task
    np.testing.assert_array_equal(sub.relevant.toarray(), task.relevant[pos].toarray())
    np.testing.assert_array_equal(sub.eligible, task.eligible[pos])
    np.testing.assert_array_equal(sub.n_relevant, task.n_relevant[pos])
    np.testing.assert_array_equal(
        sub.train.confidence.toarray(), task.train.confidence[task.train.member_index(
            sub.train.member_ids)].toarray()
    )  # fmt: skip
    # calibration pairs: exactly the sampled members' pairs, labels kept
    kept = set(sub.train.member_ids.tolist())
    full_pairs = {
        (task.train.member_ids[r], i, lab)
        for r, i, lab in zip(task.pair_rows, task.pair_items, task.pair_labels, strict=True)
        if task.train.member_ids[r] in kept
    }
    sub_pairs = {
        (sub.train.member_ids[r], i, lab)
        for r, i, lab in zip(sub.pair_rows, sub.pair_items, sub.pair_labels, strict=True)
    }
    assert sub_pairs == full_pairs and len(sub_pairs) > 0


def test_open_affinity_tables_keeps_transactions_in_the_backend(tmp_path):
    tables = _program()
    for name, df in tables.items():
        df.to_parquet(tmp_path / f"{name}.parquet")
    pd.DataFrame({"member_id": ["m000"], "joined_at": [START]}).to_parquet(
        tmp_path / "members.parquet"
    )
    opened = open_affinity_tables(tmp_path, memory_limit="256MB")
    assert isinstance(opened["transactions"], ir.Table)
    assert isinstance(opened["offer_events"], pd.DataFrame)
    assert tuple(opened["offer_events"].columns) == EVENT_COLUMNS
    assert len(opened["offer_events"]) == len(tables["offer_events"])
    assert set(opened) == {"offers", "offer_events", "transactions", "members"}
    limit = opened.features.transactions._find_backend().raw_sql(
        "SELECT current_setting('memory_limit')"
    )
    assert limit.fetchone()[0] == "244.1 MiB"  # DuckDB shows 256 MB in MiB
