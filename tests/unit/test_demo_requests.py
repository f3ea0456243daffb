"""The demo's sample requests against a small real HTTP server (offers/demo_requests.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from offers.demo_requests import DemoClient, _find_moment_member

# member -> (status, moments) answered by GET /v1/members/<member>/moments
MOMENTS = {
    "gone": (404, None),
    "plain": (200, ["anniversary"]),
    "bday": (200, ["birthday"]),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        member = self.path.split("/")[3]
        status, moments = MOMENTS[member]
        body: dict[str, object] = {"detail": "unknown member"}
        if moments is not None:
            body = {"member_id": member, "moments": [{"name": n} for n in moments]}
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def client() -> Iterator[DemoClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield DemoClient(f"http://127.0.0.1:{server.server_address[1]}", "key", timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_member_whose_moments_reply_is_not_200_is_skipped(client):
    # a 404 among the members tried raised TypeError (tuple & set) before
    reply = _find_moment_member(client, ["gone", "plain", "bday"], tries=3)
    assert reply is not None and reply.body["member_id"] == "bday"


def test_first_member_with_any_moment_when_none_has_a_checkout_surprise(client):
    reply = _find_moment_member(client, ["gone", "plain"], tries=2)
    assert reply is not None and reply.body["member_id"] == "plain"
    assert _find_moment_member(client, ["gone"], tries=1) is None
