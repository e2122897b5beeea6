"""FraudSimulator: contract conformance, determinism, label rate and drift."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from flywheel_fraud.simulator import FEATURES, MERCHANT_CATEGORIES, Drift, FraudSimulator
from flywheel_shared.spec import DatasetContract, FieldSpec, FieldType, ModelSpec, load_spec

SPEC_PATH = Path(__file__).resolve().parents[1] / "flywheel.yaml"
DRIFTS: tuple[Drift, ...] = ("none", "covariate", "concept", "both")


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_spec(SPEC_PATH)


def _value_error(name: str, field: FieldSpec, value: Any) -> str | None:
    """Why ``value`` breaks ``field``, or None. A test helper, not the ingest validator."""
    kind = field.type
    if kind is FieldType.BOOL:
        return None if isinstance(value, bool) else f"{name}: {value!r} is not a bool"
    if kind is FieldType.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name}: {value!r} is not an int"
    elif kind is FieldType.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name}: {value!r} is not a number"
        if not math.isfinite(value):
            return f"{name}: {value!r} is not finite"
    elif kind is FieldType.STRING:
        if not isinstance(value, str):
            return f"{name}: {value!r} is not a string"
        if field.max_length is not None and len(value) > field.max_length:
            return f"{name}: longer than {field.max_length}"
        return None
    elif kind is FieldType.CATEGORY:
        if value not in (field.categories or ()):
            return f"{name}: {value!r} is not one of {field.categories}"
        return None
    elif kind is FieldType.DATETIME:
        if not isinstance(value, str):
            return f"{name}: {value!r} is not an RFC 3339 string"
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return f"{name}: cannot parse {value!r}"
        return None if parsed.tzinfo is not None else f"{name}: {value!r} has no timezone"
    if field.min is not None and value < field.min:
        return f"{name}: {value!r} < min {field.min}"
    if field.max is not None and value > field.max:
        return f"{name}: {value!r} > max {field.max}"
    return None


def contract_errors(record: dict[str, Any], contract: DatasetContract) -> list[str]:
    """Every way ``record`` breaks ``contract`` (empty when it conforms)."""
    errors = [f"{k}: unknown field" for k in record.keys() - contract.fields.keys()]
    for name, field in contract.fields.items():
        if name not in record:
            if field.required:
                errors.append(f"{name}: missing")
            continue
        if record[name] is None:
            if not field.nullable:
                errors.append(f"{name}: null")
            continue
        error = _value_error(name, field, record[name])
        if error:
            errors.append(error)
    return errors


def test_contract_helper_catches_violations(spec: ModelSpec) -> None:
    good = FraudSimulator(seed=0).batch(1)[0]
    assert contract_errors(good, spec.dataset) == []
    assert contract_errors({**good, "is_fraud": None}, spec.dataset) == []
    assert contract_errors({k: v for k, v in good.items() if k != "is_fraud"}, spec.dataset) == []
    bad = [
        {**good, "extra": 1},
        {**good, "amount": -1.0},
        {**good, "hour": 24},
        {**good, "hour": 3.0},
        {**good, "card_present": 1},
        {**good, "merchant_category": "casino"},
        {**good, "event_time": "2025-01-01T00:00:00"},
        {**good, "amount": None},
        {k: v for k, v in good.items() if k != "foreign"},
    ]
    for record in bad:
        assert contract_errors(record, spec.dataset), record


def test_spec_matches_simulator(spec: ModelSpec) -> None:
    contract = spec.dataset
    assert spec.name == "fraud"
    assert contract.name == FraudSimulator.dataset
    assert contract.id_field == FraudSimulator.id_field
    assert contract.time_field == FraudSimulator.time_field
    assert contract.label_field == FraudSimulator.label_field
    assert spec.features == FEATURES
    assert contract.fields["merchant_category"].categories == MERCHANT_CATEGORIES
    label = contract.fields["is_fraud"]
    assert label.type is FieldType.BOOL and label.nullable and not label.required


@pytest.mark.parametrize("drift", DRIFTS)
def test_every_record_satisfies_the_contract(spec: ModelSpec, drift: Drift) -> None:
    records = FraudSimulator(seed=3, drift_at=2000, drift=drift).batch(12_000)
    keys = set(spec.dataset.fields)
    for record in records:
        assert set(record) == keys
        assert isinstance(record["is_fraud"], bool)
        assert contract_errors(record, spec.dataset) == [], record


def test_same_seed_same_records_other_seed_other_records() -> None:
    a = FraudSimulator(seed=7, drift_at=100, drift="both").batch(500)
    b = FraudSimulator(seed=7, drift_at=100, drift="both").batch(500)
    c = FraudSimulator(seed=8, drift_at=100, drift="both").batch(500)
    assert a == b
    strip = [{k: v for k, v in r.items() if k != "transaction_id"} for r in c]
    assert strip != [{k: v for k, v in r.items() if k != "transaction_id"} for r in a]


def test_batch_sizes_do_not_change_the_stream() -> None:
    whole = FraudSimulator(seed=2, drift_at=1500, drift="both").batch(5000)
    sim = FraudSimulator(seed=2, drift_at=1500, drift="both")
    parts = [*sim.batch(0), *sim.batch(700), *sim.batch(1), *sim.batch(3000), *sim.batch(1299)]
    assert parts == whole
    assert sim.emitted == 5000


def test_ids_unique_and_event_times_advance() -> None:
    start = datetime(2025, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    sim = FraudSimulator(seed=4, start=start, rate_per_s=250.0)
    records = sim.batch(3000)
    ids = [r["transaction_id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert ids[:2] == ["tx-4-0", "tx-4-1"]
    times = [datetime.fromisoformat(r["event_time"]) for r in records]
    assert all(r["event_time"].endswith("Z") for r in records)
    assert times[0] == start.astimezone(UTC)
    assert times[-1] - times[0] == timedelta(seconds=2999 / 250.0)
    assert all(b > a for a, b in itertools.pairwise(times))
    assert FraudSimulator(seed=5).batch(1)[0]["transaction_id"] not in ids


def test_drift_switches_on_at_drift_at() -> None:
    sim = FraudSimulator(seed=1, drift_at=1000, drift="covariate")
    plain = FraudSimulator(seed=1)
    assert not sim.drifting
    before = sim.batch(999)
    assert sim.emitted == 999 and not sim.drifting
    crossing = sim.batch(2)
    assert sim.emitted == 1001 and sim.drifting
    assert [*before, crossing[0]] == plain.batch(1000)
    assert crossing[1] != plain.batch(1)[0]
    assert not FraudSimulator(seed=1, drift_at=0, drift="none").drifting
    assert not FraudSimulator(seed=1, drift="both").drifting


def test_concept_drift_keeps_features_and_changes_labels() -> None:
    features = list(FEATURES)
    plain = FraudSimulator(seed=6).batch(20_000)
    concept = FraudSimulator(seed=6, drift_at=0, drift="concept").batch(20_000)
    assert [[r[f] for f in features] for r in plain] == [[r[f] for f in features] for r in concept]
    changed = sum(a["is_fraud"] != b["is_fraud"] for a, b in zip(plain, concept, strict=True))
    assert changed > 300


@pytest.mark.parametrize(("drift", "fraud_rate"), [(d, 0.02) for d in DRIFTS] + [("none", 0.1)])
def test_label_rate_matches_fraud_rate(drift: Drift, fraud_rate: float) -> None:
    n = 40_000
    sim = FraudSimulator(seed=9, drift_at=0, drift=drift, fraud_rate=fraud_rate)
    rate = sum(r["is_fraud"] for r in sim.batch(n)) / n
    assert abs(rate - fraud_rate) < 4 * math.sqrt(fraud_rate * (1 - fraud_rate) / n) + 0.001


def test_covariate_drift_is_detectable() -> None:
    n = 3000
    before = FraudSimulator(seed=10).batch(n)
    after = FraudSimulator(seed=11, drift_at=0, drift="covariate").batch(n)
    numeric = [f for f in FEATURES if isinstance(before[0][f], int | float)]
    numeric = [f for f in numeric if not isinstance(before[0][f], bool)]
    p_values = {
        f: stats.ks_2samp([r[f] for r in before], [r[f] for r in after]).pvalue for f in numeric
    }
    assert sum(p < 1e-3 for p in p_values.values()) >= 3, p_values
    mix_before = Counter(r["merchant_category"] for r in before)
    mix_after = Counter(r["merchant_category"] for r in after)
    table = np.array([[mix_before[c], mix_after[c]] for c in MERCHANT_CATEGORIES])
    assert stats.chi2_contingency(table).pvalue < 1e-3
    online_before = sum(not r["card_present"] for r in before) / n
    online_after = sum(not r["card_present"] for r in after) / n
    assert online_after > online_before + 0.1


def test_no_drift_means_no_detectable_shift() -> None:
    a = FraudSimulator(seed=12, drift_at=0, drift="none").batch(3000)
    b = FraudSimulator(seed=13).batch(3000)
    p = stats.ks_2samp([r["amount"] for r in a], [r["amount"] for r in b]).pvalue
    assert p > 1e-3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"drift": "sideways"},
        {"drift_at": -5},
        {"fraud_rate": 0.0},
        {"fraud_rate": 1.0},
        {"rate_per_s": 0.0},
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FraudSimulator(**kwargs)
    with pytest.raises(ValueError):
        FraudSimulator().batch(-1)


def test_drift_started_mid_stream_equals_drift_at_from_the_start() -> None:
    live = FraudSimulator(seed=5, drift="both")
    before = live.batch(700)  # mid-block: the block drawn so far must be redrawn
    assert live.start_drift() == 700 and live.drifting
    after = live.batch(900)
    planned = FraudSimulator(seed=5, drift="both", drift_at=700)
    assert before + after == planned.batch(1600)
    assert after != FraudSimulator(seed=5).batch(1600)[700:]
    with pytest.raises(ValueError):
        live.start_drift("sideways")  # type: ignore[arg-type]
