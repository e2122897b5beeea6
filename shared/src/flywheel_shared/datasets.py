"""Datasets as ingest stores them, read by everyone else.

A dataset is an append-only list of Parquet segments listed in its manifest
(``datasets/<name>/manifest.json`` in the object store); a snapshot is a selection of that
list, named by the hash of its ordered segment hashes: a prefix here, and an explicit record
(segments left out, e.g. for retention) in :mod:`.snapshots`. Ingest writes manifests; the
trainer and ``reproduce`` read snapshots back.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .events import CategoricalStats, NumericStats
from .integrity import check_sha256, sha256_hex
from .storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd

EVENT_ID_COLUMN = "_flywheel_event_id"


def snapshot_id(segment_hashes: Sequence[str]) -> str:
    """Hash of the ordered segment hashes: names one exact state of a dataset."""
    return sha256_hex("\n".join(segment_hashes).encode())


def manifest_key(dataset: str) -> str:
    """Object key of a dataset's manifest."""
    return f"datasets/{dataset}/manifest.json"


class QuarantineFinding(BaseModel):
    """One check a quarantined batch failed (see ``flywheel_ingest.domain.checks``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check: str = Field(description="null_rate, range, categories, volume or duplicate_ids")
    field: str | None = None
    observed: float
    limit: float
    detail: str


class Quarantine(BaseModel):
    """Why a segment is held out of training snapshots, and who released it (if anyone)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    findings: list[QuarantineFinding]
    at: AwareDatetime
    baseline: str | None = Field(None, description="snapshot id the batch was compared with")
    released_at: AwareDatetime | None = None
    released_by: str | None = None
    release_reason: str | None = None


class SegmentEntry(BaseModel):
    """One sealed Parquet segment."""

    model_config = ConfigDict(extra="forbid")

    segment_id: str
    key: str
    uri: str
    content_hash: str
    rows: int
    partition: int
    first_offset: int
    last_offset: int
    event_ids: list[str] = Field(description="source events whose rows are in this segment")
    created_at: AwareDatetime
    min_event_time: datetime | None = None
    max_event_time: datetime | None = None
    stats: dict[str, NumericStats | CategoricalStats] = Field(default_factory=dict)
    correlation_id: str | None = None
    announced: bool = Field(False, description="data.batch.committed was acknowledged")
    quarantine: Quarantine | None = Field(
        None, description="the batch failed its checks (kept, out of snapshots until released)"
    )

    @property
    def quarantined(self) -> bool:
        """Held out of training snapshots: failed its checks and not released."""
        return self.quarantine is not None and self.quarantine.released_at is None


class Manifest(BaseModel):
    """All segments of one dataset, in commit order."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    segments: list[SegmentEntry] = Field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Rows in the dataset."""
        return sum(s.rows for s in self.segments)

    def snapshot_id(self, upto: int | None = None) -> str:
        """Snapshot id of the first ``upto`` segments (default: all)."""
        segs = self.segments if upto is None else self.segments[:upto]
        return snapshot_id([s.content_hash for s in segs])

    def event_ids(self) -> set[str]:
        """Every source event already stored."""
        return {e for s in self.segments for e in s.event_ids}


class SnapshotNotFound(LookupError):
    """No prefix of the manifest has the requested snapshot id."""


def read_manifest(store: ObjectStore, dataset: str) -> Manifest:
    """The dataset's manifest (empty if nothing was stored yet)."""
    key = manifest_key(dataset)
    if not store.exists(key):
        return Manifest(dataset=dataset)
    return Manifest.model_validate_json(store.get(key))


def snapshot_segments(manifest: Manifest, snapshot: str | None = None) -> list[SegmentEntry]:
    """The segments of snapshot ``snapshot`` (default: the latest, i.e. all segments)."""
    if snapshot is None:
        return list(manifest.segments)
    hashes: list[str] = []
    for i, seg in enumerate(manifest.segments):
        hashes.append(seg.content_hash)
        if snapshot_id(hashes) == snapshot:
            return manifest.segments[: i + 1]
    raise SnapshotNotFound(f"dataset '{manifest.dataset}' has no snapshot {snapshot}")


def _segment_bytes(store: ObjectStore, seg: SegmentEntry) -> bytes:
    """A segment's bytes; ValueError when they no longer hash to its content hash."""
    data = store.get(seg.key)
    check_sha256(
        data,
        seg.content_hash,
        lambda actual: ValueError(
            f"segment {seg.segment_id} is corrupt: sha256 {actual} != {seg.content_hash}"
        ),
    )
    return data


def read_frame(store: ObjectStore, segments: Sequence[SegmentEntry]) -> pd.DataFrame:
    """The rows of ``segments`` as one DataFrame, each segment's hash checked on read."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for seg in segments:
        tables.append(pq.read_table(io.BytesIO(_segment_bytes(store, seg))))
    if not tables:
        return pd.DataFrame()
    frame: pd.DataFrame = pa.concat_tables(tables).to_pandas()
    return frame.drop(columns=[EVENT_ID_COLUMN], errors="ignore")
