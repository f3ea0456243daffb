"""Decisions: member offers, checkout rewards (budget reserved at grant time), batch NDJSON
and moments. Handlers are ``async``; the engine runs on the bundle's in-memory arrays and only
the store writes that correctness needs (budget and cap reservations) touch the database;
decision records go to the batched ``DecisionLogWriter``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
import pandas as pd
from anyio import to_thread
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse

from features import schema as S
from serving.api.bundle import ServingBundle
from serving.api.deps import CheckoutWriter, OffersReader, StateDep
from serving.api.schemas import (
    _ID_PATTERN,
    MAX_K,
    BatchOffersLine,
    BatchOffersRequest,
    Channel,
    CheckoutRequest,
    CheckoutResponse,
    ErrorResponse,
    MemberOffersResponse,
    Moment,
    MomentsResponse,
    OfferOut,
    RewardOut,
)
from serving.engine import DETECTED_MOMENTS, DecisionContext, detect_moments
from serving.store import utcnow

router = APIRouter(prefix="/v1", tags=["decisions"])
log = logging.getLogger(__name__)

MemberId = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID_PATTERN)]
BATCH_CHUNK = 500
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def _bundle(state: Any) -> ServingBundle:
    holder = state.bundle
    if holder is None or holder.current is None:
        raise HTTPException(status_code=503, detail="models not loaded")
    return holder.current


def _now() -> pd.Timestamp:
    return pd.Timestamp(utcnow())


def _request_id() -> str:
    return uuid.uuid4().hex


def _offers(bundle: ServingBundle, rows: pd.DataFrame) -> list[OfferOut]:
    """The shown offers of one member's decision rows (in slot order)."""
    o = bundle.engine.offers
    shown = rows.loc[rows["status"] == "offers"]
    out = []
    for rank, r in enumerate(shown.itertuples(index=False), start=1):
        j = o.ids.index(r.offer_id)
        prop = float(r.propensity)
        reasons = [r.moment] if r.moment else []
        out.append(
            OfferOut(
                offer_id=r.offer_id,
                name=o.names[j][:200],
                kind=str(r.kind),
                reward_value=float(o.reward_value[j]),
                rank=rank,
                score=float(np.nan_to_num(r.eiv)),
                propensity=1.0 if not np.isfinite(prop) else min(max(prop, 0.0), 1.0),
                explanation=str(r.explanation)[:1000],
                reasons=reasons,
            )
        )
    return out


def _record(state: Any, rows: pd.DataFrame, offers: list[OfferOut], versions: dict) -> None:
    """Queue the decision record and count it (per offer and fallback)."""
    first = rows.iloc[0]
    fallback = str(first["fallback"])
    if state.decision_log is not None:
        state.decision_log.submit(
            {
                "decision_id": str(first["decision_id"]),
                "member_id": str(first[S.MEMBER_ID]),
                "channel": str(first[S.CHANNEL]),
                "offers": [
                    {
                        "offer_id": x.offer_id,
                        "rank": x.rank,
                        "score": x.score,
                        "propensity": x.propensity,
                    }
                    for x in offers
                ],
                "model_versions": versions,
                "fallback": fallback,
            }
        )
    counter = state.metrics.decisions
    if not offers:
        counter.labels("none", fallback).inc()
    for x in offers:
        counter.labels(x.offer_id, fallback).inc()


@router.get("/members/{member_id}/offers", response_model=MemberOffersResponse, responses=_ERRORS)
async def member_offers(
    member_id: MemberId,
    state: StateDep,
    _: OffersReader,
    channel: Annotated[Channel, Query()] = "app",
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 5,
) -> MemberOffersResponse:
    """Ranked offers with explanations; unknown members get cold-start offers (fallback named)."""
    bundle = _bundle(state)
    ctx = DecisionContext(channel, _now(), _request_id(), k=k)
    batch = bundle.decide([member_id], ctx, exhausted=state.bundle.exhausted)
    rows = batch.rows
    offers = _offers(bundle, rows)[:k]
    _record(state, rows, offers, bundle.versions)
    first = rows.iloc[0]
    return MemberOffersResponse(
        decision_id=str(first["decision_id"]),
        member_id=member_id,
        channel=channel,
        offers=offers,
        fallback=str(first["fallback"]),
        model_versions=bundle.versions,
        held_out=bool((rows["status"] == "held_out").any()),
        explored=bool(rows["explored"].any()),
    )


