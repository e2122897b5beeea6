"""Batch quarantine in the dataset writer: held out of snapshots, announced why, released."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from ingest_support import FakeProducer, good

from flywheel_ingest.contracts import StaticContracts
from flywheel_ingest.domain.checks import Baseline
from flywheel_ingest.quarantine import QUARANTINED
from flywheel_ingest.writer import DatasetWriter
from flywheel_shared.datasets import Manifest, SegmentEntry, read_manifest
from flywheel_shared.events import BatchCommitted, BatchQuarantined, DataAudit, RecordsValidated
from flywheel_shared.http import ApiError
from flywheel_shared.kafka.consumer import Delivery
from flywheel_shared.snapshots import build_snapshot, merge_stats
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore
from flywheel_shared.validation import ContractValidator

TP = TopicPartition("flywheel.data.validated.v1", 0)


class FixedBaselines:
    """A baseline source answering one baseline (or None)."""

    def __init__(self, baseline: tuple[str, Baseline] | None) -> None:
        self.baseline = baseline

    async def get(self, dataset: str, manifest: Manifest) -> tuple[str, Baseline] | None:
        return self.baseline


def records(contract: DatasetContract, start: int, n: int, **over: Any) -> RecordsValidated:
    rows = [good(i, **over) for i in range(start, start + n)]
    return RecordsValidated(dataset="tx", records=ContractValidator(contract).validate(rows).valid)


async def seal(writer: DatasetWriter, ev: RecordsValidated, offset: int) -> None:
    await writer.handle(ev, Delivery(TP.topic, TP.partition, offset, b"tx"))
    await writer.flush()


async def baseline_of(tmp_path: Any, contract: DatasetContract) -> tuple[str, Baseline]:
    """A baseline from 2,000 normal rows (kind half a, half b; amounts 10 to 13)."""
    writer = DatasetWriter(
        ObjectStore(str(tmp_path / "base")), StaticContracts([contract]), FakeProducer()
    )
    for k in range(4):
        await seal(writer, records(contract, k * 500, 500, amount=10.0 + k), k)
    manifest = writer.load_manifest("tx")
    stats = merge_stats(s.stats for s in manifest.segments)
    return manifest.snapshot_id(), Baseline(rows=2000, segments=4, stats=stats)


def make(tmp_path: Any, contract: DatasetContract, baseline: Any) -> tuple[DatasetWriter, Any]:
    producer = FakeProducer()
    writer = DatasetWriter(
        ObjectStore(str(tmp_path / "store")),
        StaticContracts([contract]),
        producer,  # type: ignore[arg-type]
        baselines=FixedBaselines(baseline),  # type: ignore[arg-type]
    )
    return writer, producer


async def test_a_batch_unlike_the_baseline_is_kept_announced_why_and_left_out(
    tmp_path: Any, contract: DatasetContract
) -> None:
    base = await baseline_of(tmp_path, contract)
    writer, producer = make(tmp_path, contract, base)
    counted = QUARANTINED.labels("tx")._value.get()
    await seal(writer, records(contract, 0, 500, amount=11.0), 0)  # like the baseline
    await seal(writer, records(contract, 500, 500, amount=11.0, kind="a"), 1)  # all "a"
    [ok] = producer.of(BatchCommitted)
    [held] = producer.of(BatchQuarantined)
    assert isinstance(ok, BatchCommitted) and isinstance(held, BatchQuarantined)
    assert held.segment_id != ok.segment_id and held.row_count == 500
    assert [(f.check, f.field) for f in held.findings] == [("categories", "kind")]
    assert "kind: category shares moved by 0.50" in held.findings[0].detail
    assert held.baseline_snapshot_id == base[0]
    assert QUARANTINED.labels("tx")._value.get() == counted + 1

    manifest = read_manifest(writer.store, "tx")  # as other services read it
    seg = manifest.segments[1]
    assert seg.quarantined and seg.announced and seg.quarantine is not None
    assert seg.quarantine.findings[0].check == "categories"
    snap, kept = build_snapshot(manifest)
    assert [s.segment_id for s in kept] == [ok.segment_id]
    assert [(e.segment_id, e.reason, e.rows) for e in snap.excluded] == [
        (held.segment_id, "quarantine", 500)
    ]
    assert snap.rows == 500


async def test_release_announces_the_batch_audits_and_lets_it_in(
    tmp_path: Any, contract: DatasetContract
) -> None:
    writer, producer = make(tmp_path, contract, await baseline_of(tmp_path, contract))
    await seal(writer, records(contract, 0, 500, kind="a"), 0)
    [held] = producer.of(BatchQuarantined)
    assert isinstance(held, BatchQuarantined) and not producer.of(BatchCommitted)

    entry = await writer.release("tx", held.segment_id, "alice", "a real shift")
    assert entry.quarantine is not None and entry.quarantine.released_by == "alice"
    [audit] = producer.of(DataAudit)
    assert isinstance(audit, DataAudit)
    assert (audit.action, audit.target, audit.actor, audit.reason, audit.count) == (
        "release",
        held.segment_id,
        "alice",
        "a real shift",
        500,
    )
    [committed] = producer.of(BatchCommitted)
    assert isinstance(committed, BatchCommitted) and committed.segment_id == held.segment_id
    manifest = read_manifest(writer.store, "tx")
    assert not manifest.segments[0].quarantined and manifest.segments[0].announced
    snap, kept = build_snapshot(manifest)
    assert not snap.excluded and [s.segment_id for s in kept] == [held.segment_id]

    # Again: nothing changes; the first release's record again (same id: published once).
    await writer.release("tx", held.segment_id, "bob", "twice")
    audits = producer.of(DataAudit)
    assert len(audits) == 2 and audits[0].event_id == audits[1].event_id
    assert audits[0].model_dump(exclude={"occurred_at"}) == audits[1].model_dump(
        exclude={"occurred_at"}
    )
    assert len(producer.of(BatchCommitted)) == 1


async def test_release_refuses_unknown_and_unquarantined_segments(
    tmp_path: Any, contract: DatasetContract
) -> None:
    writer, producer = make(tmp_path, contract, await baseline_of(tmp_path, contract))
    await seal(writer, records(contract, 0, 500, amount=11.0), 0)
    [ok] = producer.of(BatchCommitted)
    assert isinstance(ok, BatchCommitted)
    with pytest.raises(ApiError) as unknown:
        await writer.release("tx", "p000-nope", "alice", "why")
    assert unknown.value.status == 404
    with pytest.raises(ApiError) as fine:
        await writer.release("tx", ok.segment_id, "alice", "why")
    assert fine.value.status == 409 and fine.value.code == "not_quarantined"
    assert not producer.of(DataAudit)


async def test_repeated_ids_are_checked_against_a_baseline_and_nothing_without(
    tmp_path: Any, contract: DatasetContract
) -> None:
    rows = [good(i % 250, amount=11.0) for i in range(500)]  # every id twice
    ev = RecordsValidated(dataset="tx", records=ContractValidator(contract).validate(rows).valid)
    writer, producer = make(tmp_path / "a", contract, await baseline_of(tmp_path, contract))
    await seal(writer, ev, 0)
    [held] = producer.of(BatchQuarantined)
    assert isinstance(held, BatchQuarantined)
    assert [f.check for f in held.findings] == ["duplicate_ids"]
    assert held.findings[0].observed == 250
    # No production model yet (no baseline): nothing to compare with, nothing held back.
    writer, producer = make(tmp_path / "b", contract, None)
    await seal(writer, records(contract, 0, 500, kind="a"), 0)
    await seal(writer, ev, 1)
    assert len(producer.of(BatchCommitted)) == 2 and not producer.of(BatchQuarantined)
    # A baseline under min_baseline_rows: the same.
    small = ("0" * 64, Baseline(rows=999, segments=1, stats={}))
    writer, producer = make(tmp_path / "c", contract, small)
    await seal(writer, ev, 0)
    assert len(producer.of(BatchCommitted)) == 1


async def test_a_quarantine_a_crash_left_unannounced_is_announced_as_such_at_start(
    tmp_path: Any, contract: DatasetContract
) -> None:
    writer, producer = make(tmp_path, contract, await baseline_of(tmp_path, contract))
    producer.fail = ConnectionError("kafka away")
    with pytest.raises(ConnectionError):
        await seal(writer, records(contract, 0, 500, kind="a"), 0)
    assert not read_manifest(writer.store, "tx").segments[0].announced
    again, producer2 = make(tmp_path, contract, None)
    await again.start()
    assert [type(e) for e in producer2.events] == [BatchQuarantined]


def test_manifests_without_quarantine_still_parse() -> None:
    old = {
        "segment_id": "p000-000000000000-000000000000",
        "key": "k",
        "uri": "file:///k",
        "content_hash": "0" * 64,
        "rows": 3,
        "partition": 0,
        "first_offset": 0,
        "last_offset": 0,
        "event_ids": ["e"],
        "created_at": "2026-01-01T00:00:00Z",
        "announced": True,
    }
    seg = SegmentEntry.model_validate(old)
    assert seg.quarantine is None and not seg.quarantined
    assert "quarantine" in seg.model_dump_json()
