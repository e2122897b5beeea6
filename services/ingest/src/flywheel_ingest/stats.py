"""A dataset's statistics: the snapshot a training would use now beside a baseline (by default
the snapshot the production model of the dataset was trained on)."""

from __future__ import annotations

import asyncio
from collections import Counter

from pydantic import AwareDatetime, BaseModel, Field

from flywheel_shared.datasets import SnapshotNotFound, read_manifest
from flywheel_shared.http import ApiError
from flywheel_shared.registry import RegistryError
from flywheel_shared.snapshots import (
    SNAPSHOT_ID,
    FieldStats,
    Snapshot,
    build_snapshot,
    production_snapshot,
    resolve_snapshot,
)

from .contracts import RegistryContracts
from .runtime import Runtime


class SnapshotSummary(BaseModel):
    """A snapshot's size, exclusions and merged per-field statistics."""

    id: str
    rows: int
    segments: int
    excluded_segments: int
    excluded_rows: int
    excluded_reasons: dict[str, int] = Field(description="excluded segments per reason")
    created_at: AwareDatetime
    contains_erased: bool
    stats: FieldStats


class DatasetStats(BaseModel):
    """``GET /v1/datasets/{name}/stats``."""

    dataset: str
    current: SnapshotSummary = Field(description="the snapshot a training would use now")
    baseline: SnapshotSummary | None = None
    baseline_source: str | None = Field(
        None, description="'request', or the production version it comes from ('fraud v3')"
    )
    baseline_note: str | None = Field(None, description="why there is no baseline")


def summary(snap: Snapshot) -> SnapshotSummary:
    """A snapshot without its segment lists."""
    return SnapshotSummary(
        id=snap.id,
        rows=snap.rows,
        segments=len(snap.segments),
        excluded_segments=len(snap.excluded),
        excluded_rows=snap.excluded_rows,
        excluded_reasons=dict(Counter(e.reason for e in snap.excluded)),
        created_at=snap.created_at,
        contains_erased=snap.contains_erased,
        stats=snap.stats,
    )


async def _production(rt: Runtime, dataset: str) -> tuple[str | None, str]:
    """(snapshot id, where it comes from) of the dataset's production model, if ingest can ask."""
    contracts = rt.contracts
    if not isinstance(contracts, RegistryContracts):
        return None, "no registry configured: pass ?baseline=<snapshot id>"
    try:
        # Fresh: the writer's baseline lookups keep the cached list warm (and a little old).
        found = await production_snapshot(
            dataset, await contracts.cache.models(fresh=True), contracts.cache.version
        )
    except RegistryError as exc:
        return None, f"registry unavailable: {exc}"
    if found is None:
        return None, f"no model of dataset '{dataset}' has a production version"
    model, version, snapshot = found
    return snapshot, f"{model} v{version}"


async def dataset_stats(rt: Runtime, dataset: str, baseline: str | None) -> DatasetStats:
    """The current snapshot's statistics, and the baseline's (``baseline``: a snapshot id)."""
    if baseline is not None and not SNAPSHOT_ID.match(baseline):
        raise ApiError(400, "invalid_snapshot", "baseline must be a snapshot id (64 hex digits)")
    contract = rt.contracts.get(dataset)
    assert contract is not None
    manifest = await asyncio.to_thread(read_manifest, rt.store, dataset)
    current, _ = build_snapshot(manifest, retention_s=contract.retention_s)
    source: str | None = "request"
    note = None
    if baseline is None:
        baseline, found = await _production(rt, dataset)
        source, note = (found, None) if baseline else (None, found)
    base = None
    if baseline is not None:
        try:
            base, _ = await asyncio.to_thread(resolve_snapshot, rt.store, manifest, baseline)
        except SnapshotNotFound as exc:
            if source == "request":
                raise ApiError(404, "unknown_snapshot", str(exc)) from exc
            source, note = None, f"{source}: {exc}"
    return DatasetStats(
        dataset=dataset,
        current=summary(current),
        baseline=summary(base) if base is not None else None,
        baseline_source=source if base is not None else None,
        baseline_note=note,
    )
