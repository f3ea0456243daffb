"""API skeleton in process: 422 shape, generic 500, readiness, metrics, model reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.api.schemas import Fallback
from serving.settings import Settings

KEYS = {"w": ["events:write"], "a": ["admin", "offers:read"]}


def _settings(tmp_path: Path, **serving) -> Settings:
    return Settings(data={"home": tmp_path}, serving={"api_keys": KEYS, **serving})


def test_422_names_the_field_and_reason_without_echoing_input(tmp_path):
    with TestClient(create_app(_settings(tmp_path))) as c:
        body = {"events": [{"event_id": "x" * 65, "member_id": "secret-member", "offer_id": "o",
                            "event": "bought"}]}  # fmt: skip
        response = c.post("/v1/events", json=body, headers={"X-API-Key": "w"})
        assert response.status_code == 422
        fields = {d["field"]: d["reason"] for d in response.json()["detail"]}
        assert "at most 64" in fields["body.events.0.event_id"]
        assert "viewed" in fields["body.events.0.event"]
        assert "secret-member" not in response.text
        too_many = {"events": [{"event_id": f"e{i}", "member_id": "m", "offer_id": "o",
                                "event": "viewed"} for i in range(1001)]}  # fmt: skip
        response = c.post("/v1/events", json=too_many, headers={"X-API-Key": "w"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["field"] == "body.events"


def test_unhandled_error_is_a_generic_500(tmp_path):
    app = create_app(_settings(tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("member m123 broke it")

    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": None}
    assert "m123" not in response.text and "Traceback" not in response.text


def test_reload_swaps_models_and_refuses_a_broken_version(tmp_path):
    versions = iter(["1", "2"])

    def loader(name: str, uri: str):
        version = next(versions, None)
        if version is None:
            raise OSError("artifact missing")
        return object(), version

    settings = _settings(tmp_path, models={"offers-uplift": "models:/offers-uplift@champion"})
    with TestClient(create_app(settings, model_loader=loader)) as c:
        admin = {"X-API-Key": "a"}
        assert c.get("/readyz").json()["ready"] is True
        assert c.get("/v1/models", headers=admin).json()["models"][0]["version"] == "1"
        assert c.post("/v1/admin/reload", headers=admin).json()["models"][0]["version"] == "2"
        refused = c.post("/v1/admin/reload", headers=admin)
        assert refused.status_code == 409 and "offers-uplift" in refused.json()["detail"]
        assert c.get("/v1/models", headers=admin).json()["models"][0]["version"] == "2"
        assert (
            'offers_model_info{model="offers-uplift",version="2"} 1.0'
            in c.get("/metrics", headers=admin).text
        )


def test_not_ready_when_configured_models_fail_to_load(tmp_path):
    def loader(name: str, uri: str):
        raise OSError("tracking server down")

    settings = _settings(tmp_path, models={"offers-affinity": "models:/offers-affinity@champion"})
    with TestClient(create_app(settings, model_loader=loader)) as c:
        response = c.get("/readyz")
        assert response.status_code == 503
        models = response.json()["checks"]["models"]  # what is wrong, not just "not loaded"
        assert "offers-affinity" in models and "tracking server down" in models
        assert c.get("/healthz").status_code == 200


def test_fallback_names_match_the_models_package():
    from models.affinity.base import FALLBACKS

    assert set(Fallback.__args__) == set(FALLBACKS)


@pytest.mark.parametrize("size", [2, 10_001])
def test_batch_request_limits(size):
    from pydantic import ValidationError

    from serving.api.schemas import BatchOffersRequest

    ids = [f"m{i}" for i in range(size)]
    if size > 10_000:
        with pytest.raises(ValidationError, match="member_ids"):
            BatchOffersRequest(member_ids=ids)
    else:
        assert BatchOffersRequest(member_ids=ids).k == 3
