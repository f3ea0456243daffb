"""Limits of the HTTP surface: who may send a body, how large, how slowly.

``LimitsMiddleware`` (pure ASGI, installed by ``create_app``) for each request that carries a
body (``content-length`` > 0 or any ``transfer-encoding``):

* on ``/v1/`` paths, checks the API key (``X-API-Key`` or ``Authorization: Bearer``, the rules
  of :mod:`serving.auth`) BEFORE anything reads the body: no key or an unknown key is a 401 and
  the body is never read (the connection is closed; a scope check still happens in the route);
* refuses a declared ``content-length`` above ``max_body_bytes`` with 413 at once, and counts
  the bytes actually received whatever the transfer encoding (chunked included): 413 as soon as
  the count passes the limit, so memory never holds more than the limit;
* closes the connection after any answer given before the body was read to its end, so the
  server never reads (and discards) the rest of a refused upload.

Read timeouts live below the ASGI layer, where they cost a timer per request and nothing per
message: :class:`ReadTimeoutHttpToolsProtocol` is uvicorn's httptools protocol with a header
timer (from a connection's start, and from the first byte of each later request, to the end of
its headers) and a body timer (from the end of the headers to the end of a declared body).
When one fires, the server answers 408 (if nothing was answered yet) and closes the connection;
an app still waiting for the body sees the client gone. :func:`uvicorn_options` gives
``uvicorn.run`` this protocol, the keep-alive timeout and the concurrent connection limit
(uvicorn answers 503 above it).

Integers longer than Python's 4,300 digits make the JSON parser fail before validation;
``huge_integer_fields`` finds where they are in the body kept by the middleware, so the error
handler can answer a 422 naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.auth import PRINCIPAL_KEY, ApiKeyRing, request_key
from serving.settings import Settings, get_settings

__all__ = [
    "BODY_KEY",
    "LimitsMiddleware",
    "ReadTimeoutHttpToolsProtocol",
    "huge_integer_fields",
    "request_key",
    "uvicorn_options",
]

log = logging.getLogger(__name__)

BODY_KEY = "offers.body_chunks"  # scope key: the body chunks received (bounded by the limit)
_INT_DIGITS = 4_300  # Python's default int_max_str_digits
_WWW_AUTH = (b"www-authenticate", b'ApiKey header="X-API-Key", Bearer')


class LimitsMiddleware:
    """Key before body, body size counted while reading (module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: ApiKeyRing,
        max_body_bytes: int,
        protected_prefix: str = "/v1/",
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.max_body_bytes = max_body_bytes
        self.protected_prefix = protected_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _declared_body(scope)
        if not chunked and not length:
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(self.protected_prefix):
            key = request_key(scope)
            principal = self.keyring.authenticate(key) if key else None
            if principal is None:
                reason = "missing API key" if not key else "unknown API key"
                await _refuse(send, 401, "unauthorized", reason, [_WWW_AUTH])
                return
            scope[PRINCIPAL_KEY] = principal  # the route's scope check does not hash it again
        if length is not None and length > self.max_body_bytes:
            await _refuse(send, 413, "payload_too_large", self._too_large())
            return
        await self._limited(scope, receive, send)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes"

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        scope[BODY_KEY] = chunks
        read = {"bytes": 0, "complete": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                read["bytes"] += len(body)
                if read["bytes"] > self.max_body_bytes:
                    chunks.clear()
                    raise HTTPException(status_code=413, detail=self._too_large())
                if body:
                    chunks.append(body)
                if not message.get("more_body", False):
                    read["complete"] = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not read["complete"]:
                # Unread body bytes are still on the wire: do not keep the connection.
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, limited_receive, closing_send)


def _declared_body(scope: Scope) -> tuple[int | None, bool]:
    """(content-length or None, whether a transfer-encoding is given)."""
    length: int | None = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


async def _refuse(
    send: Send,
    status: int,
    error: str,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A JSON error response that closes the connection (the body was not read)."""
    payload = json.dumps({"error": error, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# -- huge integers in JSON ------------------------------------------------------------------
class _HugeInt:
    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> int | _HugeInt:
    digits = len(text.lstrip("-"))
    return _HugeInt(digits) if digits > _INT_DIGITS else int(text)


def huge_integer_fields(scope: Scope) -> list[dict[str, str]] | None:
    """``[{field, reason}]`` for each integer of more than 4,300 digits in the request's JSON
    body (kept by :class:`LimitsMiddleware`), or None when there is none or no body."""
    chunks = scope.get(BODY_KEY)
    if not chunks:
        return None
    try:
        parsed = json.loads(b"".join(chunks), parse_int=_parse_int)
    except ValueError:
        return None
    found = [
        {"field": ".".join(["body", *path]), "reason": f"integer has {n} digits; at most "
         f"{_INT_DIGITS} are accepted (and the field's own limits apply)"}
        for path, n in _walk(parsed, [])
    ]  # fmt: skip
    return found[:50] or None


def _walk(value: Any, path: list[str]) -> Iterator[tuple[list[str], int]]:
    if isinstance(value, _HugeInt):
        yield path, value.digits
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, [*path, str(key)])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, [*path, str(i)])


# -- below ASGI: header read timeout and uvicorn options ------------------------------------
class ReadTimeoutHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read timeouts (module doc)."""

    header_timeout: float | None = None  # set by uvicorn_options; else from the environment
    body_timeout: float | None = None

    # typeshed's BaseProtocol takes a BaseTransport; uvicorn's protocol and the loop use Transport
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self._header_seconds(), "headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_timer is None:
            self._arm(self._header_seconds(), "headers")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self._expects_body():
            self._arm(self._body_seconds(), "body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expects_body(self) -> bool:
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return True
        return False

    def _header_seconds(self) -> float:
        cls = type(self)
        if cls.header_timeout is None:
            cls.header_timeout = get_settings().serving.header_read_timeout_seconds
        return cls.header_timeout

    def _body_seconds(self) -> float:
        cls = type(self)
        if cls.body_timeout is None:
            cls.body_timeout = get_settings().serving.body_read_timeout_seconds
        return cls.body_timeout

    def _arm(self, seconds: float, what: str) -> None:
        self._read_timer = self.loop.call_later(seconds, self._too_slow, what, seconds)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _too_slow(self, what: str, seconds: float) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            body = b"request %s not received within %g s" % (what.encode(), seconds)
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() sees the client gone
            cycle.message_event.set()
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config``: the read-timeout protocol, the
    keep-alive timeout and the concurrent connection limit of ``settings.serving``."""
    serving = settings.serving
    ReadTimeoutHttpToolsProtocol.header_timeout = serving.header_read_timeout_seconds
    ReadTimeoutHttpToolsProtocol.body_timeout = serving.body_read_timeout_seconds
    return {
        "http": ReadTimeoutHttpToolsProtocol,
        "timeout_keep_alive": serving.keep_alive_timeout_seconds,
        "limit_concurrency": serving.max_connections,
    }
