"""Fixtures for the unit tests (builders of tiny data are plain functions in
:mod:`tests.support`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.store import OffersStore, open_store


@pytest.fixture(scope="module")
def pyfunc(tmp_path_factory: pytest.TempPathFactory):
    """The pet shop's affinity pyfunc (an ALS blend with a calibrator), loaded."""
    from tests.support.affinity import pet_shop_pyfunc  # mlflow: imported when first used

    return pet_shop_pyfunc(tmp_path_factory.mktemp("affinity"))


@pytest.fixture
def store(database_url: str) -> Iterator[OffersStore]:
    """An open store on an empty database (SQLite file or PostgreSQL, see ``database_url``)."""
    opened = open_store(database_url, pool_size=20)
    yield opened
    opened.close()