def _grant(state: Any, bundle: ServingBundle, member_id: str, offers: list[OfferOut]) -> list[str]:
    """Reserve each offer's budget (and the member's yearly surprise cap); returns granted ids.

    Runs in a worker thread: one conditional UPDATE per offer with a budget counter.
    """
    store = state.store
    o = bundle.engine.offers
    counters = state.budget_counters
    granted, exhausted = [], set()
    year = str(utcnow().year)
    cap = bundle.engine.settings.surprise.yearly_cap
    for x in offers:
        j = o.ids.index(x.offer_id)
        if o.surprise[j] and not store.reserve_member_cap(member_id, "surprise", year, cap):
            continue
        if x.offer_id in counters:
            amount = float(o.cost[j]) if o.budget_unit[j] == "money" else 1.0
            if amount > 0 and not store.reserve_budget(x.offer_id, amount):
                exhausted.add(x.offer_id)
                continue
        granted.append(x.offer_id)
    if exhausted:
        state.bundle.mark_exhausted(exhausted)
    return granted


@router.post(
    "/checkout/rewards",
    response_model=CheckoutResponse,
    responses={**_ERRORS, 422: {"model": ErrorResponse}},
)
async def checkout_rewards(
    body: CheckoutRequest, state: StateDep, _: CheckoutWriter
) -> CheckoutResponse:
    """Rewards to grant now for this basket, a surprise when a moment applies; each reward's
    budget is reserved atomically in the store before it is returned."""
    bundle = _bundle(state)
    as_of = pd.Timestamp(body.ts) if body.ts is not None else _now()
    ctx = DecisionContext(body.channel, as_of, _request_id())
    batch = bundle.decide(
        [body.member_id], ctx, basket_total=body.total, exhausted=state.bundle.exhausted
    )
    rows = batch.rows
    offers = _offers(bundle, rows)
    granted = set(await to_thread.run_sync(_grant, state, bundle, body.member_id, offers))
    offers = [x for x in offers if x.offer_id in granted]
    _record(state, rows, offers, bundle.versions)
    o = bundle.engine.offers
    shown = rows.set_index(S.OFFER_ID)
    rewards = []
    for x in offers:
        j = o.ids.index(x.offer_id)
        moment = str(shown.at[x.offer_id, "moment"]) or None
        rewards.append(
            RewardOut(
                offer_id=x.offer_id,
                name=x.name,
                kind=x.kind,
                reward_value=x.reward_value,
                cost=float(o.cost[j]),
                surprise=bool(o.surprise[j]),
                moment=moment,
                explanation=x.explanation,
            )
        )
    first = rows.iloc[0]
    moments = [m for m in str(first["in_moments"]).split(",") if m and m != "nan"]
    return CheckoutResponse(
        decision_id=str(first["decision_id"]),
        member_id=body.member_id,
        rewards=rewards,
        moments=moments,
        fallback=str(first["fallback"]),
        model_versions=bundle.versions,
    )


def _batch_lines(state: Any, bundle: ServingBundle, ids: list[str], ctx: DecisionContext) -> str:
    """NDJSON lines for one chunk of members (request order)."""
    batch = bundle.decide(ids, ctx, exhausted=state.bundle.exhausted)
    lines = []
    by_member = dict(tuple(batch.rows.groupby(S.MEMBER_ID, sort=False)))
    k = ctx.k or MAX_K
    for member_id in ids:
        rows = by_member[member_id]
        offers = _offers(bundle, rows)[:k]
        _record(state, rows, offers, bundle.versions)
        line = BatchOffersLine(
            member_id=member_id,
            decision_id=str(rows["decision_id"].iloc[0]),
            offers=offers,
            fallback=str(rows["fallback"].iloc[0]),
            model_versions=bundle.versions,
            held_out=bool((rows["status"] == "held_out").any()),
        )
        lines.append(line.model_dump_json())
    return "\n".join(lines) + "\n"


@router.post(
    "/offers/batch",
    responses={
        **_ERRORS,
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "one BatchOffersLine JSON object per member, in request order",
        },
    },
)
async def batch_offers(
    body: BatchOffersRequest, state: StateDep, _: OffersReader
) -> StreamingResponse:
    """Offers for up to 10,000 members as an NDJSON stream (one line per member)."""
    bundle = _bundle(state)
    ids = list(dict.fromkeys(body.member_ids))  # a member asked twice is decided once
    ctx = DecisionContext(body.channel, _now(), _request_id(), k=body.k)

    async def lines() -> AsyncIterator[str]:
        for start in range(0, len(ids), BATCH_CHUNK):
            chunk = ids[start : start + BATCH_CHUNK]
            yield await to_thread.run_sync(_batch_lines, state, bundle, chunk, ctx)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/members/{member_id}/moments", response_model=MomentsResponse, responses=_ERRORS)
async def member_moments(member_id: MemberId, state: StateDep, _: OffersReader) -> MomentsResponse:
    """The surprise moments detected for the member now (from the feature snapshot)."""
    bundle = _bundle(state)
    table, _inputs = bundle.inputs([member_id])
    flags = detect_moments(table, bundle.engine.settings.moments).flags[0]
    names = [DETECTED_MOMENTS[c] for c in np.flatnonzero(flags)]
    return MomentsResponse(member_id=member_id, moments=[Moment(name=n) for n in names])
