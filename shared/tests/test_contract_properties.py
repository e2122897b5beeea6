"""Property tests of the contract validator on the example fraud contract: any record built
from the contract passes (and comes back normalised); any single-field violation is refused
with exactly that field named; the JSON Schema the validator publishes (API documents) says
the same; and events survive an encode/parse round trip."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema_rs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_shared.events import RawRecords, encode_event, parse_event
from flywheel_shared.spec import FieldSpec, FieldType, UnknownFieldPolicy, load_spec
from flywheel_shared.validation import ContractValidator

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml").dataset
VALIDATOR = ContractValidator(CONTRACT)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_value(spec: FieldSpec) -> st.SearchStrategy[Any]:
    t = spec.type
    if t is FieldType.INT:
        lo = -(10**9) if spec.min is None else math.ceil(spec.min)
        hi = 10**9 if spec.max is None else math.floor(spec.max)
        return st.integers(lo, hi)
    if t is FieldType.FLOAT:
        return st.floats(spec.min, spec.max, allow_nan=False, allow_infinity=False)
    if t is FieldType.BOOL:
        return st.booleans()
    if t is FieldType.CATEGORY:
        return st.sampled_from(spec.categories or ())
    if t is FieldType.STRING:
        return st.text(max_size=spec.max_length or 100)
    offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])
    return st.builds(
        lambda dt, tz: dt.replace(tzinfo=tz).isoformat(),
        st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30)),
        offsets,
    )


def invalid_values(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """Values this field must refuse (never None: nullability is tested on its own)."""
    t, options = spec.type, []
    if t in (FieldType.INT, FieldType.FLOAT):
        options.append(st.sampled_from(["12", True, [], {"v": 1}, math.nan, math.inf]))
        if spec.min is not None:
            options.append(
                st.floats(max_value=spec.min, exclude_max=True, allow_nan=False).filter(
                    lambda v: math.isfinite(v)
                )
            )
        if spec.max is not None:
            options.append(
                st.floats(min_value=spec.max, exclude_min=True, allow_nan=False).filter(
                    lambda v: math.isfinite(v)
                )
            )
        if t is FieldType.INT:
            options.append(st.sampled_from([1.5, -0.25]))
    elif t is FieldType.BOOL:
        options.append(st.sampled_from([0, 1, "true", "yes", 1.0]))
    elif t is FieldType.CATEGORY:
        allowed = set(spec.categories or ())
        options.append(st.text(max_size=20).filter(lambda s: s not in allowed))
        options.append(st.sampled_from([3, False]))
    elif t is FieldType.STRING:
        options.append(st.sampled_from([7, 1.5, False, ["a"]]))
        if spec.max_length:
            options.append(st.text(min_size=spec.max_length + 1, max_size=spec.max_length + 20))
    else:
        options.append(st.sampled_from(["2026-01-01T00:00:00", "yesterday", 20260101, ""]))
    return st.one_of(*options)


RECORDS = st.fixed_dictionaries(
    {name: valid_value(spec) for name, spec in CONTRACT.fields.items() if spec.required},
    optional={
        name: valid_value(spec) for name, spec in CONTRACT.fields.items() if not spec.required
    },
)


@SETTINGS
@given(RECORDS)
def test_any_record_built_from_the_contract_passes(record: dict[str, Any]) -> None:
    out, errors = VALIDATOR.check(record)
    assert errors == [], errors
    assert out is not None and set(out) == set(record)
    ts = out[CONTRACT.time_field]
    parsed = datetime.fromisoformat(ts)
    assert parsed.utcoffset() == timedelta(0)  # normalised to UTC
    assert parsed == datetime.fromisoformat(record[CONTRACT.time_field])


@st.composite
def one_violation(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    record = draw(RECORDS)
    name = draw(st.sampled_from(sorted(CONTRACT.fields)))
    spec = CONTRACT.fields[name]
    kinds = ["value"]
    if spec.required:
        kinds.append("missing")
    if not spec.nullable:
        kinds.append("null")
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        record.pop(name, None)
    elif kind == "null":
        record[name] = None
    else:
        record[name] = draw(invalid_values(spec))
    return record, name


@SETTINGS
@given(one_violation())
def test_any_single_field_violation_is_refused_with_that_field_named(
    case: tuple[dict[str, Any], str],
) -> None:
    record, name = case
    out, errors = VALIDATOR.check(record)
    assert out is None
    assert [e.field for e in errors] == [name], errors


@SETTINGS
@given(st.lists(RECORDS, min_size=1, max_size=5), st.text(max_size=30))
def test_raw_records_survive_an_encode_parse_round_trip(
    records: list[dict[str, Any]], source: str
) -> None:
    event = RawRecords(dataset=CONTRACT.name, records=records, source=source or None)
    back = parse_event(encode_event(event))
    assert back == event and back.event_id == event.event_id


# -- the JSON Schema of the records a validator accepts (what API documents publish) --------

RECORD_SCHEMA = jsonschema_rs.validator_for(VALIDATOR.json_schema(), validate_formats=True)


@SETTINGS
@given(RECORDS)
def test_any_record_built_from_the_contract_fits_its_json_schema(record: dict[str, Any]) -> None:
    assert RECORD_SCHEMA.is_valid(record), list(RECORD_SCHEMA.iter_errors(record))[:3]


@SETTINGS
@given(one_violation())
def test_any_single_field_violation_breaks_the_json_schema(
    case: tuple[dict[str, Any], str],
) -> None:
    record, _ = case
    if any(isinstance(v, float) and not math.isfinite(v) for v in record.values()):
        return  # NaN and infinity have no JSON form: no JSON body can carry them
    assert not RECORD_SCHEMA.is_valid(record)


def test_the_example_record_passes_and_unknown_fields_follow_the_policy() -> None:
    example = VALIDATOR.example()
    assert VALIDATOR.check(example)[1] == [] and RECORD_SCHEMA.is_valid(example)
    assert not RECORD_SCHEMA.is_valid({**example, "surprise": 1})  # the contract rejects them
    lenient = ContractValidator(
        CONTRACT, fields=["amount", "hour"], unknown_fields=UnknownFieldPolicy.DROP
    )
    schema = lenient.json_schema()
    assert sorted(schema["properties"]) == ["amount", "hour"] and schema["additionalProperties"]
    assert lenient.check({**lenient.example(), "surprise": 1})[1] == []
