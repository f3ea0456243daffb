"""Decisions: member offers, batch NDJSON and moments (checkout rewards: ``routes.checkout``).
Handlers are ``async``; the engine runs on the bundle's in-memory arrays and decision records
go to the batched ``DecisionLogWriter``."""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

import numpy as np
import pandas as pd
from anyio import to_thread
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse

from serving.api.bundle import ServingBundle
from serving.api.deps import OffersReader, StateDep
from serving.api.schemas import (
    _ID_PATTERN,
    MAX_K,
    BatchOffersLine,
    BatchOffersRequest,
    Channel,
    ErrorResponse,
    MemberOffersResponse,
    Moment,
    MomentsResponse,
    OfferOut,
)
from serving.engine import DETECTED_MOMENTS, Decision, DecisionContext, Reward, detect_moments
from serving.engine.decision import RewardField
from serving.engine.single import decision_dicts
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


def _now() -> pd.Timestamp:
    return pd.Timestamp(utcnow())


_PROCESS = uuid.uuid4().hex[:16]  # this process; with a counter, unique across replicas
_SEQUENCE = itertools.count()


def _request_id() -> str:
    """A unique request id without a system call per request (uuid4 reads os.urandom)."""
    return f"{_PROCESS}-{next(_SEQUENCE)}"


def _decision_time(state: Any) -> pd.Timestamp:
    """Now, or the configured ``OFFERS_DECISION_TIME`` (replays and cross-path tests)."""
    fixed = state.settings.serving.decision_time
    return pd.Timestamp(fixed) if fixed is not None else _now()


def _bundle(state: Any) -> ServingBundle:
    holder = state.bundle
    if holder is None or holder.current is None:
        raise HTTPException(status_code=503, detail="models not loaded")
    return holder.current


def _holdout_share(state: Any) -> float | None:
    """The program holdout share of the serving engine (the control arm's propensity)."""
    holder = state.bundle
    current = None if holder is None else holder.current
    return None if current is None else float(current.engine.settings.holdout.share)


def _record(
    state: Any, member_id: str, channel: str, d: Decision, versions: dict[str, str]
) -> None:
    """Queue the decision record and count it (per offer and fallback)."""
    offers = d["offers"]
    fallback = d["fallback"]
    if state.decision_log is not None:
        state.decision_log.submit(
            {
                "decision_id": d["decision_id"],
                "member_id": member_id,
                "channel": channel,
                "offers": [
                    {k: x[k] for k in ("offer_id", "rank", "score", "propensity")} for x in offers
                ],
                "model_versions": versions,
                "fallback": fallback,
                "held_out": bool(d.get("held_out", False)),
                "holdout_share": _holdout_share(state),
            }
        )
    count = state.metrics.count_decision
    if not offers:
        count("none", fallback)
    for x in offers:
        count(x["offer_id"], fallback)


# The response's offer fields, all of them keys of a Reward (tests/unit/test_engine_single.py).
_OFFER_FIELDS = cast("tuple[RewardField, ...]", tuple(OfferOut.model_fields))


def _offer_out(x: Reward) -> OfferOut:
    fields: dict[str, Any] = {k: x[k] for k in _OFFER_FIELDS}
    return OfferOut.model_construct(**fields)


@router.get("/members/{member_id}/offers", response_model=MemberOffersResponse, responses=_ERRORS)
async def member_offers(
    member_id: MemberId,
    state: StateDep,
    _: OffersReader,
    channel: Annotated[Channel, Query()] = "app",
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 5,
) -> MemberOffersResponse:
    """Ranked offers with explanations; unknown members get cold-start offers (fallback named)."""
    return await offers_for_member(state, member_id, channel, k)


async def offers_for_member(
    state: Any, member_id: str, channel: str, k: int
) -> MemberOffersResponse:
    """The member-offers answer, for the route above and the lean path
    (:mod:`serving.api.lean`): decide, log the decision, build the response."""
    bundle = _bundle(state)
    ctx = DecisionContext(channel, _decision_time(state), _request_id(), k=k)
    history = await state.history.get(member_id) if state.history is not None else ()
    d = bundle.decide_one(member_id, ctx, exhausted=state.bundle.exhausted, history=history)
    _record(state, member_id, channel, d, bundle.versions)
    return MemberOffersResponse(
        decision_id=d["decision_id"],
        member_id=member_id,
        channel=channel,
        offers=[_offer_out(x) for x in d["offers"]],
        fallback=d["fallback"],
        model_versions=bundle.versions,
        held_out=d["held_out"],
        explored=d["explored"],
    )


def _batch_lines(state: Any, bundle: ServingBundle, ids: list[str], ctx: DecisionContext) -> str:
    """NDJSON lines for one chunk of members (request order)."""
    histories = [state.history.load(m) for m in ids] if state.history is not None else None
    batch = bundle.decide(ids, ctx, exhausted=state.bundle.exhausted, histories=histories)
    lines = []
    for member_id, d in zip(
        ids, decision_dicts(bundle.engine, batch.rows, ids, ctx.k), strict=True
    ):
        _record(state, member_id, ctx.channel, d, bundle.versions)
        line = {
            "member_id": member_id,
            "decision_id": d["decision_id"],
            "offers": [{k: x[k] for k in _OFFER_FIELDS} for x in d["offers"]],
            "fallback": d["fallback"],
            "model_versions": bundle.versions,
            "held_out": d["held_out"],
        }
        lines.append(json.dumps(line, separators=(",", ":")))
    return "\n".join(lines) + "\n"


@router.post(
    "/offers/batch",
    responses={
        **_ERRORS,
        200: {
            "content": {"application/x-ndjson": {"schema": BatchOffersLine.model_json_schema()}},
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
    ctx = DecisionContext(body.channel, _decision_time(state), _request_id(), k=body.k)

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
