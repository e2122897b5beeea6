"""Explicit dataset snapshots: which segments a training used, which it left out and why.

A snapshot names the segments of a dataset it includes, in manifest order; its id is
:func:`~flywheel_shared.datasets.snapshot_id` of their content hashes, so a snapshot that
excludes nothing has the id the manifest prefix always had (old lineage stays valid). The
record (``datasets/<name>/snapshots/<id>.json``) also lists the excluded segments with a
reason (``retention``: older than the contract's ``retention_s``; ``quarantine``: the batch
failed its checks and no one released it yet), the row count and the
segments' statistics merged into one summary per field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .datasets import Manifest, SegmentEntry, SnapshotNotFound, snapshot_id, snapshot_segments
from .events import CategoricalStats, NumericStats
from .registry import ModelInfo, ModelVersion
from .storage import ObjectStore

FieldStats = dict[str, NumericStats | CategoricalStats]
SNAPSHOT_ID = re.compile(r"^[0-9a-f]{64}$")
RETENTION = "retention"
QUARANTINE = "quarantine"


class Exclusion(BaseModel):
    """A segment a snapshot leaves out, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    segment_id: str
    reason: str = Field(description="'retention' or 'quarantine'")
    rows: int


class Snapshot(BaseModel):
    """One exact, reproducible state of a dataset that a training can use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="sha256 of the included segments' content hashes, in order")
    dataset: str
    segments: list[str] = Field(description="ids of the included segments, in manifest order")
    excluded: list[Exclusion] = Field(default_factory=list)
    rows: int = Field(description="rows in the included segments")
    stats: FieldStats = Field(default_factory=dict, description="merged per-field statistics")
    created_at: AwareDatetime
    contains_erased: bool = Field(
        False, description="held records erased since: versions trained on it cannot be re-run"
    )

    @property
    def excluded_rows(self) -> int:
        """Rows in the excluded segments."""
        return sum(e.rows for e in self.excluded)


def snapshot_key(dataset: str, snapshot: str) -> str:
    """Object key of a snapshot record."""
    if not SNAPSHOT_ID.match(snapshot):
        raise ValueError(f"invalid snapshot id {snapshot!r} (64 hex digits)")
    return f"datasets/{dataset}/snapshots/{snapshot}.json"


# -- statistics ---------------------------------------------------------------------------


def _numeric(parts: Sequence[NumericStats]) -> NumericStats:
    if len(parts) == 1:
        return parts[0]
    count, nulls = sum(p.count for p in parts), sum(p.nulls for p in parts)
    known = [p for p in parts if p.count and p.mean is not None]
    mins = [p.min for p in parts if p.min is not None]
    maxs = [p.max for p in parts if p.max is not None]
    mean = std = None
    n = sum(p.count for p in known)
    if n:
        mean = sum(p.count * (p.mean or 0.0) for p in known) / n
        if all(p.std is not None for p in known):
            # Pooled: E[x²] of every part, less the overall mean squared.
            ex2 = sum(p.count * ((p.std or 0.0) ** 2 + (p.mean or 0.0) ** 2) for p in known) / n
            std = math.sqrt(max(0.0, ex2 - mean**2))
    return NumericStats(
        count=count,
        nulls=nulls,
        min=min(mins) if mins else None,
        max=max(maxs) if maxs else None,
        mean=mean,
        std=std,
    )


def _categorical(parts: Sequence[CategoricalStats]) -> CategoricalStats:
    counts: dict[str, int] = {}
    for p in parts:
        for k, v in p.counts.items():
            counts[k] = counts.get(k, 0) + v
    return CategoricalStats(
        count=sum(p.count for p in parts),
        nulls=sum(p.nulls for p in parts),
        counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def merge_stats(per_segment: Iterable[FieldStats]) -> FieldStats:
    """Per-field statistics of several segments (oldest first) as if of one: counts and nulls
    add up, min/max of the extremes, count-weighted mean, pooled std, category counts summed.
    A field whose kind changed between segments (its contract changed) keeps the newest kind."""
    by_field: dict[str, list[NumericStats | CategoricalStats]] = {}
    for stats in per_segment:
        for name, s in stats.items():
            parts = by_field.setdefault(name, [])
            if parts and type(parts[-1]) is not type(s):
                parts.clear()
            parts.append(s)
    out: FieldStats = {}
    for name, parts in by_field.items():
        if isinstance(parts[0], NumericStats):
            out[name] = _numeric([p for p in parts if isinstance(p, NumericStats)])
        else:
            out[name] = _categorical([p for p in parts if isinstance(p, CategoricalStats)])
    return out


# -- building and resolving ---------------------------------------------------------------


def segment_time(seg: SegmentEntry) -> datetime:
    """How old a segment's data is: its newest record's event time (else its commit time)."""
    t = seg.max_event_time or seg.created_at
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def retention_cutoff(retention_s: float | None, now: datetime) -> datetime | None:
    """Segments whose newest record is older than this are out of new snapshots."""
    return None if retention_s is None else now - timedelta(seconds=retention_s)


def make_snapshot(
    dataset: str,
    segments: Sequence[SegmentEntry],
    excluded: Sequence[Exclusion] = (),
    *,
    now: datetime | None = None,
) -> Snapshot:
    """The snapshot record of exactly ``segments`` (in manifest order)."""
    return Snapshot(
        id=snapshot_id([s.content_hash for s in segments]),
        dataset=dataset,
        segments=[s.segment_id for s in segments],
        excluded=list(excluded),
        rows=sum(s.rows for s in segments),
        stats=merge_stats(s.stats for s in segments),
        created_at=now or datetime.now(UTC),
    )


def build_snapshot(
    manifest: Manifest, *, retention_s: float | None = None, now: datetime | None = None
) -> tuple[Snapshot, list[SegmentEntry]]:
    """A new snapshot of every segment now in the manifest, less those past retention and
    those in quarantine (failed their checks, not released)."""
    now = now or datetime.now(UTC)
    cutoff = retention_cutoff(retention_s, now)
    kept: list[SegmentEntry] = []
    excluded: list[Exclusion] = []
    for seg in manifest.segments:
        if cutoff is not None and segment_time(seg) < cutoff:
            excluded.append(Exclusion(segment_id=seg.segment_id, reason=RETENTION, rows=seg.rows))
        elif seg.quarantined:
            excluded.append(Exclusion(segment_id=seg.segment_id, reason=QUARANTINE, rows=seg.rows))
        else:
            kept.append(seg)
    return make_snapshot(manifest.dataset, kept, excluded, now=now), kept


def write_snapshot(store: ObjectStore, snapshot: Snapshot) -> str:
    """Store a snapshot record (once: an existing record of the same id is kept); its URI."""
    key = snapshot_key(snapshot.dataset, snapshot.id)
    if not store.exists(key):
        store.put(key, snapshot.model_dump_json(indent=1).encode())
    return store.uri(key)


def read_snapshot(store: ObjectStore, dataset: str, snapshot: str) -> Snapshot | None:
    """A stored snapshot record, if there is one."""
    key = snapshot_key(dataset, snapshot)
    if not store.exists(key):
        return None
    return Snapshot.model_validate_json(store.get(key))


def _from_record(manifest: Manifest, record: Snapshot) -> list[SegmentEntry]:
    by_id = {s.segment_id: s for s in manifest.segments}
    missing = [s for s in record.segments if s not in by_id]
    if missing:
        raise SnapshotNotFound(
            f"snapshot {record.id} of '{manifest.dataset}' names segments the manifest no "
            f"longer lists: {', '.join(missing[:3])}"
        )
    segments = [by_id[s] for s in record.segments]
    if snapshot_id([s.content_hash for s in segments]) != record.id:
        raise SnapshotNotFound(
            f"snapshot {record.id} of '{manifest.dataset}': its segments' hashes changed"
        )
    return segments


def resolve_snapshot(
    store: ObjectStore, manifest: Manifest, snapshot: str | None = None
) -> tuple[Snapshot, list[SegmentEntry]]:
    """Snapshot ``snapshot`` and its segments: a stored record, else a manifest prefix (every
    snapshot before explicit records existed); None: all segments, nothing excluded."""
    if snapshot is not None and SNAPSHOT_ID.match(snapshot):
        record = read_snapshot(store, manifest.dataset, snapshot)
        if record is not None:
            return record, _from_record(manifest, record)
    segments = snapshot_segments(manifest, snapshot)
    made = segments[-1].created_at if segments else None
    return make_snapshot(manifest.dataset, segments, now=made), segments


def resolve_segments(
    store: ObjectStore, manifest: Manifest, snapshot: str | None = None
) -> list[SegmentEntry]:
    """The segments of snapshot ``snapshot`` (see :func:`resolve_snapshot`)."""
    return resolve_snapshot(store, manifest, snapshot)[1]


# -- the baseline: what production was trained on ------------------------------------------


async def production_snapshot(
    dataset: str,
    models: Iterable[ModelInfo],
    version: Callable[[str, int], Awaitable[ModelVersion]],
) -> tuple[str, int, str] | None:
    """(model, version, snapshot id) of the production version of the first model (by name)
    trained on ``dataset``; None when no such model has a production version."""
    for info in sorted(models, key=lambda m: m.name):
        prod = info.aliases.get("production")
        if info.spec is None or info.spec.dataset.name != dataset or prod is None:
            continue
        mv = await version(info.name, prod.version)
        return info.name, prod.version, mv.lineage.snapshot_id
    return None
