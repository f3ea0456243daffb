"""The real-time path: the decision for ONE member in well under a millisecond.

:meth:`DecisionEngine.decide` is built for many members at once (arrays over members x offers,
then an output frame); for one member its fixed cost (tens of milliseconds of frame and string
work) dominates. :class:`SingleDecider` gives the same decision for a batch of one without that
cost: it reuses the engine's own vectorised rules on a one-row table (moments, eligibility,
score parts: one definition of every rule) and, for the rest, the one-member paths that live in
each rule's own module: ``fallback.fill``, ``surprise.pick_surprise_one``,
``allocation.greedy_one`` and ``budget_cut``, ``exploration.explore_one`` and
``explain.explain_one``, on the member's offer vector.

When budgets would bind for this one member (an allocation price, a repair or a final cut), it
defers to :meth:`DecisionEngine.decide`, so the answer is always the engine's.

The result is one dict per decision, the shape the API returns (see
:func:`decision_dicts`, which gives the same dicts from a ``DecisionBatch``);
``tests/unit/test_engine_single.py`` checks both paths agree member by member.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pandas as pd

from features.sources import schema as S
from features.sources.schema import OFFER_KINDS
from serving.engine.allocation import budget_cut, greedy_one
from serving.engine.context import DecisionContext
from serving.engine.decision import Decision, Fallback, Reward
from serving.engine.eligibility import eligibility
from serving.engine.engine import DecisionEngine
from serving.engine.errors import EngineInputError
from serving.engine.explain import MemberView, explain_one
from serving.engine.exploration import explore_one
from serving.engine.fallback import FallbackTables, fill
from serving.engine.hashing import decision_id_one, unit_one
from serving.engine.members import MemberTable
from serving.engine.moments import DETECTED_MOMENTS, Moments, basket_moments, detect_moments
from serving.engine.scoring import ScoreInputs, score
from serving.engine.state import MemberOfferState
from serving.engine.surprise import pick_surprise_one

__all__ = ["SingleDecider", "decision_dicts"]


class _Defer(Exception):
    """Budgets bind for this member: the general engine decides."""


class SingleDecider:
    """Decisions for one member at a time (see the module docstring)."""

    def __init__(self, engine: DecisionEngine, fallback_tables: FallbackTables | None) -> None:
        self.engine = engine
        self.tables = fallback_tables
        o = engine.offers
        self._empty = MemberOfferState.empty(1, o.n)
        self._kind_names = [OFFER_KINDS[k] for k in o.kind]
        self._moment = [m or "" for m in o.moment]
        self._n_kinds = int(o.kind.max()) + 1 if o.n else 1
        self._full_budgets = engine.budgets()

    # ---- the decision -------------------------------------------------------------------------
    def decide(
        self,
        member: MemberTable,
        p_redeem: np.ndarray,
        incremental_spend: np.ndarray,
        has_row: bool,
        context: DecisionContext,
        budget_left: np.ndarray | None = None,
        model_versions: dict[str, str] | None = None,
        member_mask: np.ndarray | None = None,
        member_flags: np.ndarray | None = None,
        state: MemberOfferState | None = None,
        served: str | None = None,
    ) -> Decision:
        """The decision for the one member of ``member`` (a one-row table) as a dict:
        ``decision_id``, ``fallback``, ``held_out``, ``explored``, ``moments`` and ``offers``
        (slot order; each with ``offer_id``, ``name``, ``kind``, ``reward_value``, ``rank``,
        ``score`` (EIV), ``propensity``, ``explanation``, ``reasons``, ``cost``, ``surprise``,
        ``moment``). Answers through the engine when budgets bind for this member.

        ``member_mask`` (m,) and ``member_flags`` (len(DETECTED_MOMENTS),): this member's
        ``eligibility.member_eligibility`` and ``moments.member_moments``, precomputed (the
        serving bundle computes them once per snapshot member); computed here when absent.
        ``state``: the member's history (a 1-row :class:`MemberOfferState`; none: empty).
        ``served``: the models' own fallback name for a model row (default personalised)."""
        if member.n != 1:
            raise EngineInputError(f"single decision: {member.n} members, expected 1")
        state = state if state is not None else self._empty
        try:
            return self._decide(
                member, p_redeem, incremental_spend, has_row, context, budget_left,
                member_mask, member_flags, state, served,
            )  # fmt: skip
        except _Defer:
            return self._via_engine(
                member, p_redeem, incremental_spend, has_row, context, budget_left,
                model_versions, state, served,
            )  # fmt: skip

    def _via_engine(self, member, p, s, has_row, context, budget_left, versions, state, served):
        inputs = ScoreInputs(
            np.asarray(p, dtype=np.float64)[None, :],
            np.asarray(s, dtype=np.float64)[None, :],
            has_row=np.array([has_row]),
            model_versions=dict(versions or {}),
            fallback=None if served is None else np.array([served], dtype=object),
        )
        batch = self.engine.decide(
            member, inputs, context, state=state, budget_left=budget_left,
            fallback_tables=self.tables,
        )  # fmt: skip
        return decision_dicts(self.engine, batch.rows, [str(member.ids[0])], context.k)[0]

    def _decide(
        self, member, p_in, s_in, has_row, context, budget_left, own, flags0, state, served
    ):
        eng, st, o = self.engine, self.engine.settings, self.engine.offers
        member_id = str(member.ids[0])
        p2, s2, names = fill(
            np.asarray(p_in)[None, :],
            np.asarray(s_in)[None, :],
            np.array([bool(has_row)]),
            member.segment,
            self.tables,
            st.fallback_chain,
            None if served is None else np.array([served], dtype=object),
        )
        p, s, fallback = p2[0], s2[0], str(names[0])
        held = st.holdout.share > 0 and unit_one(member_id, "holdout/" + st.holdout.salt) < (
            st.holdout.share
        )
        if flags0 is None:
            moments = detect_moments(member, st.moments)
        elif np.isfinite(member.num["basket_total"][0]) or member.basket_is_milestone[0]:
            moments = Moments(flags0[None, :] | basket_moments(member, st.moments).flags)
        else:
            moments = Moments(np.asarray(flags0, dtype=bool)[None, :])
        if budget_left is None:
            budgets, left = self._full_budgets, o.budget
        else:
            budgets, left = eng.budgets(budget_left), np.asarray(budget_left, np.float64)
        own_mask = None if own is None else np.asarray(own, dtype=bool)[None, :]
        el = eligibility(member, o, state, context, moments, left, st, member_mask=own_mask)
        slots = 0 if held else int(el.slots[0])
        mask = el.mask[0] & (slots > 0)
        sc = score(p[None, :], s[None, :], member, o, st.scoring, eng.boosts_, context.channel)
        eiv, cost, rank = sc.eiv[0], sc.expected_cost[0], sc.rank_score[0]
        expected = st.allocation.budget_basis == "expected"
        base = sc.p_redeem[0] if expected else np.ones(o.n, np.float32)
        W, limits = budgets.weights, budgets.limits

        # Surprise, then the regular slots (the rules' one-member paths).
        surprise = pick_surprise_one(
            eiv, cost, mask, o.surprise, st.surprise.min_value, st.surprise.budget, budgets, base
        )
        kind_count = np.zeros(self._n_kinds, dtype=np.int32)
        reg_limits = limits
        if surprise >= 0:
            kind_count[o.kind[surprise]] = 1
            if budgets.n:
                reg_limits = np.maximum(limits - W[:, surprise] * float(base[surprise]), 0.0)
        reg_slots = slots - int(surprise >= 0 and st.surprise.takes_slot)
        allowed = mask & ~o.surprise
        k = max(reg_slots, 0)
        greedy = greedy_one(
            rank, allowed, o.kind, st.max_per_kind, kind_count, k, st.scoring.min_value
        )
        if budgets.n and greedy:
            g = np.asarray(greedy)
            if ((W[:, g] @ base[g].astype(np.float64)) > reg_limits).any():
                raise _Defer  # prices 0 do not hold for this member: the engine decides
        greedy += [-1] * (max(k, 1) - len(greedy))
        room = np.all((W <= 0) | (reg_limits[:, None] > 0), axis=0) if budgets.n else True
        key = f"{context.request_id}|{member_id}"
        slate, prop_r, expl_r, _n = explore_one(
            greedy, allowed & room, o.kind, st.max_per_kind, reg_slots,
            st.exploration.epsilon, key, st.exploration.salt, kind_count,
        )  # fmt: skip
        shown = [surprise, *slate]
        prop = [1.0 if surprise >= 0 else math.nan, *prop_r]
        expl = [False, *expl_r]

        # Final budget pass (only when the picks could overspend; then as the engine does).
        picks = np.asarray(shown, dtype=np.int64)
        valid = picks >= 0
        if budgets.n and valid.any():
            pj = picks[valid]
            total = W[:, pj] @ base[pj].astype(np.float64)
            if (total > limits * (1 + 1e-12) + 1e-9).any():
                safe = np.maximum(picks, 0)
                order = np.where(np.asarray(expl), 1e30, rank[safe])
                order[0] = 1e31
                spend = np.where(valid, base[safe], 0.0).astype(np.float64)
                keep = budget_cut(picks[None, :], order[None, :], spend[None, :], W, limits)[0]
                picks = np.where(keep, picks, -1)

        flags = tuple(moments.flags[0].tolist())
        in_moments = [name for name, f in zip(DETECTED_MOMENTS, flags, strict=True) if f]
        first_moment = in_moments[0] if in_moments else ""
        view = None
        offers: list[Reward] = []
        explored_any = False
        limit = context.k
        for slot, j in enumerate(picks.tolist()):
            if j < 0 or (limit is not None and len(offers) >= limit):
                continue
            view = view or _view(member)
            moment = (self._moment[j] or first_moment) if o.surprise[j] else ""
            text = explain_one(
                moment, o.tags[j], o.category[j], flags, fallback,
                expl[slot], view, st.moments, st.explanations,
            )  # fmt: skip
            pr = prop[slot]
            explored_any = explored_any or expl[slot]
            offers.append(
                {
                    "offer_id": o.ids[j],
                    "name": o.names[j][:200],
                    "kind": self._kind_names[j],
                    "reward_value": float(o.reward_value[j]),
                    "rank": len(offers) + 1,
                    "score": _finite(float(eiv[j])),
                    "propensity": min(max(pr, 0.0), 1.0) if math.isfinite(pr) else 1.0,
                    "explanation": text[:1000],
                    "reasons": [moment] if moment else [],
                    "cost": float(o.cost[j]),
                    "surprise": bool(o.surprise[j]),
                    "moment": moment or None,
                }
            )
        return {
            "decision_id": decision_id_one(key),
            "fallback": fallback,
            "held_out": bool(held),
            "explored": explored_any,
            "moments": in_moments,
            "offers": offers,
        }


