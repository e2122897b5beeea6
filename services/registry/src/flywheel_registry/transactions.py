"""Database access for the use cases: write and read transactions, retried first inserts.

A write transaction collects callbacks (metrics, logs, the relay's wake-up) and runs them
only after it committed. Per-model changes are serialised by locking the model's row
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, see ``db.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import READ_ONLY

T = TypeVar("T")


@dataclass
class Tx:
    """A write transaction in progress."""

    session: Session
    notify: Callable[[], None] | None = None
    on_commit: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction committed (not if it rolls back)."""
        self.on_commit.append(callback)


class Database:
    """An engine and its transactions; ``notify`` is called after commits that wrote events."""

    def __init__(self, engine: Engine, *, notify: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY: True})
        self.notify = notify
        """Called (from any thread) after a commit that wrote outbox events."""

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A read-write transaction; its ``on_commit`` callbacks run after COMMIT."""
        tx = Tx(Session(self.engine, expire_on_commit=False, autoflush=False), self.notify)
        with tx.session as session, session.begin():
            yield tx
        for callback in tx.on_commit:
            callback()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (a deferred BEGIN on SQLite)."""
        with Session(self._read_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


def retry_races(fn: Callable[[], T], attempts: int = 3) -> T:
    """Run ``fn`` again when it lost a race between two first inserts of the same key (spec,
    artifact): the retry finds the winner's row."""
    for attempt in range(attempts):
        try:
            return fn()
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
