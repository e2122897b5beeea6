from __future__ import annotations

import hashlib

import pytest

from flywheel_shared.integrity import DigestMismatch, check_sha256, sha256_hex

DATA = b"some artifact bytes"
DIGEST = hashlib.sha256(DATA).hexdigest()


def test_sha256_hex_is_the_lower_case_hex_digest() -> None:
    assert sha256_hex(DATA) == DIGEST
    assert sha256_hex(b"") == hashlib.sha256(b"").hexdigest()


def test_matching_bytes_pass() -> None:
    assert check_sha256(DATA, DIGEST) is None
    assert check_sha256(DATA, DIGEST, lambda actual: AssertionError(actual)) is None


def test_a_mismatch_raises_digest_mismatch_naming_both_digests() -> None:
    with pytest.raises(DigestMismatch) as info:
        check_sha256(DATA + b"!", DIGEST)
    actual = sha256_hex(DATA + b"!")
    assert (info.value.expected, info.value.actual) == (DIGEST, actual)
    assert DIGEST in str(info.value) and actual in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_mismatch_raises_the_callers_exception_given_the_actual_digest() -> None:
    class Corrupt(RuntimeError):
        pass

    with pytest.raises(Corrupt, match=f"^got {sha256_hex(b'other')}$"):
        check_sha256(b"other", DIGEST, lambda actual: Corrupt(f"got {actual}"))
