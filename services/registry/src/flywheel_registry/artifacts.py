"""Content-addressed artifact storage on the shared ``ObjectStore``.

An artifact lives at ``artifacts/sha256/<first two hex>/<sha256>``: its name is its hash, so
storing the same bytes twice is a no-op and every read can be checked against its name.
"""

from __future__ import annotations

import re

from flywheel_shared.integrity import check_sha256, sha256_hex
from flywheel_shared.storage import ObjectStore

from .metrics import INTEGRITY_FAILURES

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class IntegrityFailure(RuntimeError):
    """The stored bytes of an artifact are missing or no longer hash to its name."""


def is_sha256(value: str) -> bool:
    """True for a lower-case hex sha256."""
    return bool(_SHA256.match(value))


def artifact_key(sha256: str) -> str:
    """Object key of the artifact with this hash."""
    if not is_sha256(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return f"artifacts/sha256/{sha256[:2]}/{sha256}"


class ArtifactStore:
    """Put and get artifacts by hash, verifying the bytes both ways."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(self, data: bytes, sha256: str) -> tuple[str, bool]:
        """Store ``data`` (whose hash the caller computed); returns (uri, written).

        Bytes already stored under the hash are kept when they still match, and replaced
        when they do not, so re-uploading repairs a damaged copy.
        """
        key = artifact_key(sha256)
        if self.store.exists(key):
            try:
                if sha256_hex(self.store.get(key)) == sha256:
                    return self.store.uri(key), False
            except FileNotFoundError:
                pass
        return self.store.put(key, data), True

    def get(self, sha256: str) -> bytes:
        """The artifact's bytes, after checking that they still hash to ``sha256``."""
        try:
            data = self.store.get(artifact_key(sha256))
        except FileNotFoundError as exc:
            INTEGRITY_FAILURES.inc()
            raise IntegrityFailure(
                f"artifact {sha256} is indexed but its bytes are missing"
            ) from exc
        check_sha256(data, sha256, lambda actual: _failure(sha256, actual))
        return data

    def uri(self, sha256: str) -> str:
        """Where the artifact lives."""
        return self.store.uri(artifact_key(sha256))


def _failure(sha256: str, actual: str) -> IntegrityFailure:
    INTEGRITY_FAILURES.inc()
    return IntegrityFailure(f"stored bytes of artifact {sha256} hash to {actual}")
