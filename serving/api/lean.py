"""A lean path for the two real-time routes, ``POST /v1/checkout/rewards`` and
``GET /v1/members/{member_id}/offers``: the same answers without FastAPI's per-request
machinery (route matching, dependency solving, a parse then a validation pass for the body,
a validation pass for the response, the exception and exit-stack middlewares).

:class:`LeanRoutes` is a pure ASGI middleware installed inside ``LimitsMiddleware`` and
``MetricsMiddleware`` (key before body, the body size limit, the metrics per route template and
the 500 guard apply unchanged). For a request to one of the two routes it does what the route
does: the same scope check (:mod:`serving.auth`), the body validated in one
``CheckoutRequest.model_validate_json``, the same service function (``checkout_answer``,
``offers_for_member``: decision, grants, decision log, decision metrics) and the response
encoded once by pydantic (the bytes FastAPI sends for the same model). The errors those
functions raise are answered by the app's own handlers (:func:`serving.api.errors.error_response`).

It answers only what it can answer exactly as the route would. Everything else is handed to
FastAPI unchanged, with the messages already received replayed: no key or a key without the
scope, a body that does not validate, a content type other than ``application/json``, a query
value other than the plain ones (``channel`` one of the channels, ``k`` 1 to 50 written plainly,
``dry_run`` ``true`` or ``false``), a repeated query parameter, a client gone or a body refused
while it was read, models not loaded. So every refusal is FastAPI's own answer (status, body,
headers). ``OFFERS_LEAN_ROUTES=false`` turns the lean path off; the OpenAPI schema comes from
the FastAPI routes, which are unchanged. See docs/serving.md (issue 15).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, get_args
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.errors import error_response
from serving.api.routes.checkout import checkout_answer
from serving.api.routes.decisions import offers_for_member
from serving.api.schemas import (
    _ID_PATTERN,
    MAX_K,
    Channel,
    CheckoutRequest,
    CheckoutResponse,
    MemberOffersResponse,
)
from serving.auth import PRINCIPAL_KEY, Principal, request_key

__all__ = ["CHECKOUT_PATH", "OFFERS_PATH", "LeanRoutes"]

CHECKOUT_PATH = "/v1/checkout/rewards"
OFFERS_PATH = "/v1/members/{member_id}/offers"
_OFFERS_HEAD, _OFFERS_TAIL = "/v1/members/", "/offers"
_ID = re.compile(_ID_PATTERN)
_CHANNELS = frozenset(get_args(Channel))
_K = {str(k): k for k in range(1, MAX_K + 1)}  # "3", not "03" or "+3" (those go to FastAPI)
_DRY_RUN = {"false": False, "true": True}
_ENCODE_CHECKOUT = CheckoutResponse.__pydantic_serializer__.to_json
_ENCODE_OFFERS = MemberOffersResponse.__pydantic_serializer__.to_json


class LeanRoutes:
    """Pure ASGI middleware answering the two real-time routes itself (module doc)."""

    def __init__(self, app: ASGIApp, *, state: Any, routes: list[BaseRoute]) -> None:
        self.app = app
        self.state = state
        self.checkout_route = _find(routes, CHECKOUT_PATH, "POST")
        self.offers_route = _find(routes, OFFERS_PATH, "GET")
        lean = state.metrics.lean
        self._count = {  # label children made once (labels() costs tens of microseconds)
            (path, by): lean.labels(path, by).inc
            for path in (CHECKOUT_PATH, OFFERS_PATH)
            for by in ("lean", "fastapi")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            method: str = scope["method"]
            if method == "POST" and path == CHECKOUT_PATH:
                await self._checkout(scope, receive, send)
                return
            if method == "GET" and path.startswith(_OFFERS_HEAD) and path.endswith(_OFFERS_TAIL):
                member_id = path[len(_OFFERS_HEAD) : -len(_OFFERS_TAIL)]
                if len(member_id) <= 64 and _ID.fullmatch(member_id):
                    await self._offers(scope, receive, send, member_id)
                    return
                self._count[OFFERS_PATH, "fastapi"]()
        await self.app(scope, receive, send)

    # -- the routes -----------------------------------------------------------------------
    async def _offers(self, scope: Scope, receive: Receive, send: Send, member_id: str) -> None:
        query = _query(scope)
        principal = self._principal(scope, "offers:read")
        if query is not None and principal is not None and self._ready():
            channel = query.get("channel", "app")
            k = _K.get(query.get("k", "5"))
            if channel in _CHANNELS and k is not None:
                self._count[OFFERS_PATH, "lean"]()
                _matched(scope, self.offers_route, {"member_id": member_id}, principal)
                try:
                    answer = await offers_for_member(self.state, member_id, channel, k)
                except Exception as exc:
                    await _error(scope, receive, send, exc)
                    return
                await _send_json(send, _ENCODE_OFFERS(answer, by_alias=True))
                return
        self._count[OFFERS_PATH, "fastapi"]()
        await self.app(scope, receive, send)

    async def _checkout(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: list[Message] = []
        chunks: list[bytes] = []
        failure: Exception | None = None
        complete = False
        try:
            while True:
                message = await receive()
                received.append(message)
                if message["type"] != "http.request":
                    break  # the client went away: FastAPI answers as it does
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True
                    break
        except Exception as exc:  # e.g. the body limit's 413: FastAPI answers it
            failure = exc
        replay = _replay(received, failure, receive)
        body = b"".join(chunks)
        query = _query(scope) if complete and body and _json_body(scope) else None
        dry_run = None if query is None else _DRY_RUN.get(query.get("dry_run", "false"))
        principal = self._principal(scope, "checkout:write") if dry_run is not None else None
        request = None
        if principal is not None and self._ready():
            try:
                request = CheckoutRequest.model_validate_json(body)
            except ValueError:  # pydantic's ValidationError: FastAPI names the field
                request = None
        if request is None or dry_run is None or principal is None:
            self._count[CHECKOUT_PATH, "fastapi"]()
            await self.app(scope, replay, send)
            return
        self._count[CHECKOUT_PATH, "lean"]()
        _matched(scope, self.checkout_route, {}, principal)
        try:
            answer = await checkout_answer(self.state, request, dry_run)
        except Exception as exc:
            await _error(scope, replay, send, exc)
            return
        await _send_json(send, _ENCODE_CHECKOUT(answer, by_alias=True))

    # -- helpers --------------------------------------------------------------------------
    def _principal(self, scope: Scope, needed: str) -> Principal | None:
        """The caller if its key holds ``needed`` (the key was checked by LimitsMiddleware
        for a request with a body), else None: FastAPI then answers 401 or 403."""
        principal: Principal | None = scope.get(PRINCIPAL_KEY)
        if principal is None:
            key = request_key(scope)
            principal = self.state.keyring.authenticate(key) if key else None
        if principal is None or needed not in principal.scopes:
            return None
        return principal

    def _ready(self) -> bool:
        holder = self.state.bundle
        return holder is not None and holder.current is not None


def _find(routes: list[BaseRoute], path: str, method: str) -> Route:
    """The route FastAPI puts in ``scope["route"]`` for ``method path`` (FastAPI keeps an
    included router's own routes behind an ``_IncludedRouter``'s ``original_router``)."""
    for route in _walk(routes):
        if isinstance(route, Route) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"lean path: no {method} {path} route in the app")


def _walk(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _walk(included.routes)
        else:
            yield route


def _matched(scope: Scope, route: Route, params: dict[str, str], principal: Principal) -> None:
    """What Starlette's router and the auth dependency leave in the scope (the metrics
    middleware labels requests by ``scope["route"].path``)."""
    scope["route"] = route
    scope["endpoint"] = route.endpoint
    scope["path_params"] = params
    scope.setdefault("state", {})["principal"] = principal


def _query(scope: Scope) -> dict[str, str] | None:
    """The query parameters as FastAPI reads them, or None when one is repeated."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    params = dict(pairs)
    return params if len(params) == len(pairs) else None


def _json_body(scope: Scope) -> bool:
    """The first ``content-type`` is ``application/json`` (parameters allowed)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(
    received: list[Message], failure: Exception | None, receive: Receive
) -> Callable[[], Any]:
    """A ``receive`` giving the messages already read (then the read's failure, if any),
    then the client's own."""
    pending = list(received)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        if failure is not None:
            raise failure
        return await receive()

    return replayed


async def _error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """An HTTP or validation error raised by a service function, answered by the app's handler
    (anything else propagates to the metrics middleware's 500 guard, as from a route)."""
    response = await error_response(Request(scope, receive), exc)
    await response(scope, receive, send)


async def _send_json(send: Send, payload: bytes) -> None:
    """200 with the headers FastAPI's ``Response(media_type="application/json")`` sets."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(payload)).encode("latin-1")),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
