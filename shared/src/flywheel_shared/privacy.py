"""Personal data: contract fields marked ``personal: true`` never leave a service in clear.

What happens to a personal field's value, wherever data leaves a service:

- **prediction log** (``predictions`` topic): a string value (string, category, datetime) is
  replaced by its keyed hash ``hmac:<16 hex>`` (HMAC-SHA256 under the deployment's key,
  first 64 bits), so equal values stay equal — counted, joined, compared — without being
  readable; any other value (number, bool) is dropped; null stays null;
- **rejections** (``data.rejected``) and **dead letters** (``deadletter``): the record copies
  are redacted the same way; validation messages say ``<withheld>`` instead of the value;
- **drift**: personal features are not monitored (the trainer's reference sample leaves them
  out, the monitor's drift configuration skips them): a reference hashed by the trainer and a
  stream hashed by serving only compare when both processes share one key, and a personal
  feature's distribution is rarely one worth alarming on;
- **logs**: no log line carries record values (validation reasons withhold them).

The key is ``FLYWHEEL_PERSONAL_KEY`` or ``FLYWHEEL_PERSONAL_KEY_FILE`` (the file wins), the same
in every service so that hashes agree across them. Without one a process draws a random key
(said once in a warning): hashes then differ between processes and restarts, which is fine in
development and never a guessable default. :func:`require_key` lets production refuse to run
contracts with personal fields without a key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from .spec import DatasetContract

__all__ = [
    "KEY_VARIABLE",
    "WITHHELD",
    "LetterRedactor",
    "has_personal",
    "keyed_hash",
    "personal_fields",
    "redact",
    "redact_record",
    "require_key",
]

log = logging.getLogger(__name__)

KEY_VARIABLE = "FLYWHEEL_PERSONAL_KEY"
#: What a validation message or dead-letter error says instead of a personal value.
WITHHELD = "<withheld>"
_PREFIX = "hmac:"

_lock = threading.Lock()
_key: bytes | None = None


def _configured_key() -> str | None:
    from .auth import read_secret  # fastapi behind it: imported only when a key is needed

    return read_secret(os.environ.get(KEY_VARIABLE), os.environ.get(f"{KEY_VARIABLE}_FILE"))


def _the_key() -> bytes:
    global _key
    if _key is None:
        with _lock:
            if _key is None:
                secret = _configured_key()
                if secret is None:
                    log.warning(
                        f"no {KEY_VARIABLE}: personal fields are hashed with a random key of "
                        "this process (hashes differ between processes and restarts)"
                    )
                    _key = secrets.token_bytes(32)
                else:
                    _key = secret.encode()
    return _key


def reset_key() -> None:
    """Forget the key (tests; the next hash reads the environment again)."""
    global _key
    with _lock:
        _key = None


def keyed_hash(value: str) -> str:
    """``hmac:<16 hex>``: the first 64 bits of HMAC-SHA256(key, value)."""
    digest = hmac.new(_the_key(), value.encode(), hashlib.sha256).hexdigest()
    return _PREFIX + digest[:16]


def personal_fields(contract: DatasetContract | None) -> frozenset[str]:
    """The names of the contract's personal fields (empty without a contract)."""
    if contract is None:
        return frozenset()
    return frozenset(n for n, f in contract.fields.items() if f.personal)


def has_personal(contract: DatasetContract | None) -> bool:
    """Whether the contract marks any field personal."""
    return contract is not None and any(f.personal for f in contract.fields.values())


def require_key(environment: str, contracts: Iterable[DatasetContract | None]) -> None:
    """Refuse ``production`` with personal fields and no key (:class:`UnsafeSettings`)."""
    from .auth import UnsafeSettings

    if environment != "production" or not any(has_personal(c) for c in contracts):
        return
    if _configured_key() is None:
        raise UnsafeSettings(
            f"refusing to start: a contract has personal fields and production needs "
            f"{KEY_VARIABLE} or {KEY_VARIABLE}_FILE to hash them"
        )


def redact_record(record: dict[str, Any], personal: frozenset[str]) -> dict[str, Any]:
    """A copy of ``record`` with the ``personal`` fields hashed (strings) or dropped (others)."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if name not in personal or value is None:
            out[name] = value
        elif isinstance(value, str):
            out[name] = keyed_hash(value)
        # any other personal value is dropped
    return out


def redact(record: Any, contract: DatasetContract | None) -> Any:
    """``record`` as it may leave the service: personal fields hashed or dropped.

    A record that is not an object cannot be told apart from its personal parts: with a
    contract that has personal fields it becomes None."""
    personal = personal_fields(contract)
    if not personal:
        return record
    if not isinstance(record, dict):
        return None
    return redact_record(record, personal)


# pydantic quotes the offending input in its messages: ``input_value='...', input_type=str``.
_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=|\]$|\]\n|$)", re.MULTILINE)


def _values(records: Iterable[Any], personal: frozenset[str]) -> set[str]:
    out: set[str] = set()
    for r in records:
        if isinstance(r, dict):
            for name in personal & r.keys():
                v = r[name]
                if v is not None and not isinstance(v, bool):
                    text = str(v)
                    if len(text) >= 4:  # short ones would also match unrelated text
                        out.add(text)
    return out


def scrub(text: str, values: Iterable[str] = ()) -> str:
    """``text`` without the given personal values and without pydantic's quoted inputs."""
    for v in sorted(values, key=len, reverse=True):
        text = text.replace(v, WITHHELD)
    return _INPUT_VALUE.sub(f"input_value={WITHHELD}", text)


# Where the events of each topic keep records: (list key, key of the record in an item).
_RECORD_LISTS = (("records", None), ("rejections", "record"), ("predictions", "features"))


class LetterRedactor:
    """Redacts dead letters of events whose contract has personal fields.

    ``contract_of`` names the contract of a decoded event object (by its ``dataset`` or
    ``model``); ``any_personal`` says whether any contract this service knows has personal
    fields. A payload that parses is replaced by its redacted JSON (records, rejected records
    and prediction features); one that does not parse cannot be redacted, so when any contract
    has personal fields it is dropped (the letter keeps its reason, size and sha256). The
    trade-off: such a letter can no longer be replayed as it was, only explained — replaying a
    redacted one gives the hashes, not the values. The error text loses the personal values
    the payload held and pydantic's quoted inputs.
    """

    def __init__(
        self,
        contract_of: Callable[[dict[str, Any]], DatasetContract | None],
        any_personal: Callable[[], bool],
    ) -> None:
        self.contract_of = contract_of
        self.any_personal = any_personal

    def __call__(self, value: bytes, error: str) -> tuple[bytes, str]:
        """The payload and error a dead letter may carry."""
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            if not self.any_personal():
                return value, error
            digest = hashlib.sha256(value).hexdigest()
            note = f" [payload of {len(value)} bytes withheld: personal data; sha256 {digest}]"
            return b"", scrub(error) + note
        try:
            contract = self.contract_of(obj)
        except Exception:  # a lookup that fails must not hold the letter back
            contract = None
        personal = personal_fields(contract)
        if not personal:
            if contract is None and self.any_personal():
                return value, scrub(error)
            return value, error
        found: set[str] = set()
        for list_key, item_key in _RECORD_LISTS:
            items = obj.get(list_key)
            if not isinstance(items, list):
                continue
            for i, item in enumerate(items):
                if item_key is None:
                    found |= _values([item], personal)
                    items[i] = redact(item, contract)
                elif isinstance(item, dict) and item_key in item:
                    found |= _values([item[item_key]], personal)
                    item[item_key] = redact(item[item_key], contract)
        return orjson.dumps(obj), scrub(error, found)
