"""A tiny hand-made loyalty program whose features are computed by hand in the feature tests.

AS_OF is Wednesday 2024-06-12 12:00 (its ISO week starts Monday 2024-06-10).

* m1: joined 2023-01-15, born 1990-06-20; eight baskets, one of them exactly at AS_OF (not
  visible); offer events including one at AS_OF and one after it.
* m2: joined 2024-05-01 (onboarding), born 2000-02-29, no purchases, no offers.
* m3: joined 2022-03-01, no birth date but age 40; twelve purchases in Nov 2023 (lapsed).
* m4: joined exactly at AS_OF (not a member yet: excluded).
* m5: joined after AS_OF (excluded).
* m6: joined 2020-02-29; one big purchase 60 days before AS_OF (lapsing, platinum); a
  redemption without a send.
"""

from __future__ import annotations

import pandas as pd

from features.sources.io import to_canonical_frame

AS_OF = pd.Timestamp("2024-06-12 12:00:00")
T = pd.Timestamp


def members() -> pd.DataFrame:
    rows = [
        (
            "m1",
            T("2023-01-15 10:00"),
            T("1990-06-20"),
            "silver",
            10.0,
            None,
            "F",
            50000.0,
            "north",
            "A",
        ),
        ("m2", T("2024-05-01 00:00"), T("2000-02-29"), None, None, None, "M", None, "south", None),
        ("m3", T("2022-03-01 00:00"), None, None, None, 40.0, None, None, None, "B"),
        ("m4", AS_OF, None, None, None, None, None, None, None, None),
        ("m5", T("2024-07-01"), None, None, None, None, None, None, None, None),
        ("m6", T("2020-02-29 08:00"), None, None, None, None, None, None, None, None),
    ]
    cols = [
        "member_id",
        "joined_at",
        "birth_date",
        "tier",
        "points_balance",
        "age",
        "gender",
        "income",
        "region",
        "segment",
    ]
    return to_canonical_frame(pd.DataFrame(rows, columns=cols), "members")


def transactions() -> pd.DataFrame:
    lines = [
        # m1
        ("t1", "m1", AS_OF, 1000.0, "grocery"),  # at as_of: invisible
        ("t2", "m1", T("2024-06-12 11:59:59"), 10.0, "grocery"),
        ("t2", "m1", T("2024-06-12 11:59:59"), 5.0, "beauty"),
        ("t3", "m1", T("2024-06-05 10:00"), 20.0, "grocery"),
        ("t4", "m1", T("2024-05-29 09:00"), 100.0, "electronics"),
        ("t4", "m1", T("2024-05-29 09:00"), 5.0, None),
        ("t5", "m1", T("2024-05-15 08:00"), 30.0, "grocery"),
        ("t6", "m1", T("2024-04-01 12:00"), 200.0, "beauty"),
        ("t7", "m1", T("2023-09-01 12:00"), 400.0, "grocery"),
        ("t8", "m1", T("2023-03-01 12:00"), 1000.0, "toys"),
        ("t9", "m1", T("2024-06-20 12:00"), 50.0, "toys"),  # after as_of
        # m6
        ("t20", "m6", T("2024-04-13 12:00"), 4500.0, "home"),
    ]
    # m3: twelve purchases of 10.0 on 2023-11-01 .. 2023-11-12
    lines += [
        (f"t3{k:02d}", "m3", T("2023-11-01 09:00") + pd.Timedelta(days=k), 10.0, "grocery")
        for k in range(12)
    ]
    df = pd.DataFrame(lines, columns=["transaction_id", "member_id", "ts", "amount", "category"])
    return to_canonical_frame(df, "transactions")


def offers() -> pd.DataFrame:
    rows = [
        ("o1", "10% off", "discount_pct", 10.0, 8.0, 50.0, 14.0, "grocery"),
        ("o2", "200 points", "bonus_points", 2.0, 1.0, None, 30.0, None),
        ("o3", "news", "informational", 0.0, 0.0, None, None, None),
        ("o4", "free coffee", "free_item", 3.0, 0.0, None, 7.0, "grocery"),
    ]
    cols = [
        "offer_id",
        "name",
        "kind",
        "reward_value",
        "cost",
        "min_spend",
        "duration_days",
        "category",
    ]
    return to_canonical_frame(pd.DataFrame(rows, columns=cols), "offers")


def offer_events() -> pd.DataFrame:
    rows = [
        ("e1", "m1", T("2024-05-01 10:00"), "sent", "o1"),
        ("e2", "m1", T("2024-05-02 10:00"), "viewed", "o1"),
        ("e3", "m1", T("2024-05-03 10:00"), "redeemed", "o1"),
        ("e4", "m1", T("2024-06-01 10:00"), "sent", "o2"),
        ("e5", "m1", AS_OF, "viewed", "o2"),  # at as_of: invisible
        ("e6", "m1", T("2024-06-10 00:00"), "sent", "o3"),
        ("e7", "m1", T("2024-06-11 00:00"), "dismissed", "o3"),
        ("e8", "m1", T("2024-06-01 10:00"), "held_out", None),
        ("e9", "m1", T("2024-06-13 00:00"), "sent", "o1"),  # after as_of
        ("e10", "m6", T("2024-04-13 12:00"), "redeemed", "o2"),
    ]
    df = pd.DataFrame(rows, columns=["event_id", "member_id", "ts", "event", "offer_id"])
    return to_canonical_frame(df, "offer_events")


def frames() -> dict[str, pd.DataFrame]:
    """The four canonical tables."""
    return {
        "members": members(),
        "offers": offers(),
        "transactions": transactions(),
        "offer_events": offer_events(),
    }
