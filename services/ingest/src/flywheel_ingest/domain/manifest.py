"""The dataset manifest: the ordered list of sealed segments (the dataset's truth)."""

from __future__ import annotations

from datetime import datetime

from flywheel_shared.events import CategoricalStats, NumericStats
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .segments import snapshot_id


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
