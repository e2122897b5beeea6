"""Batch quarantine: a sealed segment whose statistics look unlike the production model's
training data (see :mod:`.domain.checks`) stays stored and listed, but out of training
snapshots until a person releases it.

- The baseline is the snapshot the dataset's production model was trained on, found through
  the registry cache (asked again every few seconds, so it follows alias moves) and kept per
  dataset while that snapshot id stays the same. No registry, no production model, or a
  baseline under ``checks.min_baseline_rows`` rows: no checks (repeated ids neither).
- A quarantined segment is announced with ``data.batch.quarantined`` (why) instead of
  ``data.batch.committed`` (new data); a release announces it with ``data.batch.committed``
  and publishes a ``data.audit`` record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

import pyarrow as pa
from prometheus_client import Counter

from flywheel_shared.datasets import (
    Manifest,
    Quarantine,
    QuarantineFinding,
    SegmentEntry,
    SnapshotNotFound,
)
from flywheel_shared.events import BatchFinding, BatchQuarantined, DataAudit, derived_id
from flywheel_shared.http import ApiError
from flywheel_shared.registry import RegistryError
from flywheel_shared.snapshots import (
    FieldStats,
    production_snapshot,
    read_snapshot,
    resolve_snapshot,
)
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore

from .contracts import ContractSource, RegistryContracts
from .domain.checks import Baseline, check_batch, duplicate_ids

log = logging.getLogger(__name__)

QUARANTINED = Counter(
    "flywheel_ingest_batches_quarantined_total",
    "Sealed segments held out of training snapshots: they failed their checks",
    ["dataset"],
)
RELEASED = Counter(
    "flywheel_ingest_batches_released_total",
    "Quarantined segments released by a person",
    ["dataset"],
)


class Baselines:
    """The baseline of each dataset: its production model's snapshot (None: no checks)."""

    def __init__(
        self,
        contracts: ContractSource,
        store: ObjectStore,
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``refresh_s``: how often the registry is asked again which version is production
        (between, the cached answer: a batch sealed just after a promotion may be checked
        against the previous production's snapshot)."""
        self.contracts = contracts
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self._asked: float | None = None
        self._cache: dict[str, tuple[str, Baseline]] = {}
        self._warned: set[str] = set()

    async def production(self, dataset: str) -> str | None:
        """Snapshot id the dataset's production model was trained on (None: none known)."""
        contracts = self.contracts
        if not isinstance(contracts, RegistryContracts):
            return None
        now = self.clock()
        fresh = self._asked is None or now - self._asked >= self.refresh_s
        if fresh:
            self._asked = now
        try:
            found = await production_snapshot(
                dataset, await contracts.cache.models(fresh=fresh), contracts.cache.version
            )
        except RegistryError as exc:
            if dataset not in self._warned:
                self._warned.add(dataset)
                log.warning("no baseline: registry unavailable", extra={"error": str(exc)})
            return None
        self._warned.discard(dataset)
        return None if found is None else found[2]

    async def get(self, dataset: str, manifest: Manifest) -> tuple[str, Baseline] | None:
        """(snapshot id, baseline) of ``dataset`` (``manifest``: the writer's copy)."""
        snap = await self.production(dataset)
        if snap is None:
            return None
        hit = self._cache.get(dataset)
        if hit is not None and hit[0] == snap:
            return hit
        try:
            # The stored record has the statistics (still there after an erasure rewrote
            # its segments); an older version's snapshot is a manifest prefix.
            record = await asyncio.to_thread(read_snapshot, self.store, dataset, snap)
            if record is None:
                record, _ = await asyncio.to_thread(resolve_snapshot, self.store, manifest, snap)
        except SnapshotNotFound as exc:
            if snap not in self._warned:  # once per snapshot, not at every seal
                self._warned.add(snap)
                log.warning("no baseline: production snapshot not found", extra={"error": str(exc)})
            return None
        hit = self._cache[dataset] = (
            snap,
            Baseline(rows=record.rows, segments=len(record.segments), stats=record.stats),
        )
        return hit


def decide(
    contract: DatasetContract,
    table: pa.Table,
    stats: FieldStats,
    baseline: tuple[str, Baseline] | None,
    now: datetime,
) -> Quarantine | None:
    """The quarantine of a batch (``table`` with statistics ``stats``), None if it passes.
    Without a baseline of ``checks.min_baseline_rows`` rows nothing is checked, repeated ids
    neither: before a production model there is nothing to protect, and a client's retry
    without an Idempotency-Key would hold back the first data."""
    if baseline is None or baseline[1].rows < contract.checks.min_baseline_rows:
        return None
    findings = check_batch(
        contract.checks,
        stats,
        table.num_rows,
        baseline[1],
        duplicates=duplicate_ids(table, contract.id_field),
        label_field=contract.label_field,
    )
    if not findings:
        return None
    return Quarantine(
        findings=[
            QuarantineFinding(
                check=f.check, field=f.field, observed=f.observed, limit=f.limit, detail=f.detail
            )
            for f in findings
        ],
        at=now,
        baseline=baseline[0],
    )


def correlation(seg: SegmentEntry) -> UUID:
    """The correlation id of a segment's announcements (its first event's)."""
    return UUID(seg.correlation_id) if seg.correlation_id else derived_id(seg.segment_id)


def quarantined_event(dataset: str, seg: SegmentEntry) -> BatchQuarantined:
    """The ``data.batch.quarantined`` announcement of a quarantined segment."""
    assert seg.quarantine is not None
    return BatchQuarantined(
        event_id=derived_id("data.batch.quarantined", dataset, seg.segment_id),
        correlation_id=correlation(seg),
        dataset=dataset,
        segment_id=seg.segment_id,
        segment_uri=seg.uri,
        row_count=seg.rows,
        content_hash=seg.content_hash,
        findings=[BatchFinding(**f.model_dump()) for f in seg.quarantine.findings],
        baseline_snapshot_id=seg.quarantine.baseline,
        stats=seg.stats,
    )


def release(
    manifest: Manifest, segment_id: str, actor: str, reason: str, now: datetime
) -> tuple[SegmentEntry, DataAudit]:
    """Mark a quarantined segment released (replacing its entry, to be announced again as new
    data) and the audit record saying who did it and why; 404/409 as :class:`ApiError`.
    Releasing a released segment changes nothing and gives its first release's record again
    (same event id: a retry after Kafka refused the audit publishes it once)."""
    i = next((i for i, s in enumerate(manifest.segments) if s.segment_id == segment_id), -1)
    if i < 0:
        raise ApiError(
            404, "unknown_segment", f"dataset '{manifest.dataset}' has no segment '{segment_id}'"
        )
    seg = manifest.segments[i]
    if seg.quarantine is None:
        raise ApiError(409, "not_quarantined", f"segment '{segment_id}' is not quarantined")
    q = seg.quarantine
    if q.released_at is None:
        released = {"released_at": now, "released_by": actor, "release_reason": reason}
        q = q.model_copy(update=released)
        seg = manifest.segments[i] = seg.model_copy(update={"quarantine": q, "announced": False})
    audit = DataAudit(
        event_id=derived_id("data.audit", "release", manifest.dataset, segment_id),
        correlation_id=correlation(seg),
        dataset=manifest.dataset,
        action="release",
        target=segment_id,
        count=seg.rows,
        reason=q.release_reason or reason,
        actor=q.released_by or actor,
    )
    return seg, audit
