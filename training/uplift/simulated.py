"""Uplift on the simulated program, where the true individual effects are known.

The simulator (``features.sim.simulate``, docs/simulator.md) writes ``truth/assignments.parquet``:
one row per past campaign assignment (campaign_id, member_id, offer_id, treated, ...) with, for
treated rows, the true effects of the offer sent *at that send time* over the simulator's
effect window (14 days): ``tau_conversion`` (difference in P(any purchase)) and ``tau_spend``
(difference in expected spend). Control rows have no true effect (NaN).

Here the training set is built from the canonical tables exactly as for real data
(:mod:`training.uplift.data`), with the same 14-day window, and every treated row gets the
true effect of its own send. A model's prediction for a row's own treatment (its offer kind at
the default grain) is compared with that truth:

* ``truth_corr``: Pearson correlation between predicted and true effects over treated rows;
* ``ate_pred`` / ``ate_true`` / ``ate_error``: the mean predicted effect over those rows, the
  mean true effect, and their difference (estimated minus true average effect on the treated).

Nothing here is used to train: truth only scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from features.sources import schema as S
from models.uplift.encoding import FeatureEncoder
from training.uplift.data import (
    CONVERSION,
    OUTCOMES,
    SPEND,
    TREATMENT,
    TrainingSetConfig,
    UpliftTrainingSet,
    build_training_set,
)
from training.uplift.datasets import UpliftDataset

__all__ = [
    "TAU",
    "attach_truth",
    "load_assignments",
    "simulated_benchmark_data",
    "truth_metrics",
    "truth_table",
]

log = logging.getLogger(__name__)

TAU = {CONVERSION: "tau_conversion", SPEND: "tau_spend"}


def load_assignments(data_dir: Path | str) -> pd.DataFrame:
    """``truth/assignments.parquet`` of a written simulated program."""
    path = Path(data_dir) / "truth" / "assignments.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: true effects exist only for simulated programs "
            "(offers simulate --out DIR writes them)"
        )
    return pd.read_parquet(path)


def attach_truth(data: UpliftTrainingSet, assignments: pd.DataFrame) -> pd.DataFrame:
    """``tau_conversion`` and ``tau_spend`` of every row of ``data`` (NaN for control rows).

    Rows are matched on (campaign_id, member_id); a treated row without a truth row, or one
    whose offer differs from the truth's, raises ``ValueError``.
    """
    keys = [S.CAMPAIGN_ID, S.MEMBER_ID]
    truth = assignments[[*keys, S.OFFER_ID, *TAU.values()]].rename(
        columns={S.OFFER_ID: "_truth_offer"}
    )
    merged = data.frame[[*keys, S.OFFER_ID, TREATMENT]].merge(
        truth, on=keys, how="left", validate="many_to_one"
    )
    treated = (merged[TREATMENT] != data.control).to_numpy()
    missing = treated & merged[TAU[CONVERSION]].isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"truth: {int(missing.sum())} treated row(s) have no true effect, e.g. "
            f"{merged.loc[missing, keys].head(3).to_dict('records')}"
        )
    other = treated & (merged[S.OFFER_ID] != merged["_truth_offer"]).to_numpy()
    if other.any():
        raise ValueError(f"truth: {int(other.sum())} treated row(s) name another offer")
    out = merged[list(TAU.values())].astype(np.float64)
    out.loc[~treated, :] = np.nan
    return out.reset_index(drop=True)


def truth_metrics(
    labels: ArrayLike,
    predictions: NDArray[np.float64],
    treatments: Sequence[Any],
    truth: ArrayLike,
) -> list[dict[str, Any]]:
    """Per treatment, then ``"all"`` (pooled): rows, truth_corr, ate_pred, ate_true, ate_error.

    ``labels`` is each row's treatment label, ``predictions`` the model's ``(n, k)`` effects
    with columns in the order of ``treatments``, ``truth`` each row's true effect of its own
    treatment (NaN where unknown, e.g. control rows, which are skipped).
    """
    labels = np.asarray(labels, dtype=object)
    truth = np.asarray(truth, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.ndim != 2 or predictions.shape != (labels.size, len(treatments)):
        raise ValueError(
            f"predictions must have shape ({labels.size}, {len(treatments)}); "
            f"got {predictions.shape}"
        )
    col = pd.Series(range(len(treatments)), index=pd.Index(list(treatments), dtype=object))
    idx = pd.Series(labels).map(col).to_numpy(dtype=np.float64)
    keep = np.isfinite(truth) & np.isfinite(idx)
    rows = np.flatnonzero(keep)
    own = predictions[rows, idx[keep].astype(np.int64)]
    frame = pd.DataFrame({"treatment": labels[keep], "pred": own, "true": truth[keep]})
    out = [_row(str(t), g) for t, g in frame.groupby("treatment", sort=True)]
    if len(out) > 1:
        out.append(_row("all", frame))
    return out


def _row(name: str, g: pd.DataFrame) -> dict[str, Any]:
    varies = len(g) > 2 and g["pred"].std() > 0 and g["true"].std() > 0
    # a constant prediction or truth has no correlation (and numpy would warn dividing by 0)
    corr = float(np.corrcoef(g["pred"], g["true"])[0, 1]) if varies else float("nan")
    ate_pred, ate_true = float(g["pred"].mean()), float(g["true"].mean())
    return {
        "treatment": name,
        "rows": len(g),
        "truth_corr": corr,
        "ate_pred": ate_pred,
        "ate_true": ate_true,
        "ate_error": ate_pred - ate_true,
    }


def simulated_benchmark_data(
    data_dir: Path | str | None = None,
    members: int = 50_000,
    seed: int = 7,
    config: TrainingSetConfig | None = None,
) -> tuple[UpliftDataset, dict[str, NDArray[np.float64]]]:
    """The simulated program as a benchmark data set, with each row's true effects.

    From ``data_dir`` (a written simulated program with ``truth/``) or, without it, a program
    simulated in memory with ``members`` and ``seed``. Rows: every send and control member of
    every campaign (see :mod:`training.uplift.data`); features encoded with
    :class:`~models.uplift.encoding.FeatureEncoder`; treatment = offer kind (default);
    outcomes ``conversion`` and ``spend`` in 14 days. Returns the data set and
    ``{outcome: true effect per row}`` (NaN on control rows).
    """
    from features.pipeline import tables_from_frames

    config = config or TrainingSetConfig()
    if data_dir is not None:
        data = build_training_set(Path(data_dir), config)
        assignments = load_assignments(data_dir)
        name = f"simulated:{Path(data_dir).name}"
    else:
        from features.sim.simulate import simulate

        program = simulate(members, seed=seed)
        data = build_training_set(tables_from_frames(program), config)
        assignments = program.truth["assignments"]
        name = f"simulated:{members}:{seed}"
    taus = attach_truth(data, assignments)
    encoder = FeatureEncoder().fit(data.features)
    X = pd.DataFrame(encoder.transform(data.features), columns=encoder.feature_names_out_)
    dataset = UpliftDataset(
        name=name,
        X=X,
        treatment=data.frame[TREATMENT].to_numpy(dtype=object),
        control=data.control,
        treatments=data.treatments,
        outcomes={o: data.frame[o].to_numpy() for o in OUTCOMES},
    )
    truth = {o: taus[TAU[o]].to_numpy(dtype=np.float64) for o in OUTCOMES}
    return dataset, truth


def truth_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """:func:`truth_metrics` rows as a frame (for logs and Markdown)."""
    return pd.DataFrame(rows).set_index("treatment")
