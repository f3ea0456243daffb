"""The one adapter from the served models' outputs to the engine's inputs (plain arrays).

Every path that decides (the API's bundle at load time, ``offers score`` per chunk, policy
evaluation) turns model outputs into :class:`ScoreInputs` here, with one set of rules:

* **affinity** (the pyfunc of ``models.affinity.pyfunc``), called through ``predict`` on every
  (member, offer) pair (with the member's ``segment`` when the frame has it): P(redeem) is the
  model's calibrated ``p_redeem``; where it is NaN (a model without a calibrator) the logistic
  of its ``score`` stands in; an offer the model has never seen (NaN score) gets 0. The model
  answers for every member it is given (its own fallback chain scores members without history
  by segment or global popularity), and the member's ``fallback`` name is the one it served:
  ``personalised`` when any pair was personalised, else the most common of its pairs' names.
  The engine's own fallback tables are only for members with no model row at all (a member
  the snapshot does not hold). An output without a ``fallback`` column counts as personalised.
  With ``baskets`` (the checkout context: one basket per member, its categories / products as
  item keys such as ``category:coffee``), each member's basket goes to the model as its
  ``basket`` column and is folded into that member's affinity (the same fold-in the serving
  bundle computes in numpy at checkout, :class:`models.affinity.foldin.FoldIn`).
* **uplift** (``models.uplift.pyfunc``), called through ``predict`` with
  ``params={"outcomes": [outcome]}`` (only that outcome is computed): each offer takes its own
  column ``<outcome>:<offer_id>``, else its kind's ``<outcome>:<kind>``, else no effect (0).
  With ``uncertainty_z`` > 0 (``ScoringSettings.uncertainty_z``) the effect is taken at its
  lower confidence bound, ``effect - z x se``, where ``se`` is the standard error of the
  offer's (else its kind's) level that the model carries in its meta (``effect_se``, written
  by ``offers train uplift``); a model without it is used as is.

The engine never imports a model package: it only calls ``predict`` on what it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.sources import schema as S
from serving.engine.offers import OfferTable
from serving.engine.scoring import ScoreInputs
from serving.engine.settings import GLOBAL_POPULAR, PERSONALISED, SEGMENT_POPULAR

__all__ = [
    "affinity_matrix",
    "effect_se",
    "lower_bound",
    "model_inputs",
    "predict_frame",
    "python_model",
    "redeem_probability",
    "uplift_matrix",
]

SPEND_OUTCOME = "spend"
UPLIFT_BLOCK_ROWS = 20_000  # members per uplift predict call (bounded memory at 1M members)


def _python_model(loaded: Any) -> Any:
    """The PythonModel behind a loaded MLflow pyfunc (or the object itself)."""
    unwrap = getattr(loaded, "unwrap_python_model", None)
    if unwrap is not None:
        try:
            return unwrap()
        except Exception:  # not a python_function model with a PythonModel: use it as is
            return loaded
    inner = getattr(loaded, "model", None)  # a local artifact model bound to predict(frame)
    return inner if inner is not None and hasattr(inner, "predict") else loaded


python_model = _python_model  # public: the serving bundle builds its fold-in from it


def redeem_probability(p_redeem: np.ndarray, score: np.ndarray | None) -> np.ndarray:
    """The affinity model's P(redeem) with the rules of the module docstring: NaN becomes the
    logistic of the score, or 0 for an offer the model has never seen (NaN score)."""
    p = np.asarray(p_redeem, dtype=np.float64)
    if score is not None:
        score = np.asarray(score, dtype=np.float64)
        with np.errstate(over="ignore"):
            logistic = 1.0 / (1.0 + np.exp(-np.nan_to_num(score)))
        p = np.where(np.isnan(p), np.where(np.isnan(score), 0.0, logistic), p)
    return np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)


def predict_frame(
    loaded: Any, frame: pd.DataFrame, params: dict[str, Any] | None = None
) -> pd.DataFrame:
    """``predict`` of a model: the PythonModel's own (``predict(None, frame, params)``) when
    there is one, else ``loaded.predict(frame)``.

    Why the PythonModel: MLflow's input schema enforcement refuses float columns for integer
    features, and member features read from Parquet are float wherever a column has nulls."""
    model = _python_model(loaded)
    if model is not loaded:
        try:
            return model.predict(None, frame, params)
        except TypeError:  # a PythonModel without params
            return model.predict(None, frame)
    return loaded.predict(frame)


def affinity_matrix(
    model: Any,
    members: pd.DataFrame,
    offers: OfferTable,
    segment_column: str = "segment",
    baskets: Sequence[Sequence[str] | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(P(redeem) (n, m) float64 in [0, 1], fallback name per member (n,) object); see the
    module docstring (``baskets``: one per member, None or empty for no basket)."""
    ids = members[S.MEMBER_ID].astype(str).to_numpy(dtype=object)
    n, m = len(ids), offers.n
    if n == 0:
        return np.zeros((0, m)), np.zeros(0, dtype=object)
    pairs = pd.DataFrame(
        {
            S.MEMBER_ID: np.repeat(ids, m),
            S.OFFER_ID: np.tile(np.asarray(offers.ids, dtype=object), n),
        }
    )
    if segment_column in members:
        seg = members[segment_column].astype(object).to_numpy()
        pairs["segment"] = np.repeat(seg, m)
    if baskets is not None:
        if len(baskets) != n:
            raise ValueError(f"baskets: {len(baskets)} baskets for {n} members")
        joined = np.array(["|".join(map(str, b)) if b else "" for b in baskets], dtype=object)
        pairs["basket"] = np.repeat(joined, m)
    out = predict_frame(model, pairs)
    if "p_redeem" not in out:
        raise ValueError(f"affinity model output has no p_redeem column (has {list(out)})")
    score = out["score"].to_numpy(dtype=np.float64) if "score" in out else None
    p = redeem_probability(out["p_redeem"].to_numpy(dtype=np.float64), score).reshape(n, m)
    names = np.full(n, PERSONALISED, dtype=object)
    if "fallback" in out:
        served = out["fallback"].to_numpy(dtype=object).reshape(n, m)
        personal = (served == PERSONALISED).any(axis=1)
        for name in (GLOBAL_POPULAR, SEGMENT_POPULAR):  # the most common wins; ties: segment
            count = (served == name).sum(axis=1)
            other = served == (SEGMENT_POPULAR if name == GLOBAL_POPULAR else GLOBAL_POPULAR)
            names = np.where(~personal & (count > 0) & (count >= other.sum(axis=1)), name, names)
    return p, names


