"""Request and prediction ids: 32 hex digits, unique without a system call per id.

``uuid4()`` reads ``os.urandom`` for every id; that system call drops the GIL, and with the
model running on its thread the event loop then waits up to the switch interval (5 ms) to get
it back (``batching.py``). An id here is 16 random hex digits drawn once per process (again in
a forked child), then a 16-digit counter: as unique as a random UUID across workers and
restarts (64 random bits per process), the same length and alphabet as ``uuid4().hex``.
"""

from __future__ import annotations

import itertools
import os

_prefix = ""
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix, _counter = os.urandom(8).hex(), itertools.count()


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A new id, unique in the fleet."""
    return f"{_prefix}{next(_counter):016x}"
