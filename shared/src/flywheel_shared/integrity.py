"""Content integrity: the sha256 that names artifacts and dataset segments, and the one check
that bytes still hash to the sha256 they are known by."""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class DigestMismatch(ValueError):
    """Bytes do not hash to the sha256 they are known by."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch: expected {expected}, got {actual}")
        self.expected, self.actual = expected, actual


def check_sha256(
    data: bytes, expected: str, mismatch: Callable[[str], Exception] | None = None
) -> None:
    """Raise unless ``data`` hashes to ``expected``: ``mismatch(actual_digest)`` builds the
    exception raised (by default :class:`DigestMismatch`), so each caller keeps its own error
    type and message."""
    actual = sha256_hex(data)
    if actual != expected:
        raise mismatch(actual) if mismatch is not None else DigestMismatch(expected, actual)
