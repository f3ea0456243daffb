"""The decision engine: one pure function of (members, model outputs, state, request) -> decisions.

Both callers use :meth:`DecisionEngine.decide`: e-mail batch scoring with millions of members
(budgets shared over the whole send, prices solved by the allocation) and the API with one
member (a batch of one; pass the last send's ``prices`` to get the batch's decision). Steps:

1. fill members without a model row through the fallback chain;
2. program holdout (salted hash): those members get no offers, the decision is still recorded;
3. surprise moments, eligibility, channel caps;
4. score parts (EIV) and the lifecycle policy's ranking score;
5. at most one surprise (best EIV per cost within the surprise and offer budgets);
6. the other slots by budget-aware allocation, respecting diversity;
7. exploration per slot with the mixture propensity; a final pass keeps every budget;
8. explanations, score parts, model versions, decision ids.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.arrays import ArrowStringArray

from features.catalog.model import Catalog
from features.sources import schema as S
from features.sources.schema import OFFER_KINDS
from serving.engine.allocation import Budgets, allocate, budget_cut, offer_prices
from serving.engine.context import DecisionContext
from serving.engine.eligibility import eligibility
from serving.engine.errors import EngineInputError
from serving.engine.explain import explain, moment_of
from serving.engine.exploration import explore
from serving.engine.fallback import FallbackTables, fill
from serving.engine.hashing import EncodedTexts, decision_id_matrix, encode_texts
from serving.engine.holdout import in_holdout
from serving.engine.members import MemberTable
from serving.engine.moments import DETECTED_MOMENTS, Moments, detect_moments
from serving.engine.offers import OfferTable
from serving.engine.scoring import ScoreInputs, Scores, lifecycle_boosts, score
from serving.engine.settings import EngineSettings
from serving.engine.state import MemberOfferState
from serving.engine.surprise import pick_surprises

__all__ = ["STATUSES", "DecisionBatch", "DecisionEngine", "Prepared"]

log = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("offers", "held_out", "no_offer")
TOTAL_BUDGET = "total_money"
NO_OFFER_TEXT = "no eligible offer worth sending"
OFFER_KINDS_ALL = tuple(OFFER_KINDS)


@dataclass
class DecisionBatch:
    """Decisions of one request for many members.

    ``rows``: one row per shown offer, plus one row (``offer_id`` null) for each member who got
    none (``status`` ``held_out`` or ``no_offer``), so every decision is recorded. Columns: see
    docs/engine.md. ``prices``: the allocation's price per budget (reuse them in real time).
    """

    rows: pd.DataFrame
    prices: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float | dict[str, float]] = field(default_factory=dict)  # budget_usage: a dict
    picks: np.ndarray | None = None  # (n_members, slots) offer indices in input order, -1 pads

    def shown(self) -> pd.DataFrame:
        """Only the rows with an offer."""
        return self.rows.loc[self.rows[S.OFFER_ID].notna()]

    def to_offer_events(self) -> pd.DataFrame:
        """Canonical ``offer_events`` rows: ``sent`` per shown offer, ``held_out`` per holdout
        member (event ids derived from the decision id and slot)."""
        r = self.rows.loc[self.rows["status"].isin(["offers", "held_out"])]
        held = r["status"] == "held_out"
        slot = r["slot"].fillna(0).astype(int).astype(str)
        return pd.DataFrame(
            {
                S.EVENT_ID: (r["decision_id"] + ":" + slot).to_numpy(),
                S.MEMBER_ID: r[S.MEMBER_ID].to_numpy(),
                S.TS: r["as_of"].to_numpy(),
                S.EVENT: np.where(held, "held_out", "sent"),
                S.OFFER_ID: r[S.OFFER_ID].to_numpy(),
                S.CAMPAIGN_ID: r["request_id"].to_numpy(),
                S.CHANNEL: r[S.CHANNEL].to_numpy(),
                S.DECISION_ID: r["decision_id"].to_numpy(),
                S.PROPENSITY: r["propensity"].to_numpy(),
            }
        )


@dataclass
class Prepared:
    """What every policy over one request shares: members, fallbacks, holdout, moments,
    budgets, eligibility (``mask``, ``slots``), score parts and the budget base."""

    members: MemberTable
    fallback: np.ndarray
    held: np.ndarray
    moments: Moments
    budgets: Budgets
    mask: np.ndarray
    slots: np.ndarray
    scores: Scores
    base: np.ndarray
    encoded_ids: EncodedTexts | None = None  # member ids encoded once for every hash


class DecisionEngine:
    """Decisions for a catalog under settings (see the module docstring)."""

    def __init__(self, catalog: Catalog, settings: EngineSettings | None = None) -> None:
        self.catalog = catalog
        self.settings = settings or EngineSettings()
        self.offers = OfferTable.from_catalog(catalog, self.settings.lifecycle.extra_tags)
        self.boosts_ = lifecycle_boosts(self.offers, self.settings.lifecycle)
        self.categories = sorted({c for c in self.offers.category if c})

    def __getstate__(self) -> dict[str, object]:
        """Pickle without the encoding cache (Spark broadcasts the engine)."""
        state = self.__dict__.copy()
        state.pop("_last_encoded", None)
        return state

    # ---- inputs ---------------------------------------------------------------------------
    def _encoded(self, ids: np.ndarray) -> EncodedTexts:
        """``encode_texts(ids)``, remembered for the last ids array (the same member table is
        decided several times when budget prices are solved)."""
        last = getattr(self, "_last_encoded", None)
        if last is not None and last[0]() is ids:
            return last[1]
        enc = encode_texts(ids)
        try:
            self._last_encoded: tuple[weakref.ref[np.ndarray], EncodedTexts] | None = (
                weakref.ref(ids),
                enc,
            )
        except TypeError:  # not weak-referenceable: no memory
            self._last_encoded = None
        return enc

    def member_table(self, frame: pd.DataFrame | MemberTable) -> MemberTable:
        """Validate a member-feature frame (or pass a table through)."""
        if isinstance(frame, MemberTable):
            return frame
        return MemberTable.from_frame(frame, self.categories, self.settings.segment_column)

    def budgets(
        self,
        budget_left: np.ndarray | None = None,
        total_money: float | None = None,
    ) -> Budgets:
        """Per-offer budgets (what is left, in each budget's unit) and an optional total."""
        o = self.offers
        left = o.budget.copy() if budget_left is None else np.asarray(budget_left, np.float64)
        if left.shape != (o.n,):
            raise EngineInputError(f"budget_left: shape {left.shape}, expected ({o.n},)")
        has = np.flatnonzero(np.isfinite(left))
        W = np.zeros((len(has), o.n))
        money = np.array([u == "money" for u in o.budget_unit])
        W[np.arange(len(has)), has] = np.where(money[has], o.cost[has], 1.0)
        names = [f"offer:{o.ids[j]}" for j in has]
        limits = list(np.maximum(left[has], 0.0))
        if total_money is not None:
            W = np.vstack([W, o.cost[None, :]])
            names.append(TOTAL_BUDGET)
            limits.append(max(float(total_money), 0.0))
        return Budgets(W, np.asarray(limits, dtype=np.float64), tuple(names))

    # ---- the decision -------------------------------------------------------------------------
    def prepare(
        self,
        members: pd.DataFrame | MemberTable,
        inputs: ScoreInputs,
        context: DecisionContext,
        state: MemberOfferState | None = None,
        budget_left: np.ndarray | None = None,
        fallback_tables: FallbackTables | None = None,
        total_money: float | None = None,
        restrict: np.ndarray | None = None,
    ) -> Prepared:
        """Steps 1-4 of the module docstring: what every policy over this request shares
        (the evaluation runs its baselines on the same eligibility and budgets).

        ``restrict``: an extra (members x offers) mask ANDed into eligibility, e.g. the offers a
        campaign allows per member."""
        st = self.settings
        o = self.offers
        mt = self.member_table(members)
        n, m = mt.n, o.n
        inputs.check(n, m)
        if inputs.has_row is None:  # check() derives it when not given
            raise EngineInputError("inputs.has_row: not set by ScoreInputs.check")
        state = state or MemberOfferState.empty(n, m)
        p, s, fallback = fill(
            inputs.p_redeem,
            inputs.incremental_spend,
            inputs.has_row,
            mt.segment,
            fallback_tables,
            st.fallback_chain,
            inputs.fallback,
        )
        enc = self._encoded(mt.ids)
        held = in_holdout(enc, st.holdout)
        moments = detect_moments(mt, st.moments)
        budgets = self.budgets(budget_left, total_money)
        left = o.budget.copy() if budget_left is None else np.asarray(budget_left, np.float64)
        el = eligibility(mt, o, state, context, moments, left, st)
        slots = np.where(held, 0, el.slots)
        mask = el.mask & (slots > 0)[:, None]
        if restrict is not None:
            if np.shape(restrict) != mask.shape:
                raise EngineInputError(
                    f"restrict: shape {np.shape(restrict)}, expected {mask.shape}"
                )
            mask &= np.asarray(restrict, dtype=bool)
        sc = score(p, s, mt, o, st.scoring, self.boosts_, context.channel)
        base = sc.p_redeem if st.allocation.budget_basis == "expected" else np.ones_like(p)
        return Prepared(mt, fallback, held, moments, budgets, mask, slots, sc, base, enc)

    def decide(
        self,
        members: pd.DataFrame | MemberTable,
        inputs: ScoreInputs,
        context: DecisionContext,
        state: MemberOfferState | None = None,
        budget_left: np.ndarray | None = None,
        fallback_tables: FallbackTables | None = None,
        total_money: float | None = None,
        prices: dict[str, float] | None = None,
        restrict: np.ndarray | None = None,
        frame: bool = True,
    ) -> DecisionBatch:
        """Decide for every member of ``members`` (rows aligned with ``inputs``).

        ``total_money``: an extra budget on the expected cost of the whole send; ``prices``:
        fixed prices per budget name (from an earlier batch) instead of solving them.
        ``frame=False``: skip the output rows (explanations, ids); ``rows`` then holds only the
        shown rows' ``status``, ``offer_id``, ``p_redeem``, ``is_surprise`` and
        ``expected_cost``, in the same order (for budget usage, e.g. when solving prices).
        """
        st = self.settings
        o = self.offers
        pr = self.prepare(
            members, inputs, context, state, budget_left, fallback_tables, total_money, restrict
        )
        mt, fallback, held, moments, budgets = (
            pr.members,
            pr.fallback,
            pr.held,
            pr.moments,
            pr.budgets,
        )
        mask, slots, sc, base = pr.mask, pr.slots, pr.scores, pr.base
        n, m = mt.n, o.n

        # Surprise (one at most), then the regular slots.
        surprise = pick_surprises(
            sc.eiv,
            sc.expected_cost,
            mask,
            o.surprise,
            st.surprise.min_value,
            st.surprise.budget,
            budgets,
            base,
        )
        has_s = surprise >= 0
        rows_all = np.arange(n)
        n_kinds = int(o.kind.max()) + 1
        kind_count = np.zeros((n, n_kinds), dtype=np.int32)
        kind_count[rows_all[has_s], o.kind[surprise[has_s]]] = 1
        regular_limits = budgets.limits.copy()
        if has_s.any() and budgets.n:
            js = surprise[has_s]
            per_offer = np.bincount(js, weights=base[has_s, js].astype(np.float64), minlength=m)
            regular_limits = np.maximum(regular_limits - budgets.weights @ per_offer, 0.0)
        reg_budgets = Budgets(budgets.weights, regular_limits, budgets.names)
        reg_slots = slots - (has_s & st.surprise.takes_slot)
        allowed = mask & ~o.surprise[None, :]
        k = int(reg_slots.max()) if n else 0
        fixed = None if prices is None else _price_vector(prices, budgets)
        stats: dict[str, float | dict[str, float]]
        if k > 0:
            alloc = allocate(
                sc.rank_score,
                base,
                allowed,
                reg_slots,
                o.kind,
                reg_budgets,
                max_per_kind=st.max_per_kind,
                k=k,
                min_value=st.scoring.min_value,
                max_iter=st.allocation.max_iter,
                tolerance=st.allocation.tolerance,
                chunk_rows=st.allocation.chunk_rows,
                repair_rounds=st.allocation.repair_rounds,
                prices=fixed,
                kind_count=kind_count,
            )
            lam, greedy = alloc.prices, alloc.picks
            stats = {"iterations": alloc.iterations, "repaired": alloc.repaired}
            stats["refilled"] = alloc.refilled
        else:
            lam = np.zeros(budgets.n) if fixed is None else fixed
            greedy = np.full((n, 1), -1, dtype=np.int64)
            k = 1
            stats = {"iterations": 0, "repaired": 0, "refilled": 0}
        unit = offer_prices(lam, budgets)

        # Exploration among the regular eligible offers that still have budget.
        room = np.all((budgets.weights <= 0) | (regular_limits[:, None] > 0), axis=0)
        enc = pr.encoded_ids if pr.encoded_ids is not None else encode_texts(mt.ids)
        keys = _encoded_keys(context, enc)
        slate = explore(
            greedy,
            allowed & room[None, :],
            o.kind,
            st.max_per_kind,
            reg_slots,
            st.exploration.epsilon,
            keys,
            st.exploration.salt,
            kind_count=kind_count,
        )
        # Final budget pass: surprises first, then explored picks, then by adjusted value.
        shown = np.concatenate([surprise[:, None], slate.offers], axis=1)
        prop = np.concatenate([np.where(has_s, 1.0, np.nan)[:, None], slate.propensity], axis=1)
        expl = np.concatenate([np.zeros((n, 1), bool), slate.explored], axis=1)
        ncand = np.concatenate([has_s[:, None].astype(np.int64), slate.n_candidates], axis=1)
        safe = np.maximum(shown, 0)
        r_ = rows_all[:, None]
        adj = sc.rank_score[r_, safe] - base[r_, safe] * unit[safe]
        order_value = np.where(expl, 1e30, adj)
        order_value[:, 0] = 1e31
        if budgets.n:
            spend = np.where(shown >= 0, base[r_, safe], 0.0).astype(np.float64)
            keep = budget_cut(shown, order_value, spend, budgets.weights, budgets.limits)
            stats["final_dropped"] = int(((shown >= 0) & ~keep).sum())
            shown = np.where(keep, shown, -1)
        stats["budget_usage"] = _usage_dict(shown, base, budgets)
        if frame:
            rows = self._frame(
                mt, context, shown, prop, expl, ncand, held, fallback, moments, sc, unit, inputs,
                keys,
            )  # fmt: skip
        else:
            rows = self._lite_frame(shown, sc)
        prices_out = dict(zip(budgets.names, map(float, lam), strict=True))
        return DecisionBatch(rows=rows, prices=prices_out, stats=stats, picks=shown)

    # ---- output -----------------------------------------------------------------------------
    def _lite_frame(self, shown: np.ndarray, sc: Scores) -> pd.DataFrame:
        """The shown rows' offer, P(redeem), surprise flag and expected cost (``frame=False``)."""
        i, r = np.nonzero(shown >= 0)
        j = shown[i, r]
        return pd.DataFrame(
            {
                "status": pd.Categorical.from_codes(np.zeros(len(i), np.int8), ["offers"]),
                S.OFFER_ID: pd.Categorical.from_codes(j, list(self.offers.ids)),
                "p_redeem": sc.p_redeem[i, j].astype(np.float64),
                "is_surprise": self.offers.surprise[j],
                "expected_cost": sc.expected_cost[i, j].astype(np.float64),
            }
        )

    def _frame(
        self, mt, context, shown, prop, expl, ncand, held, fallback, moments, sc, unit, inputs,
        keys=None,
    ):  # fmt: skip
        """The output rows (see docs/engine.md), sorted by member (input order) then slot.

        Built column by column on numpy arrays in the final order; string columns go straight
        to Arrow (dictionary codes for the few distinct values, raw UTF-8 bytes for ids)."""
        o, st = self.offers, self.settings
        if keys is None:
            keys = _encoded_keys(context, encode_texts(mt.ids))
        i, slot_raw = np.nonzero(shown >= 0)
        j = shown[i, slot_raw]
        # slots are numbered 0.. in shown order (surprise first)
        slot = (np.cumsum(shown >= 0, axis=1) - 1)[i, slot_raw]
        none = np.flatnonzero((shown < 0).all(axis=1))
        nn = len(none)
        who = np.r_[i, none]
        order = np.lexsort((np.r_[slot, np.full(nn, -1)], who))
        who = who[order]
        moment_names = np.asarray(DETECTED_MOMENTS, dtype=object)
        moment = moment_of(j, o, moments, i)
        text = explain(
            i, j, moment, fallback[i], expl[i, slot_raw], mt, o, moments, st.moments,
            st.explanations,
        )  # fmt: skip
        versions = json.dumps(inputs.model_versions, sort_keys=True)
        nan = np.full(nn, np.nan)

        def col(shown_vals: object, none_vals: object) -> np.ndarray:
            return np.concatenate([np.asarray(shown_vals), np.asarray(none_vals)])[order]

        def codes(shown_codes: np.ndarray, none_codes: np.ndarray | int) -> np.ndarray:
            none_codes = np.broadcast_to(np.asarray(none_codes, dtype=np.int64), (nn,))
            return col(np.asarray(shown_codes, dtype=np.int64), none_codes)

        status_none = np.where(held[none], 1, 2)
        fb_codes, fb_names = pd.factorize(np.asarray(fallback, dtype=object))
        mo_codes, mo_names = pd.factorize(np.r_[moment, np.full(nn, "", object)].astype(object))
        ex_codes, ex_names = pd.factorize(
            np.r_[text, np.where(held[none], "program holdout", NO_OFFER_TEXT)].astype(object)
        )
        n_rows = len(order)

        def const(value: str) -> pd.api.extensions.ExtensionArray:
            return _str_codes(np.zeros(n_rows, dtype=np.int64), [value])

        in_codes, in_names = _moment_codes(moments.flags[np.r_[i, none]], moment_names)
        columns = {
            "decision_id": _str_fixed(decision_id_matrix(keys)[who]),
            S.MEMBER_ID: _str_bytes(keys.matrix[who], keys.lengths[who]),
            "request_id": const(context.request_id),
            S.CHANNEL: const(context.channel),
            "as_of": context.as_of,
            "status": _str_codes(codes(np.zeros(len(i)), status_none), STATUSES),
            "slot": pd.array(col(slot, np.full(nn, -1)), dtype="Int64"),
            S.OFFER_ID: _str_codes(codes(j, -1), o.ids),
            S.KIND: _str_codes(codes(o.kind[j], -1), OFFER_KINDS_ALL),
            "is_surprise": col(o.surprise[j], np.zeros(nn, bool)),
            "moment": _str_codes(mo_codes[order], mo_names),
            "in_moments": _str_codes(in_codes[order], in_names),
            "explored": col(expl[i, slot_raw], np.zeros(nn, bool)),
            "propensity": col(prop[i, slot_raw], np.where(held[none], st.holdout.share, nan)),
            "n_candidates": col(ncand[i, slot_raw], np.zeros(nn, np.int64)),
            "p_redeem": col(sc.p_redeem[i, j], nan),
            "incremental_margin": col(sc.incremental_margin[i, j], nan),
            "uplift_adjusted_margin": col(sc.uplift_adjusted_margin()[i, j], nan),
            "expected_cost": col(sc.expected_cost[i, j], nan),
            "eiv": col(sc.eiv[i, j], nan),
            "lifecycle_boost": col(sc.boost[i, j], nan),
            "rank_score": col(sc.rank_score[i, j], nan),
            "shadow_price": col(unit[j], nan),
            "fallback": _str_codes(fb_codes[np.r_[i, none][order]], fb_names),
            "explanation": _str_codes(ex_codes[order], ex_names),
            "model_versions": const(versions),
            "policy": const(st.fingerprint()),
        }
        return pd.DataFrame(columns)


_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)


