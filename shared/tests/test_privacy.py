"""Personal fields: keyed hashes, redaction, withheld validation messages, redacted dead letters."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from flywheel_shared import privacy
from flywheel_shared.auth import UnsafeSettings
from flywheel_shared.events import RawRecords, encode_event
from flywheel_shared.kafka.consumer import dead_letter
from flywheel_shared.privacy import LetterRedactor, keyed_hash, personal_fields, redact
from flywheel_shared.spec import DatasetContract, FieldSpec, ModelSpec
from flywheel_shared.validation import ContractValidator

EMAIL = "alice-7f3a@example.com"


def contract(**fields: FieldSpec) -> DatasetContract:
    return DatasetContract(
        name="people",
        id_field="id",
        time_field="t",
        label_field="y",
        fields={
            "id": FieldSpec(type="string"),
            "t": FieldSpec(type="datetime"),
            "y": FieldSpec(type="bool", required=False, nullable=True),
            "email": FieldSpec(type="string", personal=True, max_length=64),
            "age": FieldSpec(type="int", min=0, max=120, personal=True),
            "segment": FieldSpec(type="category", categories=("a", "b"), personal=True),
            "born": FieldSpec(type="datetime", personal=True, required=False),
            "amount": FieldSpec(type="float", min=0),
            **fields,
        },
    )


def record(**over: Any) -> dict[str, Any]:
    base = {
        "id": "r1",
        "t": "2025-01-01T00:00:00Z",
        "email": EMAIL,
        "age": 42,
        "segment": "a",
        "amount": 1.0,
    }
    return {**base, **over}


@pytest.fixture(autouse=True)
def fixed_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(privacy.KEY_VARIABLE, "k1")
    monkeypatch.delenv(f"{privacy.KEY_VARIABLE}_FILE", raising=False)
    privacy.reset_key()
    yield
    privacy.reset_key()


def test_keyed_hash_is_stable_per_key_and_differs_between_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = keyed_hash(EMAIL)
    assert h.startswith("hmac:") and len(h) == 5 + 16 and EMAIL not in h
    assert keyed_hash(EMAIL) == h and keyed_hash("bob@example.com") != h
    monkeypatch.setenv(privacy.KEY_VARIABLE, "k2")
    privacy.reset_key()
    assert keyed_hash(EMAIL) != h


def test_the_key_file_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = keyed_hash(EMAIL)
    (tmp_path / "key").write_text("k1\n")
    monkeypatch.setenv(privacy.KEY_VARIABLE, "other")
    monkeypatch.setenv(f"{privacy.KEY_VARIABLE}_FILE", str(tmp_path / "key"))
    privacy.reset_key()
    assert keyed_hash(EMAIL) == first


def test_without_a_key_a_random_one_is_drawn_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(privacy.KEY_VARIABLE)
    hashes = []
    for _ in range(2):
        privacy.reset_key()
        with caplog.at_level(logging.WARNING, logger="flywheel_shared.privacy"):
            caplog.clear()
            hashes.append(keyed_hash(EMAIL))
            keyed_hash("again")
        assert [r.getMessage() for r in caplog.records if "random key" in r.getMessage()]
        assert len(caplog.records) == 1
    assert hashes[0] != hashes[1]  # no fixed default key


def test_production_refuses_personal_fields_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    privacy.require_key("production", [contract()])  # the key is set
    monkeypatch.delenv(privacy.KEY_VARIABLE)
    privacy.require_key("dev", [contract()])
    privacy.require_key("production", [None])
    with pytest.raises(UnsafeSettings, match="FLYWHEEL_PERSONAL_KEY"):
        privacy.require_key("production", [None, contract()])


def test_redact_hashes_strings_drops_other_values_and_keeps_nulls() -> None:
    c = contract()
    assert personal_fields(c) == {"email", "age", "segment", "born"}
    out = redact(record(born=None), c)
    assert out == {
        "id": "r1",
        "t": "2025-01-01T00:00:00Z",
        "email": keyed_hash(EMAIL),
        "segment": keyed_hash("a"),
        "born": None,
        "amount": 1.0,
    }
    assert redact("not an object", c) is None
    plain = contract().model_copy(update={"fields": {"id": FieldSpec(type="string")}})
    assert redact("kept", plain) == "kept"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("age", 4242, "range"),
        ("segment", "alice-secret", "category"),
        ("born", "alice-not-a-date", "type"),
        ("email", "x" * 65, "length"),
    ],
)
def test_messages_and_rejections_withhold_personal_values(
    field: str, value: Any, code: str
) -> None:
    v = ContractValidator(contract())
    outcome = v.validate([record(**{field: value})])
    [rejection] = outcome.rejections
    [error] = rejection.errors
    assert error.field == field and error.reason.startswith(code)
    assert str(value) not in error.reason
    if code != "length":
        assert "<withheld>" in error.reason
    text = orjson.dumps(rejection.model_dump()).decode()
    assert EMAIL not in text and str(value) not in text
    assert rejection.record["email"] == keyed_hash(EMAIL if field != "email" else value)


def test_non_personal_messages_still_quote_the_value() -> None:
    v = ContractValidator(contract())
    [rejection] = v.validate([record(amount=-5.5)]).rejections
    assert "-5.5" in rejection.errors[0].reason
    assert rejection.record["amount"] == -5.5


@pytest.mark.parametrize("role", ["id", "t", "y"])
def test_the_id_time_and_label_fields_cannot_be_personal(role: str) -> None:
    base = contract().fields[role]
    with pytest.raises(ValueError, match="cannot be personal"):
        contract(**{role: base.model_copy(update={"personal": True})})


def test_a_personal_drift_feature_is_refused() -> None:
    data = {
        "name": "m",
        "dataset": contract().model_dump(),
        "features": ["email", "amount"],
        "recipe": {"entrypoint": "a.b:c"},
    }
    assert ModelSpec.model_validate(data).features == ("email", "amount")
    with pytest.raises(ValueError, match="'email' is personal"):
        ModelSpec.model_validate({**data, "drift": {"features": ["email"]}})


def _redactor(*contracts: DatasetContract) -> LetterRedactor:
    by_name = {c.name: c for c in contracts}
    return LetterRedactor(
        lambda obj: by_name.get(obj.get("dataset")),  # type: ignore[arg-type]
        lambda: any(privacy.has_personal(c) for c in contracts),
    )


def _letter(value: bytes, error: str, redactor: LetterRedactor | None) -> tuple[bytes, str]:
    letter = dead_letter(
        group="g",
        topic="t",
        partition=0,
        offset=1,
        key=None,
        value=value,
        error=error,
        attempts=1,
        redact=redactor,
    )
    return base64.b64decode(letter.value_b64), letter.error


def test_a_dead_letter_carries_the_redacted_event() -> None:
    raw = encode_event(RawRecords(dataset="people", records=[record(), {"email": EMAIL}]))
    error = f"ValueError: cannot use {EMAIL!r} [type=x, input_value='{EMAIL}', input_type=str]"
    value, reason = _letter(raw, error, _redactor(contract()))
    assert EMAIL.encode() not in value and EMAIL not in reason
    assert "<withheld>" in reason and reason.startswith("ValueError")
    event = orjson.loads(value)
    assert [r["email"] for r in event["records"]] == [keyed_hash(EMAIL)] * 2
    assert "age" not in event["records"][0] and event["records"][0]["amount"] == 1.0


def test_an_undecodable_letter_drops_its_payload_when_personal_data_may_be_in_it() -> None:
    raw = b"{not json " + EMAIL.encode()
    value, reason = _letter(raw, "undecodable event: invalid JSON", _redactor(contract()))
    assert value == b"" and "withheld" in reason and "sha256" in reason
    assert reason.startswith("undecodable event")


def test_without_personal_fields_a_letter_is_kept_as_it_came() -> None:
    plain = DatasetContract(
        name="people",
        id_field="id",
        time_field="t",
        fields={"id": FieldSpec(type="string"), "t": FieldSpec(type="datetime")},
    )
    for raw in (b"{not json", encode_event(RawRecords(dataset="people", records=[{"id": "x"}]))):
        assert _letter(raw, "boom", _redactor(plain)) == (raw, "boom")
        assert _letter(raw, "boom", None) == (raw, "boom")
