"""Feedback events: idempotent by client event id, acknowledged after the commit."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter

from serving.api.checkout import redeemed_grants
from serving.api.deps import EventsWriter, StateDep
from serving.api.schemas import ErrorResponse, EventsRequest, EventsResponse

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post(
    "/events",
    response_model=EventsResponse,
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)
async def post_events(body: EventsRequest, state: StateDep, _: EventsWriter) -> EventsResponse:
    """Store feedback (viewed, redeemed, dismissed); sending the same event id again is safe."""
    assert state.store is not None
    rows = [e.model_dump() for e in body.events]
    result = await to_thread.run_sync(state.store.record_events, rows)
    await redeemed_grants(state, body.events, result.stored)  # checkout grants: redeemed
    kinds = {e.event_id: e.event for e in body.events}
    for event_id in result.stored:
        state.metrics.events.labels(kinds[event_id], "stored").inc()
    for event_id in result.duplicates:
        state.metrics.events.labels(kinds[event_id], "duplicate").inc()
    return EventsResponse(
        received=len(body.events), stored=result.stored, duplicates=result.duplicates
    )
