"""Feedback events: idempotent by client event id, acknowledged after the commit.

* A replay of a stored event (same id, same contents) is a duplicate; the same id with other
  contents is a 409 naming each such event, and nothing of that request is stored.
* ``ts`` must lie in the window ``now - event_max_age_days`` .. ``now +
  event_max_ahead_seconds`` (server time); other times are a 422 naming the field and value.
* When the store cannot write (down, disk full, write lock held past the lock wait), the answer
  is a 503 with ``Retry-After`` and nothing is stored: the client sends the same request again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from anyio import to_thread
from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from serving.api.checkout import redeemed_grants
from serving.api.deps import EventsWriter, StateDep
from serving.api.schemas import ErrorResponse, EventsRequest, EventsResponse, FeedbackEvent
from serving.settings import ServingSettings
from serving.store import utcnow
from serving.store.feedback import EventConflictError

router = APIRouter(prefix="/v1", tags=["feedback"])
log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "1"


@router.post(
    "/events",
    response_model=EventsResponse,
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        409: {"model": ErrorResponse, "description": "an event id stored with other contents"},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse, "description": "store cannot write; nothing stored"},
    },
)
async def post_events(
    body: EventsRequest, state: StateDep, _: EventsWriter
) -> EventsResponse | JSONResponse:
    """Store feedback (viewed, redeemed, dismissed); sending the same events again is safe."""
    assert state.store is not None
    late = _outside_window(body.events, state.settings.serving)
    if late is not None:
        return late
    rows = [e.model_dump() for e in body.events]
    try:
        result = await to_thread.run_sync(state.store.record_events, rows)
    except EventConflictError as exc:
        for conflict in exc.conflicts:
            state.metrics.events.labels(body.events[conflict.index].event, "conflict").inc()
        detail = [
            {"field": f"body.events.{c.index}.event_id", "reason": c.reason() + "; nothing of "
             "this request was stored"}
            for c in exc.conflicts[:50]
        ]  # fmt: skip
        return JSONResponse(status_code=409, content={"error": "conflict", "detail": detail})
    except (SQLAlchemyError, OSError) as exc:
        log.error("events: not stored, store cannot write: %s", type(exc).__name__)
        raise HTTPException(
            status_code=503,
            detail="feedback store unavailable: no event was stored, send the same request again",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from None
    await redeemed_grants(state, body.events, result.stored)  # checkout grants: redeemed
    kinds = {e.event_id: e.event for e in body.events}
    for event_id in result.stored:
        state.metrics.events.labels(kinds[event_id], "stored").inc()
    for event_id in result.duplicates:
        state.metrics.events.labels(kinds[event_id], "duplicate").inc()
    return EventsResponse(
        received=len(body.events), stored=result.stored, duplicates=result.duplicates
    )


def _outside_window(events: list[FeedbackEvent], settings: ServingSettings) -> JSONResponse | None:
    """A 422 naming every event time outside the accepted window, or None."""
    now = utcnow()
    earliest = now - timedelta(days=settings.event_max_age_days)
    latest = now + timedelta(seconds=settings.event_max_ahead_seconds)
    detail = [
        {
            "field": f"body.events.{i}.ts",
            "reason": f"{e.ts.isoformat()} is outside the accepted window "
            f"{earliest.isoformat(timespec='seconds')} .. {latest.isoformat(timespec='seconds')} "
            "(UTC, server time)",
        }
        for i, e in enumerate(events)
        if e.ts is not None and not earliest <= e.ts <= latest
    ]
    if not detail:
        return None
    return JSONResponse(
        status_code=422, content={"error": "validation_error", "detail": detail[:50]}
    )
