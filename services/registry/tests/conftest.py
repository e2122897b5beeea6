"""Fixtures of the registry tests: an empty database on each backend, a migrated store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel_devkit.testing.postgres import UNAVAILABLE, fresh_database
from flywheel_registry.db import make_engine
from flywheel_registry.migrate import upgrade
from flywheel_registry.store import RegistryStore


def _database(request: pytest.FixtureRequest, sqlite_dir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{sqlite_dir / 'registry.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    if server is None:
        pytest.skip(UNAVAILABLE)
    with fresh_database(server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    yield from _database(request, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per backend for the tests sharing a registry process."""
    yield from _database(request, tmp_path_factory.mktemp("sqlite"))


@pytest.fixture
def store(db_url: str) -> Iterator[RegistryStore]:
    """A migrated store with no events notified."""
    engine = make_engine(db_url)
    upgrade(engine)
    yield RegistryStore(engine)
    engine.dispose()