def _str_codes(codes: np.ndarray, names: Iterable[object]) -> pd.api.extensions.ExtensionArray:
    """A pandas ``str`` array of ``names[codes]`` (code -1: null) via an Arrow dictionary."""
    codes = np.asarray(codes, dtype=np.int64)
    names = [str(x) for x in names]
    idx = pa.array(np.maximum(codes, 0).astype(np.int32), mask=codes < 0)
    d = pa.DictionaryArray.from_arrays(idx, pa.array(names, pa.large_string()))
    return ArrowStringArray(d.cast(pa.large_string()), dtype=_STR_DTYPE)


def _str_bytes(matrix: np.ndarray, lengths: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """A pandas ``str`` array from UTF-8 bytes (rows of ``matrix``, ``lengths`` each)."""
    n = len(lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = matrix[np.arange(matrix.shape[1])[None, :] < lengths[:, None]]
    arr = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))
    )
    return ArrowStringArray(arr, dtype=_STR_DTYPE)


def _str_fixed(matrix: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """A pandas ``str`` array from an (n, w) matrix of ASCII bytes, one string per row."""
    n, w = matrix.shape
    return _str_bytes(np.ascontiguousarray(matrix), np.full(n, w, dtype=np.int64))


def _moment_codes(flags: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per row, a code into comma-joined names of the flagged moments (one per pattern)."""
    flags = np.asarray(flags, dtype=bool)
    bits = (flags.astype(np.int64) << np.arange(flags.shape[1], dtype=np.int64)).sum(axis=1)
    patterns, inverse = np.unique(bits, return_inverse=True)
    table = [",".join(str(nm) for b, nm in enumerate(names) if c >> b & 1) for c in patterns]
    return inverse.ravel().astype(np.int64), table


def _keys(context: DecisionContext, member_ids: np.ndarray) -> np.ndarray:
    """``request_id|member_id`` per member: seeds decision ids and exploration draws."""
    return (context.request_id + "|" + pd.Series(member_ids, dtype=object).astype(str)).to_numpy(
        dtype=object
    )


def _encoded_keys(context: DecisionContext, encoded_ids: EncodedTexts) -> EncodedTexts:
    """``_keys`` without building the strings: the member ids behind a common prefix."""
    return encoded_ids.with_prefix(context.request_id + "|")


def _price_vector(prices: dict[str, float], budgets: Budgets) -> np.ndarray:
    unknown = sorted(set(prices) - set(budgets.names))
    if unknown:
        raise EngineInputError(f"prices: budgets {unknown} are not budgets of this decision")
    return np.array([float(prices.get(name, 0.0)) for name in budgets.names])


def _usage_dict(shown: np.ndarray, base: np.ndarray, budgets: Budgets) -> dict[str, float]:
    if not budgets.n:
        return {}
    i, r = np.nonzero(shown >= 0)
    j = shown[i, r]
    per_offer = np.bincount(j, weights=base[i, j].astype(np.float64), minlength=base.shape[1])
    use = budgets.weights @ per_offer
    return dict(zip(budgets.names, map(float, use), strict=True))
