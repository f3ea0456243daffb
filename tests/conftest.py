"""Fixtures for both test tiers: the real data sets, a throwaway PostgreSQL server and an empty
database on either backend.

Fixtures for one tier live in ``tests/unit/conftest.py`` and ``tests/integration/conftest.py``;
plain helpers (builders, server launchers) in :mod:`tests.support`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import start_postgres
from tests.support.servers import fresh_postgres_database

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OFFERS_SHARED_DATA", REPO.parent / "shared" / "data"))
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


# Variables a test module may set only for itself: a module that leaves one changed makes every
# later module's in-process settings (``Settings()`` reads them) differ from a run of that module
# alone, while the servers the tests start get their own explicit environment.
GUARDED_PREFIXES = ("OFFERS_",)


def _guarded() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(GUARDED_PREFIXES)}


def leaked_variables(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple]:
    """Guarded variables whose value differs: name -> (before, after), None when unset."""
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def environment_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test module leaves the ``OFFERS_*`` environment as it found it: a leak is
    restored (so later modules are unaffected) and reported as an error naming the module and
    the variables."""
    before = _guarded()
    yield
    leaked = leaked_variables(before, _guarded())
    if leaked:
        for name, (old, _new) in leaked.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        pytest.fail(
            f"{request.module.__name__} left environment variables changed "
            f"(name: (before, after)): {leaked}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip only when it is genuinely absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL server for the whole test session (database ``postgres``)."""
    root = Path(tempfile.mkdtemp(prefix="offers-pg-"))
    url, cluster = start_postgres(root)
    try:
        yield url
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'offers.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url
