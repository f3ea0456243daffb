"""The affinity model packaged as an MLflow pyfunc (models-from-code: nothing is pickled).

Artifacts (plain ``.npz`` arrays): ``model`` (the fitted model), ``rows`` (the training
interactions of known members: what the blend's frequency and recency terms read) and,
optionally, ``calibrator`` (score -> P(redeem)).

Input: one row per (member, candidate offer) pair, columns ``member_id`` and ``offer_id``;
optional ``segment`` (e.g. ``gold|active``, used for members without history) and ``basket``
(the current basket's categories or products, ``|``-separated bare ids of the model's purchase
kind or item keys such as ``category:coffee``: folded in at request time; a basket with no
entry the model knows changes nothing).
Output, one row per input row in the same order: ``score``, ``p_redeem`` (NaN without a
calibrator), ``rank`` (1 = best among the member's candidates) and ``fallback``
(``personalised``, ``segment_popular``, ``global_popular``, or ``unknown_offer`` for an offer the
model has never seen, which gets a NaN score and ranks last).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.affinity.base import AffinityModel
from models.affinity.calibration import RedeemCalibrator, member_terms, purchase_columns
from models.affinity.foldin import as_new_members, basket_keys, basket_rows
from models.affinity.interactions import AffinityInputError, Interactions, item_key, item_kind
from models.affinity.persist import load_interactions, load_model, save_interactions, save_model

__all__ = [
    "ENTRY_POINT",
    "INPUT_COLUMNS",
    "OUTPUT_COLUMNS",
    "AffinityPyfunc",
    "input_example",
    "save_artifacts",
    "signature",
]

ENTRY_POINT = Path(__file__).with_name("pyfunc_entry.py")
INPUT_COLUMNS = ("member_id", "offer_id", "segment", "basket")
OUTPUT_COLUMNS = ("member_id", "offer_id", "score", "p_redeem", "rank", "fallback")
UNKNOWN_OFFER = "unknown_offer"


def save_artifacts(
    model: AffinityModel,
    rows: Interactions,
    out_dir: Path,
    calibrator: RedeemCalibrator | None = None,
) -> dict[str, str]:
    """Write the artifacts to ``out_dir``; returns the ``artifacts`` mapping for log_model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arts = {
        "model": str(save_model(model, out_dir / "model.npz")),
        "rows": str(save_interactions(rows, out_dir / "rows.npz")),
    }
    if calibrator is not None:
        path = out_dir / "calibrator.npz"
        with path.open("wb") as fh:
            # numpy's savez stub has an allow_pickle: bool keyword; mypy checks the splat against it
            np.savez(fh, **calibrator.to_arrays())  # type: ignore[arg-type]
        arts["calibrator"] = str(path)
    return arts


def input_example(members: list[str], offers: list[str]) -> pd.DataFrame:
    """Every (member, offer) pair of the given ids, as the pyfunc expects them."""
    m, o = np.meshgrid(np.asarray(members, dtype=str), np.asarray(offers, dtype=str), indexing="ij")
    return pd.DataFrame({"member_id": m.ravel(), "offer_id": o.ravel()})