def uplift_matrix(
    model: Any,
    members: pd.DataFrame,
    offers: OfferTable,
    outcome: str = SPEND_OUTCOME,
    block_rows: int = UPLIFT_BLOCK_ROWS,
) -> np.ndarray:
    """(n, m) effect on ``outcome`` per member and offer (see the module doc), in blocks."""
    n = len(members)
    out = np.zeros((n, offers.n), dtype=np.float64)
    keys = list(zip(offers.ids, offers.kind_names(), strict=True))
    for a in range(0, n, block_rows):
        block = members.iloc[a : a + block_rows]
        effects = predict_frame(model, block, {"outcomes": [outcome]})
        for j, (offer_id, kind) in enumerate(keys):
            for col in (f"{outcome}:{offer_id}", f"{outcome}:{kind}"):
                if col in effects.columns:
                    out[a : a + len(block), j] = effects[col].to_numpy(dtype=np.float64)
                    break
    return np.nan_to_num(out)


def effect_se(model: Any, offers: OfferTable, outcome: str = SPEND_OUTCOME) -> np.ndarray:
    """(m,) standard error of each offer's effect level on ``outcome`` from the uplift model's
    meta (its own treatment, else its kind's, else 0)."""
    meta = getattr(_python_model(model), "meta_", None) or {}
    se = (meta.get("effect_se") or {}).get(outcome) or {}
    out = np.zeros(offers.n, dtype=np.float64)
    for j, (offer_id, kind) in enumerate(zip(offers.ids, offers.kind_names(), strict=True)):
        value = se.get(str(offer_id), se.get(str(kind)))
        if value is not None and np.isfinite(value) and value > 0:
            out[j] = float(value)
    return out


def lower_bound(effects: np.ndarray, se: np.ndarray, z: float) -> np.ndarray:
    """``effects - z x se``: (n, m) effects at their lower confidence bound, ``se`` one per
    column (the one rule of ``ScoringSettings.uncertainty_z``)."""
    eff = np.asarray(effects, dtype=np.float64)
    s = np.asarray(se, dtype=np.float64)
    if eff.ndim != 2 or s.shape != (eff.shape[1],):
        raise ValueError(f"se must have one entry per arm ({eff.shape[-1]}); got {s.shape}")
    if not (np.isfinite(z) and z >= 0):
        raise ValueError(f"uncertainty_z must be a finite number >= 0; got {z!r}")
    return eff - z * s[None, :]


def model_inputs(
    affinity: Any,
    uplift: Any,
    members: pd.DataFrame,
    offers: OfferTable,
    *,
    segment_column: str = "segment",
    outcome: str = SPEND_OUTCOME,
    model_versions: dict[str, str] | None = None,
    baskets: Sequence[Sequence[str] | None] | None = None,
    uncertainty_z: float = 0.0,
) -> ScoreInputs:
    """Both models' outputs for ``members`` x the catalog's ``offers`` as engine inputs
    (``baskets``: the checkout context, one per member; ``uncertainty_z``: effects at their
    lower confidence bound; see the module docstring)."""
    if not (np.isfinite(uncertainty_z) and uncertainty_z >= 0):
        raise ValueError(f"uncertainty_z must be a finite number >= 0; got {uncertainty_z!r}")
    p, names = affinity_matrix(affinity, members, offers, segment_column, baskets)
    s = uplift_matrix(uplift, members, offers, outcome)
    if uncertainty_z > 0:
        s = lower_bound(s, effect_se(uplift, offers, outcome), uncertainty_z)
    return ScoreInputs(
        p,
        s,
        has_row=np.ones(len(p), dtype=bool),
        model_versions=dict(model_versions or {}),
        fallback=names,
    )
