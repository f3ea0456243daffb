"""Real server processes on loopback for integration tests: an ``mlflow server`` (SQLite
backend, artifacts proxied to a local directory), ``offers serve``, and a fresh database on the
throwaway PostgreSQL cluster of :mod:`tests.support.postgres`. The ``mlflow_server`` fixture
(tests/integration/conftest.py) starts a tracking server per module.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "MlflowServer",
    "OffersServer",
    "free_port",
    "fresh_postgres_database",
]

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of ``GET url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


class MlflowServer:
    """``mlflow server`` as a child process: SQLite backend store and ``--artifacts-destination``
    under ``root`` (clients upload artifacts through the server)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> MlflowServer:
        """Start the process without waiting (do other set-up while it boots)."""
        exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        cmd = [
            exe, "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'store.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout: float = 300.0) -> MlflowServer:
        """Wait until ``/health`` answers 200; raise RuntimeError (with the log) otherwise."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.tail()}")
            if _answers(f"{self.url}/health") == 200:
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy in {timeout:.0f} s: {self.tail()}")

    def start(self, timeout: float = 300.0) -> MlflowServer:
        return self.launch().wait_healthy(timeout)

    def tail(self) -> str:
        return self.log.read_text()[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class OffersServer:
    """``offers serve`` (the CLI) as a child process on a free loopback port; ``env`` is added to
    this process's environment (``OFFERS_DATABASE_URL`` and ``MLFLOW_TRACKING_URI`` are taken
    only from ``env``)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> OffersServer:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        for var in ("OFFERS_DATABASE_URL", "MLFLOW_TRACKING_URI", "OFFERS_API_KEYS_FILE"):
            env.pop(var, None)
        env.update(self.env)
        cmd = [sys.executable, "-m", "offers", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"offers serve exited: {self.log.read_text()[-3000:]}")
            if _answers(f"{self.url}/readyz") == 200:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"offers serve not ready in {timeout:.0f} s: {self.log.read_text()}")

    def stop(self) -> int | None:
        """Terminate (SIGTERM: graceful shutdown); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at ``server_url`` (dropped afterwards)."""
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
