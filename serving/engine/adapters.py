"""Thin adapters from the models' outputs to :class:`ScoreInputs` (plain arrays).

* the affinity pyfunc (``models.affinity.pyfunc``) returns one row per (member, offer) with
  ``p_redeem`` and ``fallback``: :func:`affinity_matrix` pivots it to members x offers, and a
  member has a model row when every one of its rows was served ``personalised``;
* an uplift learner (``models.uplift``, or its ONNX predictor) returns ``(n, n_treatments)``
  effects whose columns are ``treatments_`` (offer ids, or offer kinds):
  :func:`uplift_matrix` maps them to the catalog's offers (offers without an arm get
  ``missing``).

The engine itself never imports a model package.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import schema as S
from features.schema import OFFER_KINDS
from serving.engine.errors import EngineInputError
from serving.engine.offers import OfferTable
from serving.engine.scoring import ScoreInputs
from serving.engine.settings import PERSONALISED

__all__ = ["affinity_matrix", "score_inputs", "uplift_matrix"]


def affinity_matrix(
    frame: pd.DataFrame, member_ids: np.ndarray, offers: OfferTable
) -> tuple[np.ndarray, np.ndarray]:
    """(members x offers) P(redeem) (nan where absent) and whether each member has a model row."""
    for col in (S.MEMBER_ID, S.OFFER_ID, "p_redeem"):
        if col not in frame.columns:
            raise EngineInputError(f"affinity output: missing column {col!r}")
    rows = pd.Index(np.asarray(member_ids, dtype=object)).get_indexer(
        frame[S.MEMBER_ID].astype(str).to_numpy(dtype=object)
    )
    cols = pd.Index(list(offers.ids)).get_indexer(
        frame[S.OFFER_ID].astype(str).to_numpy(dtype=object)
    )
    ok = (rows >= 0) & (cols >= 0)
    p = np.full((len(member_ids), offers.n), np.nan)
    p[rows[ok], cols[ok]] = frame["p_redeem"].to_numpy(dtype=np.float64)[ok]
    has_row = np.isfinite(p).all(axis=1)
    if "fallback" in frame.columns:
        cold = np.zeros(len(member_ids), dtype=bool)
        served = frame["fallback"].astype(str).to_numpy(dtype=object)
        np.logical_or.at(cold, rows[ok], served[ok] != PERSONALISED)
        has_row &= ~cold
    return p, has_row


def uplift_matrix(
    effects: np.ndarray,
    treatments: list[str] | tuple[str, ...],
    offers: OfferTable,
    grain: str = "kind",
    missing: float = np.nan,
) -> np.ndarray:
    """(n, n_offers) effects: each offer takes its own arm (``grain="offer"``) or its kind's."""
    eff = np.asarray(effects, dtype=np.float64)
    if eff.ndim != 2 or eff.shape[1] != len(treatments):
        raise EngineInputError(
            f"uplift effects: shape {eff.shape} for {len(treatments)} treatments"
        )
    if grain not in ("kind", "offer"):
        raise EngineInputError(f"uplift grain: {grain!r} is not 'kind' or 'offer'")
    arm = {str(t): j for j, t in enumerate(treatments)}
    keys = list(offers.ids) if grain == "offer" else [OFFER_KINDS[k] for k in offers.kind]
    out = np.full((eff.shape[0], offers.n), missing, dtype=np.float64)
    for j, key in enumerate(keys):
        if key in arm:
            out[:, j] = eff[:, arm[key]]
    return out


def score_inputs(
    affinity: pd.DataFrame,
    effects: np.ndarray,
    treatments: list[str] | tuple[str, ...],
    member_ids: np.ndarray,
    offers: OfferTable,
    grain: str = "kind",
    model_versions: dict[str, str] | None = None,
) -> ScoreInputs:
    """Both models' outputs as engine inputs; offers without an uplift arm get no effect (0)."""
    p, has_row = affinity_matrix(affinity, member_ids, offers)
    s = uplift_matrix(effects, treatments, offers, grain, missing=0.0)
    return ScoreInputs(
        np.where(has_row[:, None], np.nan_to_num(p, nan=0.0), np.nan),
        np.where(has_row[:, None], s, np.nan),
        has_row=has_row,
        model_versions=dict(model_versions or {}),
    )
