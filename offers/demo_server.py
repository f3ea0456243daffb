"""The serving API of ``offers demo`` under uvicorn in a background thread of the CLI process.

``DemoServer.start()`` checks the port, builds the app (models from the registry, bundle,
store: the same ``create_app`` as ``offers serve``), serves it in a thread and waits until
``/readyz`` says ready; ``stop()`` asks uvicorn to exit and joins the thread (in-flight
requests finish, the decision log is flushed by the app's lifespan).
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["DemoServer", "DemoServerError", "check_port"]


class DemoServerError(RuntimeError):
    """The demo server could not start (names the port or the failed readiness checks)."""


def check_port(host: str, port: int) -> None:
    """Raise :class:`DemoServerError` naming ``host:port`` when something already listens there
    (bound the way uvicorn binds, with SO_REUSEADDR, so a port in TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DemoServerError(
                    f"port {port} on {host} is already in use; stop whatever listens there "
                    f"or choose another with --port"
                ) from exc
            raise DemoServerError(f"cannot bind {host}:{port}: {exc.strerror}") from exc


def _get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class DemoServer:
    """uvicorn serving ``create_app(settings)`` on ``host:port``."""

    def __init__(self, settings: Any, host: str, port: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 180.0) -> dict[str, Any]:
        """Serve and wait until ready; returns the ``/readyz`` body."""
        import uvicorn

        from serving.api.app import create_app

        check_port(self.host, self.port)
        app = create_app(self.settings)
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="offers-demo-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise DemoServerError(
                    f"server on {self.url} did not start"
                    + (f": {type(self._error).__name__}: {self._error}" if self._error else "")
                )
            if time.monotonic() > deadline:
                self.stop()
                raise DemoServerError(f"server on {self.url} did not start in {timeout:.0f} s")
            time.sleep(0.05)
        status, body = _get_json(f"{self.url}/readyz")
        if status != 200 or not body.get("ready"):
            self.stop()
            raise DemoServerError(f"server on {self.url} is not ready: {body}")
        return body

    def _run(self) -> None:
        try:
            self._server.run()
        except BaseException as exc:  # SystemExit from a failed bind included
            self._error = exc

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the server thread ends (Ctrl-C raises KeyboardInterrupt here)."""
        while self.running:
            assert self._thread is not None
            self._thread.join(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit (finishing in-flight requests) and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