def _finite(x: float) -> float:
    """``np.nan_to_num`` of one float."""
    if math.isnan(x):
        return 0.0
    if math.isinf(x):
        return math.copysign(np.finfo(np.float64).max, x)
    return x


def _view(member: MemberTable) -> MemberView:
    return MemberView(
        num={k: float(v[0]) for k, v in member.num.items()},
        shares={k: float(v[0]) for k, v in member.shares.items()},
        stage=int(member.stage[0]),
        tier=int(member.tier[0]),
        segment=member.segment[0],
        next_tier=member.next_tier[0],
        basket_is_milestone=bool(member.basket_is_milestone[0]),
    )


def decision_dicts(
    engine: DecisionEngine, rows: pd.DataFrame, member_ids: list[str], k: int | None = None
) -> list[Decision]:
    """The decision dicts (:meth:`SingleDecider.decide`'s shape) of ``member_ids`` from a
    ``DecisionBatch.rows`` frame (request order; offers in slot order, at most ``k``)."""
    o = engine.offers
    member = rows[S.MEMBER_ID].to_numpy(dtype=object)
    status = rows["status"].to_numpy(dtype=object)
    offer = rows[S.OFFER_ID].to_numpy(dtype=object)
    decision = rows["decision_id"].to_numpy(dtype=object)
    fallback = rows["fallback"].to_numpy(dtype=object)
    explored = rows["explored"].to_numpy(dtype=bool)
    moments = rows["in_moments"].to_numpy(dtype=object)
    moment = rows["moment"].to_numpy(dtype=object)
    kind = rows[S.KIND].to_numpy(dtype=object)
    eiv = np.nan_to_num(rows["eiv"].to_numpy(dtype=np.float64))
    prop = rows["propensity"].to_numpy(dtype=np.float64)
    prop = np.where(np.isfinite(prop), np.clip(prop, 0.0, 1.0), 1.0)
    text = rows["explanation"].to_numpy(dtype=object)
    shown = status == "offers"
    j = np.where(shown, pd.Index(o.ids).get_indexer(offer), -1)
    out: dict[str, Decision] = {}
    for r in range(len(rows)):  # rows of this request only (members x slots)
        mid = member[r]
        d = out.get(mid)
        if d is None:
            m = str(moments[r])
            d = out[mid] = {
                "decision_id": str(decision[r]),
                "fallback": cast(Fallback, str(fallback[r])),
                "held_out": status[r] == "held_out",
                "explored": False,
                "moments": [x for x in m.split(",") if x and x != "nan"],
                "offers": [],
            }
        if not shown[r] or (k is not None and len(d["offers"]) >= k):
            continue
        jj = int(j[r])
        d["explored"] = d["explored"] or bool(explored[r])
        d["offers"].append(
            {
                "offer_id": str(offer[r]),
                "name": o.names[jj][:200],
                "kind": str(kind[r]),
                "reward_value": float(o.reward_value[jj]),
                "rank": len(d["offers"]) + 1,
                "score": float(eiv[r]),
                "propensity": float(prop[r]),
                "explanation": str(text[r])[:1000],
                "reasons": [str(moment[r])] if moment[r] else [],
                "cost": float(o.cost[jj]),
                "surprise": bool(o.surprise[jj]),
                "moment": str(moment[r]) or None,
            }
        )
    return [out[m] for m in member_ids]
