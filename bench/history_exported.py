"""Member history with exported grants: the cost of loading a snapshot's ``offer_events`` (with
and without decision ids) and of one member's counters with store grants (none exported, all
exported), i.e. what ``serving.engine.state.ExportedSends`` adds to the load and to the
real-time path.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/history_exported.py [--events 60000]

A random snapshot of 10,000 members and the test catalog's offers (two thirds ``sent``); each
figure is printed for every repeat (the machine is shared). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Run as a script, bench/ comes first on sys.path and bench/features.py would shadow the
# features package.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.catalog.model import parse_catalog  # noqa: E402
from serving.engine.offers import OfferTable  # noqa: E402
from serving.engine.state import ExportedSends, PastGrant, SnapshotHistory  # noqa: E402

AS_OF = pd.Timestamp("2026-10-31")
CATALOG = {
    "program": "Bench",
    "offers": [
        {"offer_id": f"o{i}", "name": f"Offer {i}", "kind": "credit", "reward_value": 1,
         "cost": 1, "surprise": i % 5 == 0, "duration_days": 14}
        for i in range(30)
    ],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    offers = OfferTable.from_catalog(parse_catalog(CATALOG, "bench"))
    rng = np.random.default_rng(0)
    ids = np.array([f"m{i}" for i in range(args.members)], dtype=object)
    n = args.events
    events = pd.DataFrame(
        {
            "member_id": rng.choice(ids, n),
            "ts": (AS_OF - pd.to_timedelta(rng.uniform(0, 400, n), unit="D")).astype(
                "datetime64[us]"
            ),
            "event": rng.choice(["sent", "sent", "redeemed"], n),
            "offer_id": rng.choice(list(offers.ids), n),
            "channel": "checkout",
            "decision_id": [f"d{i}" for i in range(n)],
        }
    )
    without = events.assign(decision_id=None)
    history = SnapshotHistory.from_events(events, ids, offers)
    member = 5
    own = events.loc[(events["member_id"] == ids[member]) & (events["event"] == "sent")]
    t = AS_OF.to_pydatetime()
    fresh = [PastGrant("o1", "checkout", t - pd.Timedelta(days=k), False, False, f"x{k}")
             for k in range(3)]  # fmt: skip
    exported = [
        PastGrant(o, "checkout", ts.to_pydatetime(), False, False, d)
        for o, ts, d in zip(own["offer_id"], own["ts"], own["decision_id"], strict=True)
    ][:3]
    print(f"{n:,} events of {args.members:,} members; {len(history.exported):,} sends with a "
          f"decision id; member {member}: {len(history.member_events(member).cols)} events, "
          f"{len(exported)} of its store grants exported")  # fmt: skip

    def ms(f, number: int = 2) -> float:
        return timeit.timeit(f, number=number) / number * 1e3

    def us(f, number: int = 3000) -> float:
        return timeit.timeit(f, number=number) / number * 1e6

    loads = {
        "load, decision ids (ms)": lambda: SnapshotHistory.from_events(events, ids, offers),
        "load, no decision ids (ms)": lambda: SnapshotHistory.from_events(without, ids, offers),
        "ExportedSends.from_events (ms)": lambda: ExportedSends.from_events(events),
    }
    rows: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for label, f in loads.items():
            rows.setdefault(label, []).append(ms(f))
        for label, grants in (("not exported", fresh), ("exported", exported)):
            one = us(lambda g=grants: history.state_one(member, offers, AS_OF, g))
            rows.setdefault(f"state_one, 3 grants {label} (us)", []).append(one)
    for label, values in rows.items():
        print(f"{label:42s} " + "  ".join(f"{v:7.1f}" for v in values))


if __name__ == "__main__":
    main()
