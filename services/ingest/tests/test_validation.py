from __future__ import annotations

import math

from ingest_support import good

from flywheel_shared.spec import DatasetContract, UnknownFieldPolicy
from flywheel_shared.validation import ContractValidator, reason_code


def test_valid_record_passes_and_is_normalised(contract: DatasetContract) -> None:
    v = ContractValidator(contract)
    out, errors = v.check(good(1, ts="2026-01-01T02:00:00+02:00", count=3.0))
    assert errors == []
    assert out is not None
    assert out["ts"] == "2026-01-01T00:00:00+00:00"
    assert out["count"] == 3 and type(out["count"]) is int


def test_each_kind_of_error_is_named(contract: DatasetContract) -> None:
    v = ContractValidator(contract)
    cases = {
        "missing": {k: val for k, val in good().items() if k != "amount"},
        "range": good(amount=5000.0),
        "type": good(amount="12"),
        "category": good(kind="zzz"),
        "null": good(online=None),
        "length": good(id="x" * 30),
        "unknown_field": good(color="red"),
    }
    for code, record in cases.items():
        out, errors = v.check(record)
        assert out is None, code
        assert [reason_code(e) for e in errors] == [code], (code, errors)


def test_bool_is_not_a_number_and_nan_is_refused(contract: DatasetContract) -> None:
    v = ContractValidator(contract)
    assert v.check(good(amount=True))[0] is None
    assert v.check(good(amount=math.nan))[0] is None
    assert v.check(good(count=1.5))[0] is None


def test_naive_or_garbage_timestamps_are_refused(contract: DatasetContract) -> None:
    v = ContractValidator(contract)
    assert "time zone" in v.check(good(ts="2026-01-01T00:00:00"))[1][0].reason
    assert "RFC 3339" in v.check(good(ts="yesterday"))[1][0].reason


def test_optional_field_may_be_absent(contract: DatasetContract) -> None:
    rec = good()
    del rec["count"], rec["fraud"]
    out, errors = ContractValidator(contract).check(rec)
    assert errors == [] and out is not None and "count" not in out


def test_unknown_field_policies(contract: DatasetContract) -> None:
    drop = ContractValidator(
        contract.model_copy(update={"unknown_fields": UnknownFieldPolicy.DROP})
    )
    out, _ = drop.check(good(color="red"))
    assert out is not None and "color" not in out
    keep = ContractValidator(
        contract.model_copy(update={"unknown_fields": UnknownFieldPolicy.KEEP})
    )
    out, _ = keep.check(good(color="red"))
    assert out is not None and out["color"] == "red"


def test_validate_many_keeps_indexes(contract: DatasetContract) -> None:
    outcome = ContractValidator(contract).validate([good(0), "nope", good(2, kind="q"), good(3)])
    assert len(outcome.valid) == 2
    assert [r.index for r in outcome.rejections] == [1, 2]
    assert reason_code(outcome.rejections[0].errors[0]) == "not_object"
    assert outcome.rejections[1].record == good(2, kind="q")


def test_fast_path_agrees_with_the_full_path() -> None:
    """Whatever the generated fast path accepts, the full path accepts unchanged."""
    import random
    from pathlib import Path

    from flywheel_fraud.simulator import FraudSimulator
    from flywheel_shared.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[3] / "examples" / "fraud" / "flywheel.yaml")
    v = ContractValidator(spec.dataset)
    rng = random.Random(0)
    mutations: list[object] = [
        None,
        -1,
        1e9,
        math.inf,
        "x",
        True,
        3,
        3.0,
        "2026-01-01T00:00:00+02:00",
    ]
    accepted = rejected = 0
    for rec in FraudSimulator(seed=2).batch(400):
        for _ in range(3):
            r = dict(rec)
            field = rng.choice([*r, "extra"])
            r[field] = rng.choice(mutations)
            if v._fast(r):
                assert v.check(r) == (r, [])
                accepted += 1
            else:
                rejected += 1
        assert v._fast(rec) and v.check(rec) == (rec, [])
    assert accepted > 100 and rejected > 100


def test_contract_values_never_become_code() -> None:
    """The fast path is generated code: a hostile field name or extreme bounds must neither run
    nor break it, and it must agree with the full path."""
    hostile = "x') or __import__('os').system('exit 3') or ('"
    contract = DatasetContract.model_validate(
        {
            "name": "hostile",
            "id_field": "id",
            "time_field": "ts",
            "fields": {
                "id": {"type": "string", "max_length": 8},
                "ts": {"type": "datetime"},
                hostile: {"type": "float", "min": -1e308, "max": 1e308},
                "n": {"type": "int", "min": 0, "max": 10},
            },
        }
    )
    v = ContractValidator(contract)
    ok = {"id": "a", "ts": "2026-01-01T00:00:00Z", hostile: 1e300, "n": 10}
    out, errors = v.check(ok)
    assert errors == [] and out == ok
    assert [reason_code(e) for e in v.check({**ok, "n": 11})[1]] == ["range"]
    assert [reason_code(e) for e in v.check({**ok, "id": "x" * 9})[1]] == ["length"]
    assert [e.field for e in v.check({**ok, hostile: "1"})[1]] == [hostile]
