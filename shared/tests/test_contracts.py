from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from flywheel_shared import schemas
from flywheel_shared.events import (
    EVENT_CLASSES,
    BatchCommitted,
    ModelAliasChanged,
    RawRecords,
    derived_id,
    encode_event,
    parse_event,
)
from flywheel_shared.spec import Gate, SpecError, load_spec
from flywheel_shared.topics import TOPICS, TopicNamer

ROOT = Path(__file__).resolve().parents[2]


def test_event_roundtrip_by_discriminator() -> None:
    ev = RawRecords(dataset="d", records=[{"a": 1}])
    back = parse_event(encode_event(ev))
    assert type(back) is RawRecords and back == ev
    assert back.occurred_at.tzinfo is not None
    assert back.key() == "d"
    assert ModelAliasChanged(model="m", alias="production", version=3).key() == "m"


def test_wire_format_matches_pydantic_json() -> None:
    from flywheel_shared.events import FieldError, RecordsRejected, Rejection

    ev = RecordsRejected(
        dataset="d",
        rejections=[
            Rejection(index=1, errors=[FieldError(field="a", reason="r")], record={"x": 1.5})
        ],
    )
    assert json.loads(encode_event(ev)) == json.loads(ev.model_dump_json())
    assert parse_event(encode_event(ev)) == ev


def test_events_are_frozen_and_strict() -> None:
    ev = RawRecords(dataset="d", records=[{"a": 1}])
    with pytest.raises(ValidationError):
        ev.dataset = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        parse_event(b'{"type": "data.raw", "dataset": "d", "records": [{}], "surprise": 1}')
    with pytest.raises(ValidationError):
        parse_event(b'{"type": "no.such.event"}')
    with pytest.raises(ValidationError):
        parse_event(b"\x00garbage")


def test_derived_ids_are_stable() -> None:
    assert derived_id("a", 1) == derived_id("a", 1) != derived_id("a", 2)


def test_topic_names() -> None:
    namer = TopicNamer("acme")
    assert namer("data.raw") == "acme.data.raw.v1"
    assert namer.for_event(BatchCommitted) == "acme.data.batch.committed.v1"
    assert namer.logical("acme.predictions.v1") == "predictions"
    assert {c.topic for c in EVENT_CLASSES} == set(TOPICS)


def test_committed_schemas_are_current() -> None:
    assert schemas.stale(ROOT / "shared" / "schemas") == []


def test_gate_strings() -> None:
    assert Gate.model_validate("roc_auc >= 0.8") == Gate(metric="roc_auc", op=">=", value=0.8)
    g = Gate.model_validate("roc_auc >= champion - 0.005")
    assert (g.vs_champion, g.value) == (True, -0.005)
    with pytest.raises(ValidationError):
        Gate.model_validate("roc_auc is good")


def test_example_spec_loads_and_bad_specs_say_why(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
    assert spec.dataset.label_field == "is_fraud"
    assert all(f in spec.dataset.fields for f in spec.features)
    text = (ROOT / "examples" / "fraud" / "flywheel.yaml").read_text()
    with pytest.raises(SpecError, match="feature 'nope'"):
        load_spec(text.replace("  - amount\n", "  - nope\n", 1))
    with pytest.raises(SpecError, match=r"min 5\.0 is greater than max"):
        load_spec(text.replace("min: 0\n      max: 23", "min: 5\n      max: 1", 1))
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
