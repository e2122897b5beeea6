"""Ingest's dead letters about records of a contract with personal fields are redacted."""

from __future__ import annotations

import base64

import orjson
import pytest

from flywheel_ingest.contracts import StaticContracts
from flywheel_ingest.runtime import letter_redactor
from flywheel_shared import privacy
from flywheel_shared.events import RawRecords, encode_event
from flywheel_shared.kafka.consumer import dead_letter
from flywheel_shared.spec import DatasetContract, FieldSpec

EMAIL = "erin-91c2@example.com"


def people(personal: bool) -> DatasetContract:
    return DatasetContract(
        name="people",
        id_field="id",
        time_field="t",
        fields={
            "id": FieldSpec(type="string"),
            "t": FieldSpec(type="datetime"),
            "email": FieldSpec(type="string", personal=personal),
        },
    )


def letter(contracts: StaticContracts, value: bytes) -> tuple[bytes, str]:
    out = dead_letter(
        group="flywheel-ingest-raw",
        topic="t",
        partition=0,
        offset=0,
        key=None,
        value=value,
        error=f"Poison: {EMAIL}",
        attempts=1,
        redact=letter_redactor(contracts),
    )
    return base64.b64decode(out.value_b64), out.error


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(privacy.KEY_VARIABLE, "ingest-test")
    privacy.reset_key()


def test_the_event_dataset_names_the_contract() -> None:
    raw = encode_event(RawRecords(dataset="people", records=[{"email": EMAIL}]))
    value, error = letter(StaticContracts([people(True)]), raw)
    assert orjson.loads(value)["records"] == [{"email": privacy.keyed_hash(EMAIL)}]
    assert EMAIL not in error
    assert letter(StaticContracts([people(False)]), raw) == (raw, f"Poison: {EMAIL}")


def test_bytes_that_are_not_json_lose_their_payload_only_with_personal_fields() -> None:
    junk = b"{" + EMAIL.encode()
    value, error = letter(StaticContracts([people(True)]), junk)
    assert value == b"" and "withheld" in error
    assert letter(StaticContracts([people(False)]), junk)[0] == junk
