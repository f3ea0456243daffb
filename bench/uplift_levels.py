"""How honest is each offer's spend level and its standard error? On simulated programs.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/uplift_levels.py DIR [DIR ...]

For each program (``offers simulate ... --out DIR``, with its ``truth/``): the training set
and time split of ``offers train uplift``, the control baseline (LightGBM on the control rows
of the training split), then each offer's spend level two ways, both shrunk by
``shrink_effects`` toward its kind as the shipped fit does:

* ``pooled``: the mean residual of the offer's treated rows, with their noise as its standard
  error (``level_fit`` without strata, the estimator before ``level_by_campaign``);
* ``campaign``: ``campaign_att``, campaign by campaign against each campaign's control rows,
  with the between-campaign variance (the shipped default).

Printed per program and estimator: the rms of z = (level - truth) / standard error, where the
truth is the mean true spend effect over the same rows (1 for an honest standard error), the
rmse of the levels, the mean standard error, and the between-campaign variance. A quality
figure, not a speed one; one fit per program (deterministic given the data).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

# run as a script, bench/ comes first on sys.path and bench/features.py would shadow the
# features package
sys.path[0] = str(Path(__file__).resolve().parents[1])

from features.sources import schema as S  # noqa: E402
from models.uplift import make_base_estimator  # noqa: E402
from models.uplift.encoding import FeatureEncoder  # noqa: E402
from training.uplift.calibration import campaign_att, shrink_effects  # noqa: E402
from training.uplift.data import (  # noqa: E402
    SPEND,
    TREATMENT,
    build_training_set,
    open_tables,
    time_split,
)
from training.uplift.fit import UpliftTrainSettings, _kind_of, resolve_treatment  # noqa: E402
from training.uplift.train import sends_per_offer  # noqa: E402


def program_levels(data_dir: Path) -> dict[str, float]:
    settings = resolve_treatment(UpliftTrainSettings(), sends_per_offer(data_dir))
    ts = build_training_set(open_tables(data_dir, "duckdb", None), settings.training_set_config())
    train, _, _ = time_split(ts, settings.test_share)
    fr = ts.frame[train]
    counts = fr[TREATMENT].value_counts()
    names = sorted(
        str(t) for t in counts.index if t != ts.control and counts[t] >= settings.min_treatment_rows
    )
    fr = fr[fr[TREATMENT].isin([*names, ts.control])].reset_index(drop=True)
    X = (
        FeatureEncoder()
        .fit(fr[list(ts.feature_columns)])
        .transform(fr[list(ts.feature_columns)], dtype=np.float32)
    )
    y = fr[SPEND].to_numpy(dtype=np.float64)
    y = y - y.mean()
    labels = fr[TREATMENT].to_numpy(dtype=object)
    control = labels == ts.control
    f0 = make_base_estimator(
        settings.base_learner, "regressor", settings.base_params, settings.seed
    )
    f0.fit(X[control], y[control])
    r = y - f0.predict(X)
    effects = pd.read_parquet(data_dir / "truth" / "effects.parquet")
    tau = effects.set_index([S.MEMBER_ID, S.OFFER_ID])["tau_spend"]
    true_row = np.full(len(fr), np.nan)
    treated = ~control
    keys = pd.MultiIndex.from_frame(fr.loc[treated, [S.MEMBER_ID, S.OFFER_ID]])
    true_row[treated] = tau.reindex(keys).to_numpy()
    kinds = _kind_of(fr, ts.control)
    groups = [kinds.get(t, t) for t in names] if kinds else None
    out: dict[str, float] = {"offers": float(len(names))}
    # pooled: the treated rows' mean residual and its noise
    att = np.array([r[labels == t].mean() for t in names])
    se = np.array([r[labels == t].std() / np.sqrt((labels == t).sum()) for t in names])
    truth = np.array([np.nanmean(true_row[labels == t]) for t in names])
    # campaign: the truth weighted as the level weights the campaigns
    c_att, c_se, c_truth, info = campaign_att(
        r, np.ones(len(r)), labels, names, ts.control, fr[S.CAMPAIGN_ID].to_numpy(object),
        np.nan_to_num(true_row),
    )  # fmt: skip
    for name, (a, s, t) in {"pooled": (att, se, truth), "campaign": (c_att, c_se, c_truth)}.items():
        shrunk, shrunk_se, _ = shrink_effects(a, s, groups)
        z = (shrunk - t) / shrunk_se
        out[f"{name}.rms_z"] = float(np.sqrt(np.mean(z**2)))
        out[f"{name}.share_z_above_2"] = float(np.mean(z > 2))
        out[f"{name}.rmse"] = float(np.sqrt(np.mean((shrunk - t) ** 2)))
        out[f"{name}.mean_se"] = float(np.mean(shrunk_se))
    out["tau2_campaign"] = info["tau2_campaign"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="simulated programs (with truth/)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    rows = {d.name: program_levels(d) for d in args.dirs}
    table = Table(title="Spend levels: pooled vs campaign by campaign (shrunk)")
    for col in ("program", "offers", "rms z pooled", "rms z campaign", "z > 2 pooled",
                "z > 2 campaign", "rmse pooled", "rmse campaign", "mean se pooled",
                "mean se campaign", "tau2 campaign"):  # fmt: skip
        table.add_column(col, justify="left" if col == "program" else "right")
    for name, o in rows.items():
        table.add_row(
            name, f"{o['offers']:.0f}",
            *(f"{o[f'{e}.rms_z']:.2f}" for e in ("pooled", "campaign")),
            *(f"{o[f'{e}.share_z_above_2']:.2f}" for e in ("pooled", "campaign")),
            *(f"{o[f'{e}.rmse']:.2f}" for e in ("pooled", "campaign")),
            *(f"{o[f'{e}.mean_se']:.2f}" for e in ("pooled", "campaign")),
            f"{o['tau2_campaign']:.2f}",
        )  # fmt: skip
    Console(width=200).print(table)
    for e in ("pooled", "campaign"):
        z = np.array([o[f"{e}.rms_z"] for o in rows.values()])
        print(f"{e}: rms z median {np.median(z):.2f}, range {z.min():.2f}-{z.max():.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
