"""API keys with scopes, held only as SHA-256 digests and compared in constant time.

Scopes: ``offers:read``, ``checkout:write``, ``events:write``, ``admin`` (each names exactly
what it allows; ``admin`` does not imply the others). A request gives its key in the
``X-API-Key`` header or as ``Authorization: Bearer <key>``. No key or an unknown key -> 401;
a known key without the route's scope -> 403. The key itself is never logged: a request is
identified by ``key_id``, the first 12 hex digits of the digest.

The route dependency (:func:`require_scope`) reads the headers itself (no sub-dependencies:
each costs a dependency-resolution pass per request) and reuses the principal that
``serving.api.limits.LimitsMiddleware`` already authenticated for a request with a body
(:data:`PRINCIPAL_KEY`), so a key is hashed once per request. :func:`document_api_keys` puts
the two ways of giving the key in the OpenAPI schema of the routes that need one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status

from serving.settings import SCOPES, ServingSettings

__all__ = [
    "PRINCIPAL_KEY",
    "ApiKeyRing",
    "Principal",
    "document_api_keys",
    "hash_key",
    "request_key",
    "require_scope",
]

log = logging.getLogger(__name__)

_HASHED = re.compile(r"^sha256:([0-9a-f]{64})$")


def hash_key(key: str) -> str:
    """Hex SHA-256 of a key; write ``sha256:<this>`` in a keys file instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid key."""

    key_id: str
    scopes: frozenset[str]


class ApiKeyRing:
    """Digests of the configured keys with their scopes."""

    def __init__(self, keys: Mapping[str, Sequence[str]]) -> None:
        entries: list[tuple[bytes, frozenset[str]]] = []
        for key, scopes in keys.items():
            unknown = sorted(set(scopes) - set(SCOPES))
            if unknown:
                raise ValueError(f"API key scopes: unknown {unknown}; allowed {list(SCOPES)}")
            hashed = _HASHED.match(key)
            digest = (
                bytes.fromhex(hashed.group(1)) if hashed else hashlib.sha256(key.encode()).digest()
            )
            entries.append((digest, frozenset(scopes)))
        self._entries = entries

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> ApiKeyRing:
        return cls(settings.all_api_keys())

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: str) -> Principal | None:
        """The principal for ``key``, or None; every entry is compared (no early exit)."""
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: frozenset[str] | None = None
        for candidate, scopes in self._entries:
            if hmac.compare_digest(candidate, digest):
                found = scopes
        if found is None:
            return None
        return Principal(key_id=digest.hex()[:12], scopes=found)


PRINCIPAL_KEY = "offers.principal"  # ASGI scope key: the principal of an authenticated key
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "APIKeyHeader": {
        "type": "apiKey",
        "description": "API key",
        "in": "header",
        "name": "X-API-Key",
    },
    "HTTPBearer": {"type": "http", "description": "API key as a bearer token", "scheme": "bearer"},
}


def request_key(scope: Mapping[str, Any]) -> str | None:
    """The API key of a request (ASGI scope): ``X-API-Key``, else ``Authorization: Bearer``."""
    bearer = None
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key" and value:
            return value.decode("latin-1")
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials:
                bearer = credentials
    return bearer


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=reason,
        headers={"WWW-Authenticate": 'ApiKey header="X-API-Key", Bearer'},
    )


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency that admits a request only with a key holding ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {list(SCOPES)}")

    async def dependency(request: Request) -> Principal:
        principal: Principal | None = request.scope.get(PRINCIPAL_KEY)
        if principal is None:
            key = request_key(request.scope)
            if not key:
                raise _unauthorized("missing API key")
            ring: ApiKeyRing = request.app.state.keyring
            principal = ring.authenticate(key)
            if principal is None:
                raise _unauthorized("unknown API key")
        if scope not in principal.scopes:
            log.info("key %s lacks scope %s", principal.key_id, scope)
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN, detail=f"API key lacks scope {scope!r}"
            )
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by document_api_keys
    return dependency


def document_api_keys(app: FastAPI, prefix: str = "/v1/") -> None:
    """Declare the API key (``X-API-Key`` header or bearer token) in the app's OpenAPI schema
    for every operation under ``prefix`` (each of them depends on :func:`require_scope`, which
    reads the headers itself, so FastAPI does not see the security schemes)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        if "securitySchemes" in schema.get("components", {}):
            return schema  # cached by FastAPI: already documented
        secured = False
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith(prefix):
                continue
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                    secured = True
        if secured:
            schema.setdefault("components", {})["securitySchemes"] = dict(SECURITY_SCHEMES)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
