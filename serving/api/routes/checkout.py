"""Checkout: rewards for a purchase (a session per till transaction), close, cancel / return.

``POST /v1/checkout/rewards`` decides at server time with the member's grant history, then
stores the session, its grants and every cap and budget reservation in one group commit; a
repeated ``transaction_id`` gets the stored answer. See docs/serving.md "Checkout sessions".
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError

from serving.api.checkout import (
    TransactionConflict,
    basket_items,
    build_request,
    lines_total,
    past_grants,
    total_mismatch,
)
from serving.api.deps import AppState, CheckoutWriter, StateDep
from serving.api.grants import GrantCommitError, GrantServiceClosed
from serving.api.routes.decisions import _bundle, _now, _record
from serving.api.schemas import (
    _ID_PATTERN,
    CheckoutCancelRequest,
    CheckoutRequest,
    CheckoutResponse,
    CheckoutSessionResponse,
    ErrorResponse,
    RewardOut,
)
from serving.engine import DecisionContext
from serving.engine.decision import Reward, RewardField
from serving.store import IllegalTransition, OffersStore, UnknownOffers, UnknownSession

router = APIRouter(prefix="/v1/checkout", tags=["checkout"])
log = logging.getLogger(__name__)

TransactionId = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID_PATTERN)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}
# The response's reward fields, all of them keys of a Reward (tests/unit/test_engine_single.py).
_REWARD_FIELDS = cast("tuple[RewardField, ...]", tuple(RewardOut.model_fields))


def _reward_fields(x: Reward) -> dict[str, Any]:
    return {k: x[k] for k in _REWARD_FIELDS}


def _unavailable(what: str) -> HTTPException:
    return HTTPException(
        status_code=503,
        detail=f"checkout store unavailable: {what}, retry",
        headers={"Retry-After": "1"},
    )


def _store(state: AppState) -> OffersStore:
    """The open store; 503 when it could not be opened at start-up (the process stays up, not
    ready, and answers here instead of failing on ``None``)."""
    if state.store is None:
        raise _unavailable("store not open")
    return state.store


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": tuple(field.split(".")), "msg": message, "type": "value_error"}]
    )


def _stored_answer(row: dict[str, Any], member_id: str) -> CheckoutResponse:
    """The answer stored with a session, for a retry of its transaction."""
    transaction_id = row["transaction_id"]
    if row["member_id"] != member_id:
        raise HTTPException(
            status_code=409,
            detail=f"transaction_id {transaction_id!r} belongs to another member",
        )
    if row["state"] == "cancelled":
        raise HTTPException(
            status_code=409, detail=f"transaction_id {transaction_id!r} is cancelled"
        )
    return CheckoutResponse(**{**row["response"], "state": row["state"]})


async def _checkout(state: Any, body: CheckoutRequest, basket_total: float) -> CheckoutResponse:
    """Decide, reserve and store one transaction (runs once per transaction id in flight)."""
    bundle = _bundle(state)
    now = _now()
    history = await state.history.get(body.member_id) if state.history is not None else ()
    ctx = DecisionContext(body.channel, now, body.transaction_id)
    d = bundle.decide_one(
        body.member_id,
        ctx,
        basket_total=basket_total,
        exhausted=state.bundle.exhausted,
        history=history,
        basket=basket_items(body.basket),
    )
    response = {
        "transaction_id": body.transaction_id,
        "decision_id": d["decision_id"],
        "member_id": body.member_id,
        "rewards": [{k: x[k] for k in _REWARD_FIELDS} for x in d["offers"]],
        "moments": list(d["moments"]),
        "fallback": d["fallback"],
        "model_versions": bundle.versions,
    }
    request = build_request(
        transaction_id=body.transaction_id,
        member_id=body.member_id,
        channel=body.channel,
        decision=d,
        response=response,
        bundle=bundle,
        counters=state.budget_counters,
        now=now.to_pydatetime(),
        client_ts=body.ts,
    )
    try:
        outcome = await state.grants.reserve(request)
    except (GrantCommitError, GrantServiceClosed) as exc:
        log.error("checkout: reservations not committed: %s", type(exc).__name__)
        raise _unavailable("no reward was reserved") from None
    if outcome.duplicate:  # stored by another process or replica: its answer
        row = await to_thread.run_sync(state.store.get_session, body.transaction_id)
        if row is None or row["response"] is None:
            raise _unavailable("the transaction is being stored")
        return _stored_answer(row, body.member_id)
    if outcome.error is not None:
        raise outcome.error
    granted = [d["offers"][i] for i in outcome.granted]
    _record(state, body.member_id, body.channel, {**d, "offers": granted}, bundle.versions)
    if state.history is not None:
        grants = past_grants(granted, body.channel, now.to_pydatetime(), d["decision_id"])
        state.history.add(body.member_id, grants)
    return CheckoutResponse(**{**outcome.response, "state": "open"})


@router.post("/rewards", response_model=CheckoutResponse, responses=_ERRORS)
async def checkout_rewards(
    body: CheckoutRequest,
    state: StateDep,
    _: CheckoutWriter,
    dry_run: Annotated[bool, Query(description="preview: reserve and log nothing")] = False,
) -> CheckoutResponse:
    """Rewards to grant now for this basket, a surprise when a moment applies. Every cap and
    budget is reserved atomically with the session before the answer; a reward that reached a
    cap or budget since the decision is dropped and named. The same ``transaction_id`` again
    returns the stored answer (same decision id) and reserves nothing."""
    return await checkout_answer(state, body, dry_run)


async def checkout_answer(state: Any, body: CheckoutRequest, dry_run: bool) -> CheckoutResponse:
    """The checkout answer, for the route above and the lean path (:mod:`serving.api.lean`):
    HTTP errors are raised as ``HTTPException`` / ``RequestValidationError``."""
    basket_total = lines_total(body.basket)
    if total_mismatch(body.total, basket_total):
        raise _invalid(
            "body.total",
            f"total {body.total:.2f} does not match the basket lines' sum {basket_total:.2f}",
        )
    if dry_run:
        bundle = _bundle(state)
        history = await state.history.get(body.member_id) if state.history is not None else ()
        ctx = DecisionContext(body.channel, _now(), body.transaction_id)
        d = bundle.decide_one(
            body.member_id,
            ctx,
            basket_total=basket_total,
            exhausted=state.bundle.exhausted,
            history=history,
            basket=basket_items(body.basket),
        )
        return CheckoutResponse(
            transaction_id=body.transaction_id,
            decision_id=d["decision_id"],
            member_id=body.member_id,
            rewards=[RewardOut(**_reward_fields(x)) for x in d["offers"]],
            moments=d["moments"],
            fallback=d["fallback"],
            model_versions=bundle.versions,
            state=None,
            dry_run=True,
        )
    if state.checkouts is None:  # set with the store: it could not be opened at start-up
        raise _unavailable("store not open")
    if state.admission is not None:  # before deciding: a shed request reserves nothing
        state.admission.check()
    try:
        return await state.checkouts.run(
            body.transaction_id,
            body.member_id,
            lambda: _checkout(state, body, basket_total),
        )
    except TransactionConflict:
        raise HTTPException(
            status_code=409,
            detail=f"transaction_id {body.transaction_id!r} belongs to another member",
        ) from None


def _change(result: Any) -> CheckoutSessionResponse:
    return CheckoutSessionResponse(
        transaction_id=result.transaction_id,
        member_id=result.member_id,
        state=result.state,
        released=result.released,
        kept_redeemed=result.kept_redeemed,
    )


async def _session_call(state: Any, call: Any, *args: Any) -> CheckoutSessionResponse:
    try:
        result = await to_thread.run_sync(call, *args)
    except UnknownSession as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except IllegalTransition as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except UnknownOffers as exc:
        raise _invalid("body.offer_ids", str(exc)) from None
    except Exception as exc:  # the store cannot write: nothing changed
        log.error("checkout session change failed: %s", type(exc).__name__)
        raise _unavailable("nothing was changed") from None
    if result.released and state.history is not None:
        state.history.invalidate([result.member_id])
    return _change(result)


@router.post("/{transaction_id}/close", response_model=CheckoutSessionResponse, responses=_ERRORS)
async def close_checkout(
    transaction_id: TransactionId, state: StateDep, _: CheckoutWriter
) -> CheckoutSessionResponse:
    """The till confirms it received the answer: open -> closed (closed again: no change).
    A session left open is cancelled by the sweep after ``OFFERS_CHECKOUT_OPEN_SECONDS``."""
    return await _session_call(state, _store(state).close_session, transaction_id)


@router.post("/{transaction_id}/cancel", response_model=CheckoutSessionResponse, responses=_ERRORS)
async def cancel_checkout(
    transaction_id: TransactionId,
    state: StateDep,
    _: CheckoutWriter,
    body: CheckoutCancelRequest | None = None,
) -> CheckoutSessionResponse:
    """Void the transaction (no ``offer_ids``: -> cancelled) or return some rewards of a
    closed one (-> partially_returned): their budget and cap reservations are released unless
    the reward was redeemed. Repeating a cancel changes nothing."""
    offer_ids = body.offer_ids if body is not None else None
    return await _session_call(state, _store(state).cancel_session, transaction_id, offer_ids)


@router.get("/{transaction_id}", response_model=CheckoutSessionResponse, responses=_ERRORS)
async def get_checkout(
    transaction_id: TransactionId, state: StateDep, _: CheckoutWriter
) -> CheckoutSessionResponse:
    """The session's state."""
    row = await to_thread.run_sync(_store(state).get_session, transaction_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"transaction_id {transaction_id!r} is unknown")
    return CheckoutSessionResponse(
        transaction_id=transaction_id, member_id=row["member_id"], state=row["state"]
    )
