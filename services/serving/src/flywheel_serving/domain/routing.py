"""Sticky traffic split between production and canary.

A request's routing key (its request id, or a client-chosen key) is hashed to a number in
[0, 1); it goes to the canary when that number is below the canary's weight. The hash is
stable across processes and restarts (not Python's salted ``hash``), so every replica and
worker sends the same key to the same version, and raising the weight only moves keys from
production to the canary, never back and forth.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import TypeAlias

from flywheel_shared.aliases import Alias

Route: TypeAlias = Alias
"""The alias whose version answered (or, for ``shadow``, scored) a request."""
_SCALE = float(2**64)


def bucket(key: str) -> float:
    """The key's stable position in [0, 1)."""
    digest = blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def choose(key: str, canary_weight: float, *, has_canary: bool) -> Route:
    """``canary`` for the share ``canary_weight`` of keys (when there is one), else production."""
    if has_canary and canary_weight > 0 and bucket(key) < canary_weight:
        return "canary"
    return "production"
