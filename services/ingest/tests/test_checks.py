"""Batch checks against a baseline snapshot's statistics."""

from __future__ import annotations

import pytest
from ingest_support import good
from pydantic import ValidationError

from flywheel_ingest.domain.checks import Baseline, check_batch, duplicate_ids, total_variation
from flywheel_ingest.domain.segments import build_table, field_stats
from flywheel_shared.events import CategoricalStats, NumericStats
from flywheel_shared.spec import BatchChecks, DatasetContract

POLICY = BatchChecks()


def num(count: int, lo: float, hi: float, nulls: int = 0) -> NumericStats:
    return NumericStats(count=count, nulls=nulls, min=lo, max=hi, mean=(lo + hi) / 2, std=1.0)


def cat(nulls: int = 0, **counts: int) -> CategoricalStats:
    return CategoricalStats(count=sum(counts.values()), nulls=nulls, counts=counts)


BASE = Baseline(
    rows=10_000,
    segments=10,
    stats={"amount": num(10_000, 0, 100), "kind": cat(a=7000, b=3000), "note": cat()},
)


def checks(
    batch: dict[str, NumericStats | CategoricalStats],
    rows: int = 1000,
    *,
    policy: BatchChecks = POLICY,
    baseline: Baseline | None = BASE,
    duplicates: int = 0,
) -> set[tuple[str, str | None]]:
    found = check_batch(policy, batch, rows, baseline, duplicates=duplicates)
    return {(f.check, f.field) for f in found}


def test_the_defaults_are_the_documented_thresholds() -> None:
    assert (POLICY.null_rate_jump, POLICY.range_excess, POLICY.category_tv) == (0.2, 1.0, 0.3)
    assert POLICY.volume_ratio == (0.05, 20.0)
    assert (POLICY.max_duplicate_ids, POLICY.min_baseline_rows) == (0, 1000)
    with pytest.raises(ValidationError, match="low < high"):
        BatchChecks(volume_ratio=(5, 1))


def test_a_batch_like_the_baseline_passes() -> None:
    assert checks({"amount": num(990, 1, 99, nulls=10), "kind": cat(a=690, b=310)}) == set()


def test_each_check_fires_past_its_threshold_and_not_before() -> None:
    # Null rate: +0.19 passes, +0.3 fails.
    assert checks({"amount": num(810, 1, 99, nulls=190)}) == set()
    assert checks({"amount": num(700, 1, 99, nulls=300)}) == {("null_rate", "amount")}
    # Range: up to one baseline width (100) beyond [0, 100] passes; 201 fails, either side.
    assert checks({"amount": num(1000, -100, 200)}) == set()
    assert checks({"amount": num(1000, 0, 201)}) == {("range", "amount")}
    assert checks({"amount": num(1000, -150, 50)}) == {("range", "amount")}
    # Category shares: a 70/30 → 45/55 move is 0.25 (passes), → 30/70 is 0.4 (fails).
    assert checks({"kind": cat(a=450, b=550)}) == set()
    assert checks({"kind": cat(a=300, b=700)}) == {("categories", "kind")}
    assert checks({"kind": cat(c=1000)}) == {("categories", "kind")}  # a category never seen
    # Volume: 1,000 rows per segment in the baseline; 50 rows or fewer, 20,000 or more fail.
    assert checks({}, rows=51) == set() and checks({}, rows=19_999) == set()
    assert checks({}, rows=50) == {("volume", None)}
    assert checks({}, rows=20_000) == {("volume", None)}


def test_duplicates_are_checked_without_a_baseline_and_the_rest_only_with_a_big_one() -> None:
    wild = {"amount": num(10, 1e6, 2e6, nulls=990), "kind": cat(c=10)}
    small = Baseline(rows=999, segments=1, stats=BASE.stats)
    assert checks(wild, baseline=small) == set()
    assert checks(wild, baseline=None) == set()
    assert checks(wild, baseline=None, duplicates=1) == {("duplicate_ids", None)}
    assert checks(wild, rows=10) == {
        ("null_rate", "amount"),
        ("range", "amount"),
        ("categories", "kind"),
        ("volume", None),
    }
    lenient = BatchChecks(max_duplicate_ids=5, min_baseline_rows=0)
    assert checks({}, rows=1000, duplicates=5, policy=lenient, baseline=small) == set()


def test_fields_new_or_changed_in_kind_are_not_compared() -> None:
    assert checks({"new_field": num(1000, 1e9, 1e9), "kind": num(1000, 5, 5)}) == set()


def test_findings_say_what_and_how_much() -> None:
    [f] = check_batch(POLICY, {"amount": num(1000, 0, 400)}, 1000, BASE)
    assert (f.check, f.field, f.observed, f.limit) == ("range", "amount", 3.0, 1.0)
    assert "3.00 baseline widths beyond [0, 100]" in f.detail
    assert total_variation({"a": 1}, {"a": 5}) == 0.0
    assert total_variation({"a": 1}, {"b": 1}) == 1.0
    assert total_variation({}, {"b": 1}) == 0.0


def test_duplicate_ids_and_stats_from_a_real_batch(contract: DatasetContract) -> None:
    rows = [good(i) for i in range(20)] + [good(3), good(4), good(4)]
    table = build_table(contract, rows, ["e"] * len(rows))
    assert duplicate_ids(table, contract.id_field) == 3
    baseline = Baseline(rows=2000, segments=2, stats=field_stats(contract, table))
    same = check_batch(contract.checks, field_stats(contract, table), 1000, baseline)
    assert same == []


def test_label_rate_moves_are_measured_in_standard_errors() -> None:
    base = Baseline(rows=10_000, segments=10, stats={"fraud": cat(true=500, false=9500)})

    def label(true: int, false: int, nulls: int = 0) -> set[tuple[str, str | None]]:
        batch: dict[str, NumericStats | CategoricalStats] = {
            "fraud": cat(nulls=nulls, true=true, false=false)
        }
        found = check_batch(POLICY, batch, 1000, base, label_field="fraud")
        return {(f.check, f.field) for f in found if f.check == "label_rate"}

    # 1,000 labels: one standard error of a 5% share is 0.69 points; 6 of them is 4.1 points.
    assert label(90, 910) == set()  # 9%: 5.8 standard errors
    assert label(95, 905) == {("label_rate", "fraud")}  # 9.5%: 6.5
    assert label(5, 995) == {("label_rate", "fraud")}  # 0.5%: 6.5 the other way
    assert label(0, 0, nulls=1000) == set()  # unlabelled rows say nothing about the rate
    assert label(1, 8) == set()  # too few labels
    [finding] = [
        f
        for f in check_batch(
            POLICY, {"fraud": cat(true=200, false=800)}, 1000, base, label_field="fraud"
        )
        if f.check == "label_rate"
    ]
    assert "fraud: 'true' is 20.0% of the batch's labels vs 5.0% in the baseline" in finding.detail
    assert POLICY.label_rate_z == 6.0
