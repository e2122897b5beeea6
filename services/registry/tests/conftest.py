"""Fixtures of the registry tests: an empty database on each backend, a migrated store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel_registry.db import make_engine
from flywheel_registry.migrate import upgrade
from flywheel_registry.store import RegistryStore
from flywheel_shared.testing.postgres import UNAVAILABLE

from .registry_support import drop_postgres, fresh_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    if server is None:
        pytest.skip(UNAVAILABLE)
    url, name = fresh_postgres(server)
    yield url
    if name is not None:
        drop_postgres(server, name)


@pytest.fixture
def store(db_url: str) -> Iterator[RegistryStore]:
    """A migrated store with no events notified."""
    engine = make_engine(db_url)
    upgrade(engine)
    yield RegistryStore(engine)
    engine.dispose()
