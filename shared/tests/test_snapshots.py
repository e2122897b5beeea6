"""Explicit snapshots: ids, retention, stored records, merged statistics."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from flywheel_shared.datasets import Manifest, SegmentEntry, SnapshotNotFound, snapshot_segments
from flywheel_shared.events import CategoricalStats, NumericStats
from flywheel_shared.registry import ModelInfo, ModelVersion
from flywheel_shared.snapshots import (
    build_snapshot,
    merge_stats,
    production_snapshot,
    read_snapshot,
    resolve_segments,
    resolve_snapshot,
    snapshot_key,
    write_snapshot,
)
from flywheel_shared.spec import DatasetContract, load_spec
from flywheel_shared.storage import ObjectStore

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = 86400.0
ROOT = Path(__file__).resolve().parents[2]


def seg(
    i: int, age_days: float, rows: int = 10, **stats: NumericStats | CategoricalStats
) -> SegmentEntry:
    newest = NOW - timedelta(days=age_days)
    return SegmentEntry(
        segment_id=f"p000-{i:012d}",
        key=f"datasets/tx/segments/{i}.parquet",
        uri=f"file:///s/{i}",
        content_hash=f"{i:064x}",
        rows=rows,
        partition=0,
        first_offset=i,
        last_offset=i,
        event_ids=[f"e{i}"],
        created_at=NOW,
        min_event_time=newest - timedelta(hours=1),
        max_event_time=newest,
        stats=dict(stats),
    )


def manifest(*ages: float) -> Manifest:
    return Manifest(dataset="tx", segments=[seg(i, a) for i, a in enumerate(ages)])


def test_a_snapshot_excluding_nothing_has_the_old_prefix_id() -> None:
    m = manifest(40, 20, 1)
    snap, segments = build_snapshot(m, now=NOW)
    assert snap.id == m.snapshot_id() and segments == m.segments and not snap.excluded
    assert snap.rows == 30 and snap.segments == [s.segment_id for s in m.segments]
    # A retention nothing is older than changes nothing either.
    assert build_snapshot(m, retention_s=60 * DAY, now=NOW)[0].id == m.snapshot_id()
    # A prefix's snapshot has the id the manifest (and data.batch.committed) gave it.
    assert build_snapshot(Manifest(dataset="tx", segments=m.segments[:2]), now=NOW)[0].id == (
        m.snapshot_id(2)
    )


def test_retention_leaves_old_segments_out_of_new_snapshots_only(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    m = manifest(40, 20, 1)
    old, _ = build_snapshot(m, retention_s=30 * DAY, now=NOW - timedelta(days=15))
    assert old.id == m.snapshot_id()  # fifteen days ago nothing was past 30 days
    write_snapshot(store, old)
    new, kept = build_snapshot(m, retention_s=30 * DAY, now=NOW)
    assert [s.segment_id for s in kept] == ["p000-000000000001", "p000-000000000002"]
    assert [(e.segment_id, e.reason, e.rows) for e in new.excluded] == [
        ("p000-000000000000", "retention", 10)
    ]
    assert new.rows == 20 and new.excluded_rows == 10 and new.id != m.snapshot_id()
    write_snapshot(store, new)
    assert read_snapshot(store, "tx", new.id) == new
    # The new snapshot is no prefix: only its record names it ...
    with pytest.raises(SnapshotNotFound):
        snapshot_segments(m, new.id)
    assert resolve_segments(store, m, new.id) == kept
    # ... and the earlier one still resolves to every segment.
    assert resolve_segments(store, m, old.id) == m.segments
    assert resolve_segments(store, m, m.snapshot_id(2)) == m.segments[:2]  # no record: a prefix
    assert resolve_segments(store, m) == m.segments
    # Writing again keeps the first record (its created_at).
    write_snapshot(store, new.model_copy(update={"created_at": NOW + timedelta(days=1)}))
    assert read_snapshot(store, "tx", new.id) == new


def test_segment_age_falls_back_to_commit_time() -> None:
    s = seg(0, 0).model_copy(
        update={"max_event_time": None, "created_at": NOW - timedelta(days=31)}
    )
    snap, kept = build_snapshot(Manifest(dataset="tx", segments=[s]), retention_s=30 * DAY, now=NOW)
    assert kept == [] and snap.rows == 0 and len(snap.excluded) == 1


def test_a_record_whose_segments_changed_does_not_resolve(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path))
    m = manifest(40, 1)
    snap, _ = build_snapshot(m, retention_s=30 * DAY, now=NOW)
    write_snapshot(store, snap)
    swapped = m.model_copy(
        update={
            "segments": [m.segments[0], m.segments[1].model_copy(update={"content_hash": "f" * 64})]
        }
    )
    with pytest.raises(SnapshotNotFound, match="hashes changed"):
        resolve_snapshot(store, swapped, snap.id)
    with pytest.raises(SnapshotNotFound, match="no longer lists"):
        resolve_snapshot(store, Manifest(dataset="tx", segments=m.segments[:1]), snap.id)
    with pytest.raises(SnapshotNotFound):
        resolve_snapshot(store, m, "0" * 64)
    with pytest.raises(ValueError, match="invalid snapshot id"):
        snapshot_key("tx", "../../etc")


def _num(xs: list[float], nulls: int = 0) -> NumericStats:
    return NumericStats(
        count=len(xs),
        nulls=nulls,
        min=min(xs),
        max=max(xs),
        mean=statistics.fmean(xs),
        std=statistics.pstdev(xs),
    )


def test_merge_stats_equals_the_stats_of_the_concatenated_data() -> None:
    a, b, c = [1.0, 2.0, 3.5], [10.0, -4.0], [7.25]
    merged = merge_stats(
        [
            {"x": _num(a, 1), "k": CategoricalStats(count=3, nulls=0, counts={"u": 2, "v": 1})},
            {"x": _num(b), "k": CategoricalStats(count=2, nulls=1, counts={"v": 2})},
            {"x": _num(c, 2), "k": CategoricalStats(count=1, nulls=0, counts={"w": 1})},
            {"x": NumericStats(count=0, nulls=3)},  # a segment with only nulls
        ]
    )
    x = merged["x"]
    assert isinstance(x, NumericStats)
    everything = a + b + c
    assert (x.count, x.nulls, x.min, x.max) == (6, 6, -4.0, 10.0)
    assert x.mean is not None and math.isclose(x.mean, statistics.fmean(everything))
    assert x.std is not None and math.isclose(x.std, statistics.pstdev(everything))
    assert merged["k"] == CategoricalStats(count=6, nulls=1, counts={"v": 3, "u": 2, "w": 1})
    assert merge_stats([]) == {}
    assert merge_stats([{"x": NumericStats(count=0, nulls=2)}]) == {
        "x": NumericStats(count=0, nulls=2)
    }


def test_a_field_whose_kind_changed_keeps_the_newest_kind() -> None:
    merged = merge_stats(
        [
            {"f": _num([1.0])},
            {"f": CategoricalStats(count=1, nulls=0, counts={"a": 1})},
            {"f": CategoricalStats(count=2, nulls=0, counts={"a": 1, "b": 1})},
        ]
    )
    assert merged == {"f": CategoricalStats(count=3, nulls=0, counts={"a": 2, "b": 1})}


def test_retention_reads_seconds_or_a_duration() -> None:
    base = {
        "name": "tx",
        "fields": {"ts": {"type": "datetime"}},
        "id_field": "ts",
        "time_field": "ts",
    }
    assert DatasetContract.model_validate(base).retention_s is None
    for given, seconds in (("30d", 30 * DAY), ("12h", 43200.0), ("2w", 14 * DAY), (90, 90.0)):
        assert DatasetContract.model_validate({**base, "retention_s": given}).retention_s == seconds
    for bad in ("3 years", "-1d", "0d", 0, -5):
        with pytest.raises(ValidationError, match="retention_s"):
            DatasetContract.model_validate({**base, "retention_s": bad})


async def test_the_baseline_is_the_production_versions_snapshot() -> None:
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
    at = NOW.isoformat()

    def info(name: str, *, prod: int | None, dataset_spec: bool = True) -> ModelInfo:
        aliases = {"production": {"alias": "production", "version": prod, "updated_at": at}}
        return ModelInfo.model_validate(
            {
                "name": name,
                "spec_sha256": "0",
                "aliases": aliases if prod else {},
                "spec": spec.model_copy(update={"name": name}) if dataset_spec else None,
            }
        )

    asked: list[tuple[str, int]] = []

    async def version(model: str, v: int) -> ModelVersion:
        asked.append((model, v))
        return ModelVersion.model_construct(lineage=type("L", (), {"snapshot_id": f"{model}{v}"})())

    models = [info("zeta", prod=2), info("alpha", prod=None), info("beta", prod=3)]
    assert await production_snapshot(spec.dataset.name, models, version) == ("beta", 3, "beta3")
    assert asked == [("beta", 3)]
    assert await production_snapshot("other", models, version) is None
    assert await production_snapshot(spec.dataset.name, [info("a", prod=None)], version) is None