def signature() -> Any:
    """Input/output schema (``segment`` and ``basket`` optional)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "member_id"),
            ColSpec("string", "offer_id"),
            ColSpec("string", "segment", required=False),
            ColSpec("string", "basket", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "member_id"),
            ColSpec("string", "offer_id"),
            ColSpec("double", "score"),
            ColSpec("double", "p_redeem"),
            ColSpec("long", "rank"),
            ColSpec("string", "fallback"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


class AffinityPyfunc(PythonModel):
    """``load_context`` reads the arrays once; ``predict`` scores candidate pairs."""

    def load_context(self, context: Any) -> None:
        self.load(context.artifacts)

    def load(self, artifacts: dict[str, str]) -> AffinityPyfunc:
        """Load from artifact paths (also usable without MLflow)."""
        self.model_ = load_model(artifacts["model"])
        self.rows_ = load_interactions(artifacts["rows"])
        if not np.array_equal(self.rows_.item_ids, self.model_.item_ids_):
            raise AffinityInputError("artifacts: rows.npz and model.npz have different item ids")
        self.calibrator_ = None
        if artifacts.get("calibrator"):
            with np.load(artifacts["calibrator"], allow_pickle=False) as npz:
                self.calibrator_ = RedeemCalibrator.from_arrays({k: npz[k] for k in npz.files})
        kinds = set(item_kind(self.rows_.item_ids)) - {"offer"}
        self.basket_kind_ = kinds.pop() if len(kinds) == 1 else "category"
        self.purchase_cols_ = purchase_columns(self.rows_.item_ids)
        self.item_set_ = frozenset(self.rows_.item_ids.tolist())
        return self

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        df = _check_input(model_input)
        members, member_pos = np.unique(df["member_id"].to_numpy(dtype=str), return_inverse=True)
        batch = self._batch(df, members, member_pos)
        keys = item_key("offer", df["offer_id"].to_numpy(dtype=str))
        item_idx = pd.Index(self.model_.item_ids_).get_indexer(pd.Index(keys))
        known_items = np.unique(item_idx[item_idx >= 0])
        score = np.full(len(df), np.nan)
        fallback = np.full(len(df), UNKNOWN_OFFER, dtype=object)
        if len(known_items):
            s = self.model_.score(batch, known_items)
            col = np.searchsorted(known_items, item_idx)
            ok = item_idx >= 0
            score[ok] = s[member_pos[ok], col[ok]]
            fb = self.model_.fallback(batch, known_items)
            fallback[ok] = fb[member_pos[ok]]
        p = None
        if self.calibrator_ is not None:
            terms = None
            if self.calibrator_.uses_members:  # from the rows scored (with any basket)
                terms = member_terms(batch.confidence, batch.last_days, self.purchase_cols_)
                terms = terms[member_pos]
            p = self.calibrator_.predict(np.nan_to_num(score), keys, terms)
        p_redeem = np.where(np.isnan(score), np.nan, p) if p is not None else np.nan
        out = pd.DataFrame(
            {
                "member_id": df["member_id"].to_numpy(dtype=str),
                "offer_id": df["offer_id"].to_numpy(dtype=str),
                "score": score,
                "p_redeem": p_redeem,
            }
        )
        order = out.assign(_s=np.nan_to_num(score, nan=-np.inf))
        out["rank"] = (
            order.groupby("member_id")["_s"].rank(method="first", ascending=False).astype("int64")
        )
        out["fallback"] = fallback.astype(str)
        return out

    def _batch(self, df: pd.DataFrame, members: np.ndarray, pos: np.ndarray) -> Interactions:
        first = np.unique(pos, return_index=True)[1]
        batch = self.rows_.take(self.rows_.member_index(members))
        batch = replace(batch, member_ids=members)
        if "segment" in df.columns:
            given = df["segment"].to_numpy(dtype=object)[first]
            known = batch.segments if batch.segments is not None else np.full(len(members), "")
            seg = np.where(pd.isna(given), known, given).astype(str)
            batch = batch.with_segments(seg)
        if "basket" in df.columns:
            raw = df["basket"].to_numpy(dtype=object)[first]
            baskets = [[] if pd.isna(b) or b == "" else str(b).split("|") for b in raw]
            # a basket none of whose entries the model knows is no basket
            items = self.item_set_
            has = np.array(
                [any(k in items for k in basket_keys(b, self.basket_kind_)) for b in baskets]
            )
            if has.any():
                with_basket = basket_rows(batch, baskets, kind=self.basket_kind_)
                fold = as_new_members(with_basket)
                ids = np.where(has, fold.member_ids, batch.member_ids)
                batch = replace(with_basket, member_ids=ids)
        return batch


def _check_input(model_input: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(model_input, pd.DataFrame):
        raise AffinityInputError(f"input must be a DataFrame, got {type(model_input).__name__}")
    missing = [c for c in ("member_id", "offer_id") if c not in model_input.columns]
    if missing:
        raise AffinityInputError(f"input: missing column(s) {missing}")
    bad = model_input["member_id"].isna() | model_input["offer_id"].isna()
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())[:5].tolist()
        raise AffinityInputError(f"input: null member_id or offer_id in rows {rows}")
    return model_input.reset_index(drop=True)
