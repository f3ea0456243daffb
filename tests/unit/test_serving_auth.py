"""API keys: hashed, scoped, 401 without/unknown key, 403 with the wrong scope."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.auth import ApiKeyRing, hash_key
from serving.settings import ServingSettings, Settings

EVENT = {"events": [{"event_id": "e1", "member_id": "m1", "offer_id": "o1", "event": "viewed"}]}


@pytest.fixture
def client(tmp_path: Path):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({f"sha256:{hash_key('file-admin-key')}": ["admin"]}))
    settings = Settings(
        data={"home": tmp_path},
        serving={
            "api_keys": {"writer-key": ["events:write"], "reader-key": ["offers:read"]},
            "api_keys_file": keys_file,
        },
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_keyring_holds_digests_not_keys():
    ring = ApiKeyRing({"secret-key-1": ["admin"], f"sha256:{hash_key('k2')}": ["offers:read"]})
    assert "secret-key-1" not in repr(vars(ring))
    assert ring.authenticate("secret-key-1").scopes == frozenset({"admin"})
    assert ring.authenticate("k2").scopes == frozenset({"offers:read"})
    assert ring.authenticate("secret-key-2") is None
    assert ring.authenticate("secret-key-1").key_id == hash_key("secret-key-1")[:12]


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="events:read"):
        ApiKeyRing({"k": ["events:read"]})


def test_no_key_is_401(client):
    response = client.post("/v1/events", json=EVENT)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "WWW-Authenticate" in response.headers


def test_unknown_key_is_401(client):
    assert client.post("/v1/events", json=EVENT, headers={"X-API-Key": "nope"}).status_code == 401


def test_wrong_scope_is_403(client):
    response = client.post("/v1/events", json=EVENT, headers={"X-API-Key": "reader-key"})
    assert response.status_code == 403
    assert "events:write" in response.json()["detail"]
    assert client.post("/v1/admin/reload", headers={"X-API-Key": "writer-key"}).status_code == 403


def test_right_scope_passes_by_header_or_bearer(client):
    assert (
        client.post("/v1/events", json=EVENT, headers={"X-API-Key": "writer-key"}).status_code
        == 200
    )
    bearer = {"Authorization": "Bearer writer-key"}
    assert client.post("/v1/events", json=EVENT, headers=bearer).status_code == 200
    # a hashed key from the keys file
    admin = {"X-API-Key": "file-admin-key"}
    assert client.post("/v1/admin/reload", headers=admin).status_code == 200


def test_health_is_open_and_metrics_need_the_admin_scope(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": "reader-key"}).status_code == 403
    assert client.get("/metrics", headers={"X-API-Key": "file-admin-key"}).status_code == 200


def test_key_is_never_logged(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.post("/v1/events", json=EVENT, headers={"X-API-Key": "reader-key"})
    client.post("/v1/events", json=EVENT, headers={"X-API-Key": "writer-key"})
    assert caplog.records  # the 403 is logged, by key id
    assert "reader-key" not in caplog.text and "writer-key" not in caplog.text


def test_bad_keys_file_names_the_file(tmp_path: Path):
    bad = tmp_path / "keys.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"keys\.json"):
        ServingSettings(api_keys_file=bad).all_api_keys()


def test_openapi_declares_the_key_on_v1_operations_only(client):
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "description": "API key",
        "in": "header",
        "name": "X-API-Key",
    }
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    both = [{"APIKeyHeader": []}, {"HTTPBearer": []}]
    assert schema["paths"]["/v1/events"]["post"]["security"] == both
    assert schema["paths"]["/v1/checkout/rewards"]["post"]["security"] == both
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_a_key_checked_before_the_body_is_not_hashed_again(client, monkeypatch):
    calls = []
    ring = client.app.state.keyring
    authenticate = ring.authenticate
    monkeypatch.setattr(ring, "authenticate", lambda key: calls.append(1) or authenticate(key))
    headers = {"X-API-Key": "writer-key"}
    assert client.post("/v1/events", json=EVENT, headers=headers).status_code == 200
    assert len(calls) == 1  # the middleware's check; the route reuses its principal
    assert client.get("/v1/models", headers=headers).status_code == 403  # no body: route checks
    assert len(calls) == 2
