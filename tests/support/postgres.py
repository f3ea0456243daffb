"""A throwaway PostgreSQL cluster for store tests (``initdb`` + ``pg_ctl`` on 127.0.0.1).

The ``postgres_url`` fixture (tests/conftest.py) starts one per session. The cluster lives in
a temporary directory, listens on a free loopback port and is stopped at the end of the
session. PostgreSQL refuses to run as root, so
under root the binaries run through ``runuser -u postgres --`` on a directory owned by postgres.
When no server binaries are installed the fixture skips (CI installs the Debian package).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

__all__ = ["start_postgres"]


def _bin_dir() -> Path | None:
    override = os.environ.get("OFFERS_PG_BIN")
    if override:
        return Path(override)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Cluster:
    """One running cluster: its data directory, port and the command prefix to run as."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(root, user="postgres", group="postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=timeout)

    def start(self) -> str:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.data),
            "-U", "offers",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )  # fmt: skip
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D", str(self.data),
            "-l", str(self.root / "log"),
            "-o", options,
            "-w",
            "start",
        )  # fmt: skip
        return f"postgresql+psycopg://offers@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
             "-w", "stop"],
            capture_output=True,
            timeout=60,
        )  # fmt: skip


def start_postgres(root: Path) -> tuple[str, _Cluster]:
    """Start a cluster under ``root``; returns its SQLAlchemy URL and a handle to stop it."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = _Cluster(bin_dir, root)
    try:
        url = cluster.start()
    except subprocess.CalledProcessError as exc:
        log = root / "log"
        detail = log.read_text()[-2000:] if log.exists() else exc.stderr.decode()[-2000:]
        raise RuntimeError(f"could not start PostgreSQL in {root}: {detail}") from exc
    return url, cluster
