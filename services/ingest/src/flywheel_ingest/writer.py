"""The dataset writer: ``data.validated`` → Parquet segments → ``data.batch.committed``.

Crash safety (nothing lost, nothing duplicated):
1. records are buffered per (dataset, partition); the consumer may not commit an offset past
   the first buffered record (``barrier``), so a crash re-reads everything not yet sealed;
2. sealing writes the segment (named by partition and offset range, so a re-seal overwrites
   it), then the manifest listing it with the ids of the events inside — that manifest write
   is the commit point;
3. a re-read event whose id the manifest (or a buffer) already holds is skipped;
4. ``data.batch.committed`` carries a deterministic event id and is published after the
   manifest write; segments not yet announced are announced again at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from aiokafka import TopicPartition
from prometheus_client import Counter, Histogram
from pydantic import TypeAdapter

from flywheel_shared.datasets import Manifest, SegmentEntry, manifest_key, read_manifest
from flywheel_shared.events import (
    BatchCommitted,
    Event,
    JsonRecord,
    RecordsValidated,
    derived_id,
    utcnow,
)
from flywheel_shared.kafka.consumer import Delivery, Poison
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore
from flywheel_shared.validation import ContractValidator, describe

from .contracts import ContractSource
from .domain.checks import Baseline
from .domain.segments import build_table, content_hash, field_stats, time_range, to_parquet
from .erasure import Erasure, erase
from .handlers import Vouched
from .quarantine import QUARANTINED, RELEASED, Baselines, correlation, decide, quarantined_event
from .quarantine import release as release_segment

log = logging.getLogger(__name__)

SEGMENTS_SEALED = Counter(
    "flywheel_ingest_segments_sealed_total", "Parquet segments sealed", ["dataset"]
)
ROWS_WRITTEN = Counter(
    "flywheel_ingest_rows_written_total", "Rows written to segments", ["dataset"]
)
_MANIFEST_FIELDS = list(Manifest.model_fields)
_STR: TypeAdapter[str] = TypeAdapter(str)
SEAL_SECONDS = Histogram(
    "flywheel_ingest_seal_seconds", "Time to build, write and list one segment", ["dataset"]
)


@dataclass
class _Buffer:
    dataset: str
    tp: TopicPartition
    first_offset: int
    opened_at: float
    last_offset: int = -1
    rows: list[JsonRecord] = field(default_factory=list)
    row_event_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    correlation_id: str | None = None


class DatasetWriter:
    """Turns validated records into sealed, hashed, announced Parquet segments."""

    def __init__(
        self,
        store: ObjectStore,
        contracts: ContractSource,
        producer: EventProducer,
        *,
        max_rows: int = 10_000,
        max_age_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        vouched: Vouched | None = None,
        baselines: Baselines | None = None,
    ) -> None:
        """``vouched``: the events this process's ingest validated itself (not re-checked);
        ``baselines``: what new segments are checked against (None: no checks)."""
        self.store = store
        self.baselines = baselines
        self.vouched = vouched
        self.contracts = contracts
        self.producer = producer
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.clock = clock
        self._buffers: dict[tuple[str, TopicPartition], _Buffer] = {}
        self._manifests: dict[str, Manifest] = {}
        self._stored_ids: set[str] = set()
        self._validators: dict[str, tuple[DatasetContract, ContractValidator]] = {}
        self._lock = asyncio.Lock()
        self._entry_json: dict[str, tuple[SegmentEntry, bool, bytes]] = {}

    # -- manifests ------------------------------------------------------------------------

    def load_manifest(self, dataset: str) -> Manifest:
        """The dataset's manifest (read once, then kept in memory by this writer)."""
        manifest = self._manifests.get(dataset)
        if manifest is None:
            manifest = read_manifest(self.store, dataset)
            self._manifests[dataset] = manifest
            self._stored_ids |= manifest.event_ids()
        return manifest

    def _save_manifest(self, manifest: Manifest) -> None:
        self.store.put(manifest_key(manifest.dataset), self._manifest_json(manifest))

    def _manifest_json(self, manifest: Manifest) -> bytes:
        """``manifest.model_dump_json()``, byte for byte, without re-serialising every sealed
        segment on every seal (that made each seal cost more than the last): an entry's JSON
        is kept while it is the same object with the same ``announced`` flag, the only field
        the writer changes once an entry is listed."""
        if _MANIFEST_FIELDS != ["dataset", "segments"]:  # Manifest grew: no shortcut
            return manifest.model_dump_json().encode()
        cache, parts = self._entry_json, []
        for seg in manifest.segments:
            hit = cache.get(seg.segment_id)
            if hit is None or hit[0] is not seg or hit[1] != seg.announced:
                hit = cache[seg.segment_id] = (seg, seg.announced, seg.model_dump_json().encode())
            parts.append(hit[2])
        dataset = _STR.dump_json(manifest.dataset)
        return b'{"dataset":' + dataset + b',"segments":[' + b",".join(parts) + b"]}"

    async def start(self) -> None:
        """Load every known dataset's manifest and announce segments a crash left unannounced."""
        for name in self.contracts.names():
            await asyncio.to_thread(self.load_manifest, name)
            await self._announce_pending(name)

    # -- consumer hooks -------------------------------------------------------------------

    def seen(self, event_id: UUID) -> bool:
        """Durable idempotency: the event is already in a segment or in a buffer."""
        return str(event_id) in self._stored_ids

    def mark(self, event_id: UUID) -> None:
        """Nothing to do: ``handle`` records ids as it buffers them."""

    def _check(self, contract: DatasetContract, event: RecordsValidated) -> None:
        """Refuse records that break the contract after all (a producer other than ingest's
        validator): stored, they would corrupt the dataset or fail the segment's seal, which
        holds every record buffered with them. Events this process validated are not
        checked twice."""
        if self.vouched is not None and self.vouched.vouches(event, contract):
            return
        cached = self._validators.get(contract.name)
        if cached is None or cached[0] is not contract:
            cached = self._validators[contract.name] = (contract, ContractValidator(contract))
        rejections = cached[1].validate(event.records, keep_rejected=False).rejections
        if rejections:
            raise Poison(
                f"records break the contract of dataset '{contract.name}': {describe(rejections)}"
            )

    async def handle(self, event: Event, delivery: Delivery) -> None:
        """Buffer the records of a ``data.validated`` event; seal when the buffer is full."""
        if not isinstance(event, RecordsValidated):
            return
        contract = self.contracts.get(event.dataset)
        if contract is None:
            raise ValueError(f"no contract for dataset '{event.dataset}'")
        self._check(contract, event)
        async with self._lock:
            self.load_manifest(event.dataset)
            eid = str(event.event_id)
            if eid in self._stored_ids:
                return
            key = (event.dataset, delivery.tp)
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = _Buffer(
                    event.dataset, delivery.tp, delivery.offset, self.clock()
                )
            buf.rows.extend(event.records)
            buf.row_event_ids.extend([eid] * len(event.records))
            buf.event_ids.append(eid)
            buf.last_offset = delivery.offset
            buf.correlation_id = buf.correlation_id or str(event.correlation_id)
            self._stored_ids.add(eid)
            if len(buf.rows) >= self.max_rows:
                await self._seal(key)

    def barrier(self, tp: TopicPartition) -> int | None:
        """Lowest offset not yet durable on ``tp`` (None: all processed records are sealed)."""
        offsets = [b.first_offset for (_, btp), b in self._buffers.items() if btp == tp]
        return min(offsets) if offsets else None

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Seal what we hold for partitions we are about to lose."""
        async with self._lock:
            for key in [k for k in self._buffers if k[1] in revoked]:
                await self._seal(key)

    async def tick(self) -> None:
        """Seal buffers older than ``max_age_s``; retry announcements Kafka refused."""
        async with self._lock:
            for name in self.contracts.names():  # contracts can appear later (registry)
                if name not in self._manifests:
                    await asyncio.to_thread(self.load_manifest, name)
            for dataset in list(self._manifests):
                await self._announce_pending(dataset)
        now = self.clock()
        due = [k for k, b in self._buffers.items() if now - b.opened_at >= self.max_age_s]
        if due:
            async with self._lock:
                for key in due:
                    if key in self._buffers:
                        await self._seal(key)

    async def flush(self) -> None:
        """Seal every buffer (on shutdown)."""
        async with self._lock:
            for key in list(self._buffers):
                await self._seal(key)

    # -- sealing --------------------------------------------------------------------------

    async def _seal(self, key: tuple[str, TopicPartition]) -> None:
        buf = self._buffers[key]
        started = time.perf_counter()
        baseline = None
        if self.baselines is not None:
            baseline = await self.baselines.get(buf.dataset, self.load_manifest(buf.dataset))
        entry = await asyncio.to_thread(self._write_segment, buf, baseline)
        # The manifest now lists the segment: from here the rows are durable.
        del self._buffers[key]
        SEGMENTS_SEALED.labels(buf.dataset).inc()
        ROWS_WRITTEN.labels(buf.dataset).inc(entry.rows)
        SEAL_SECONDS.labels(buf.dataset).observe(time.perf_counter() - started)
        if entry.quarantine is not None:
            QUARANTINED.labels(buf.dataset).inc()
            log.warning(
                "segment quarantined",
                extra={
                    "dataset": buf.dataset,
                    "segment": entry.segment_id,
                    "findings": [f.detail for f in entry.quarantine.findings],
                },
            )
        log.info(
            "segment sealed",
            extra={"dataset": buf.dataset, "segment": entry.segment_id, "rows": entry.rows},
        )
        await self._announce_pending(buf.dataset)

    def _write_segment(self, buf: _Buffer, baseline: tuple[str, Baseline] | None) -> SegmentEntry:
        contract = self.contracts.get(buf.dataset)
        assert contract is not None
        manifest = self.load_manifest(buf.dataset)
        table = build_table(contract, buf.rows, buf.row_event_ids)
        data = to_parquet(table)
        segment_id = f"p{buf.tp.partition:03d}-{buf.first_offset:012d}-{buf.last_offset:012d}"
        seg_key = f"datasets/{buf.dataset}/segments/{segment_id}.parquet"
        uri = self.store.put(seg_key, data)
        lo, hi = time_range(contract, table)
        stats = field_stats(contract, table)
        now = utcnow()
        entry = SegmentEntry(
            segment_id=segment_id,
            key=seg_key,
            uri=uri,
            content_hash=content_hash(data),
            rows=table.num_rows,
            partition=buf.tp.partition,
            first_offset=buf.first_offset,
            last_offset=buf.last_offset,
            event_ids=buf.event_ids,
            created_at=now,
            min_event_time=lo,
            max_event_time=hi,
            stats=stats,
            correlation_id=buf.correlation_id,
            quarantine=decide(contract, table, stats, baseline, now),
        )
        manifest.segments.append(entry)
        self._save_manifest(manifest)
        return entry

    async def _announce_pending(self, dataset: str) -> None:
        manifest = self.load_manifest(dataset)
        pending = [(i, s) for i, s in enumerate(manifest.segments) if not s.announced]
        if not pending:
            return
        events: list[Event] = []
        for i, seg in pending:
            if seg.quarantined:  # why it is held back, not new data
                events.append(quarantined_event(dataset, seg))
                continue
            events.append(
                BatchCommitted(
                    event_id=derived_id("data.batch.committed", dataset, seg.segment_id),
                    correlation_id=correlation(seg),
                    dataset=dataset,
                    segment_id=seg.segment_id,
                    segment_uri=seg.uri,
                    row_count=seg.rows,
                    content_hash=seg.content_hash,
                    snapshot_id=manifest.snapshot_id(i + 1),
                    total_rows=sum(s.rows for s in manifest.segments[: i + 1]),
                    segment_count=i + 1,
                    min_event_time=seg.min_event_time,
                    max_event_time=seg.max_event_time,
                    stats=seg.stats,
                )
            )
        await self.producer.publish_all(events)
        for _, seg in pending:
            seg.announced = True
        await asyncio.to_thread(self._save_manifest, manifest)

    # -- governance -----------------------------------------------------------------------

    async def release(
        self, dataset: str, segment_id: str, actor: str, reason: str, token: str | None = None
    ) -> SegmentEntry:
        """Release a quarantined segment: into the next snapshots, announced as new data, with
        a ``data.audit`` record naming ``token`` (under the writer's lock: it owns the
        manifest)."""
        async with self._lock:
            manifest = self.load_manifest(dataset)
            entry, audit = release_segment(manifest, segment_id, actor, reason, utcnow())
            audit = audit.model_copy(update={"token": token})
            await asyncio.to_thread(self._save_manifest, manifest)
            RELEASED.labels(dataset).inc()
            log.info(
                "segment released",
                extra={"dataset": dataset, "segment": segment_id, "actor": actor},
            )
            await self.producer.publish(audit)
            await self._announce_pending(dataset)
        return entry

    async def erase(
        self, dataset: str, ids: list[str], actor: str, reason: str, token: str | None = None
    ) -> Erasure:
        """Remove records by id from every stored segment (buffered rows are sealed first),
        with an erasure log entry and a ``data.audit`` record naming ``token``."""
        contract = self.contracts.get(dataset)
        assert contract is not None
        async with self._lock:
            for key in [k for k in self._buffers if k[0] == dataset]:
                await self._seal(key)
            manifest = self.load_manifest(dataset)
            erasure, audit = await asyncio.to_thread(
                erase,
                self.store,
                contract,
                manifest,
                ids,
                actor=actor,
                reason=reason,
                now=utcnow(),
                save=self._save_manifest,
            )
            log.info(
                "records erased",
                extra={"dataset": dataset, "rows": erasure.rows, "segments": erasure.segments},
            )
            await self.producer.publish(audit.model_copy(update={"token": token}))
        return erasure
