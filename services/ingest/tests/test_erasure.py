"""Record erasure in the dataset writer: rewritten segments, marked snapshots, audited."""

from __future__ import annotations

import io
from typing import Any

import pyarrow.parquet as pq
from aiokafka import TopicPartition
from ingest_support import FakeProducer, good

from flywheel_ingest.contracts import StaticContracts
from flywheel_ingest.erasure import read_log
from flywheel_ingest.writer import DatasetWriter
from flywheel_shared.datasets import read_manifest
from flywheel_shared.events import DataAudit, RecordsValidated, encode_event
from flywheel_shared.kafka.consumer import Delivery
from flywheel_shared.privacy import keyed_hash
from flywheel_shared.snapshots import build_snapshot, read_snapshot, write_snapshot
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore
from flywheel_shared.validation import ContractValidator

TP = TopicPartition("flywheel.data.validated.v1", 0)


def ids_in(store: ObjectStore, key: str) -> list[str]:
    return list(pq.read_table(io.BytesIO(store.get(key))).column("id").to_pylist())


async def stored(tmp_path: Any, contract: DatasetContract, seal: bool = True) -> DatasetWriter:
    """A writer with two segments of 5 records (r0..r4, r5..r9), unsealed rows if not ``seal``."""
    writer = DatasetWriter(ObjectStore(str(tmp_path)), StaticContracts([contract]), FakeProducer())  # type: ignore[arg-type]
    for k in range(2):
        rows = ContractValidator(contract).validate([good(i) for i in range(5 * k, 5 * k + 5)])
        await writer.handle(
            RecordsValidated(dataset="tx", records=rows.valid), Delivery(TP.topic, 0, k, b"tx")
        )
        if seal:
            await writer.flush()
    return writer


async def test_erased_records_leave_every_future_snapshot_and_old_records_say_so(
    tmp_path: Any, contract: DatasetContract
) -> None:
    writer = await stored(tmp_path, contract)
    store = writer.store
    before = read_manifest(store, "tx")
    old_keys = [s.key for s in before.segments]
    snap, _ = build_snapshot(before)
    write_snapshot(store, snap)

    erasure = await writer.erase("tx", ["r1", "r7", "nobody"], "dpo", "request 42")
    assert (erasure.rows, erasure.segments, erasure.snapshots) == (
        2,
        [s.segment_id for s in before.segments],
        [snap.id],
    )
    after = read_manifest(store, "tx")
    assert [s.rows for s in after.segments] == [4, 4]
    assert ids_in(store, after.segments[0].key) == ["r0", "r2", "r3", "r4"]
    assert ids_in(store, after.segments[1].key) == ["r5", "r6", "r8", "r9"]
    assert not any(store.exists(k) for k in old_keys)  # the old files are gone
    assert after.segments[0].stats["amount"].count == 4  # type: ignore[union-attr]
    new, _ = build_snapshot(after)
    assert new.id != snap.id and new.rows == 8 and not new.contains_erased
    old = read_snapshot(store, "tx", snap.id)
    assert old is not None and old.contains_erased

    # Logged as keyed hashes, audited without the ids.
    [entry] = read_log(store, "tx").erasures
    assert entry.id_hashes == sorted(keyed_hash(i) for i in ("r1", "r7", "nobody"))
    assert b"r7" not in store.get("datasets/tx/erasures.json")
    [audit] = writer.producer.of(DataAudit)  # type: ignore[attr-defined]
    assert isinstance(audit, DataAudit)
    assert (audit.action, audit.count, audit.actor, audit.reason) == (
        "erase",
        2,
        "dpo",
        "request 42",
    )
    assert b'"r1"' not in encode_event(audit) and b'"r7"' not in encode_event(audit)


async def test_buffered_records_are_sealed_then_erased(
    tmp_path: Any, contract: DatasetContract
) -> None:
    writer = await stored(tmp_path, contract, seal=False)
    assert not read_manifest(writer.store, "tx").segments
    erasure = await writer.erase("tx", ["r3"], "dpo", "request 43")
    assert erasure.rows == 1
    manifest = read_manifest(writer.store, "tx")
    assert manifest.total_rows == 9
    assert "r3" not in [i for s in manifest.segments for i in ids_in(writer.store, s.key)]


async def test_erasing_nothing_found_is_still_audited(
    tmp_path: Any, contract: DatasetContract
) -> None:
    writer = await stored(tmp_path, contract)
    hashes = [s.content_hash for s in read_manifest(writer.store, "tx").segments]
    erasure = await writer.erase("tx", ["nobody"], "dpo", "request 44")
    assert (erasure.rows, erasure.segments, erasure.snapshots) == (0, [], [])
    assert [s.content_hash for s in read_manifest(writer.store, "tx").segments] == hashes
    [audit] = writer.producer.of(DataAudit)  # type: ignore[attr-defined]
    assert isinstance(audit, DataAudit) and audit.count == 0 and audit.target == "-"
