"""How often the incrementality report's 95 % intervals hold the simulated program's true effect.

    python bench/report_coverage.py --members 10000 --seeds 1 2 3 4 --difficulty easy
    python bench/report_coverage.py --members 10000 --seeds 1 2 --difficulty realistic

For each seed: simulate, run the report (``serving.reports``) on the canonical tables, and
compare every group's interval (offers, moments, lifecycle stages, campaigns) with the mean of
``truth/assignments`` tau over the group's sends. Conversion is defined over 14 days; at
non-easy levels the true spend effect covers 42 days (pull-forward), so spend is also measured
with a 42-day window there. Prints one line per seed and outcome, then the pooled rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

# bench/features.py would shadow the package when run as a script.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from features.sim.config import SimConfig  # noqa: E402
from features.sim.simulate import simulate  # noqa: E402
from serving.reports import incrementality, unit_outcomes  # noqa: E402
from serving.reports.sources import from_data_dir  # noqa: E402

DIMS = (
    ("offer", "offer_id"),
    ("moment", "moment"),
    ("stage", "stage"),
    ("campaign", "campaign_id"),
)


def coverage(data: Path, outcome: str, window_days: float) -> tuple[int, int, float]:
    """(groups holding the truth, groups with an interval, mean |estimate - truth|)."""
    inputs = from_data_dir(data)
    units = unit_outcomes(inputs, window_days)
    table = incrementality(inputs, window_days, units=units)
    truth = pd.read_parquet(data / "truth" / "assignments.parquet")
    truth = truth.loc[truth["treated"]]
    t = units.loc[units["treated"]].merge(
        truth[["campaign_id", "member_id", "offer_id", f"tau_{outcome}"]],
        on=["campaign_id", "member_id", "offer_id"],
    )
    t["moment"] = t["offer_id"].map(inputs.offers.set_index("offer_id")["moment"])
    t["moment"] = t["moment"].fillna("regular")
    held = total = 0
    errors = []
    for dim, key in DIMS:
        true = t.groupby(key)[f"tau_{outcome}"].mean()
        rows = table.loc[table["dimension"] == dim].set_index("group")
        ci = rows[f"ci_{outcome}"]
        has = ci.map(lambda c: c[0] is not None)
        lo, hi = ci[has].str[0], ci[has].str[1]
        tau = true.reindex(lo.index)
        held += int(((tau >= lo) & (tau <= hi)).sum())
        total += int(has.sum())
        errors.extend((rows.loc[has, f"diff_{outcome}"] - tau).abs().tolist())
    return held, total, float(pd.Series(errors).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--difficulty", default="easy")
    args = ap.parse_args()
    windows = {"conversion": 14.0, "spend": 14.0 if args.difficulty == "easy" else 42.0}
    pooled = {k: [0, 0] for k in windows}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"s{seed}"
            simulate(args.members, seed, SimConfig(difficulty=args.difficulty)).write(out)
            for outcome, window in windows.items():
                held, total, err = coverage(out, outcome, window)
                pooled[outcome][0] += held
                pooled[outcome][1] += total
                print(
                    f"{args.difficulty} seed {seed} {outcome} ({window:g} d): "
                    f"{held}/{total} = {held / total:.3f}; mean |error| {err:.4f}"
                )
    for outcome, (held, total) in pooled.items():
        print(f"{args.difficulty} pooled {outcome}: {held}/{total} = {held / total:.3f}")


if __name__ == "__main__":
    main()
