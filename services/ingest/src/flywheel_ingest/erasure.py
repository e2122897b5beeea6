"""Record erasure: records removed from the dataset by id, for every future snapshot.

The segments holding them are rewritten without them (a new file, so a new content hash and
new snapshot ids) and the old files deleted; every stored snapshot record that named one of
those segments is marked ``contains_erased`` (its versions cannot be reproduced). The
dataset's erasure log (``datasets/<name>/erasures.json``) records each erasure with the ids
as keyed hashes only, never in clear; a ``data.audit`` event says who erased how many, and why.
Copies outside the dataset store (``data.validated`` on Kafka until its retention, model
artifacts trained before) are not touched.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from flywheel_shared.datasets import Manifest, SegmentEntry
from flywheel_shared.events import DataAudit, derived_id
from flywheel_shared.privacy import keyed_hash
from flywheel_shared.snapshots import Snapshot
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore

from .domain.segments import content_hash, field_stats, time_range, to_parquet


class Erasure(BaseModel):
    """One erasure request, as the erasure log keeps it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime
    actor: str
    reason: str
    id_hashes: list[str] = Field(description="keyed hashes of the ids asked for")
    rows: int = Field(description="rows removed")
    segments: list[str] = Field(description="segments rewritten")
    snapshots: list[str] = Field(description="snapshot records marked contains_erased")


class ErasureLog(BaseModel):
    """Every erasure of a dataset, oldest first."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    erasures: list[Erasure] = Field(default_factory=list)


def erasure_key(dataset: str) -> str:
    """Object key of a dataset's erasure log."""
    return f"datasets/{dataset}/erasures.json"


def read_log(store: ObjectStore, dataset: str) -> ErasureLog:
    """The dataset's erasure log (empty when nothing was erased)."""
    key = erasure_key(dataset)
    if not store.exists(key):
        return ErasureLog(dataset=dataset)
    return ErasureLog.model_validate_json(store.get(key))


def _rewrite(
    store: ObjectStore, contract: DatasetContract, seg: SegmentEntry, ids: pa.Array
) -> tuple[SegmentEntry, int] | None:
    """``seg`` without the rows whose id is in ``ids`` (a new file), and the rows removed;
    None when it holds none of them."""
    table = pq.read_table(io.BytesIO(store.get(seg.key)))
    hit = pc.is_in(pc.cast(table.column(contract.id_field), pa.string()), value_set=ids)
    removed = int(pc.sum(hit).as_py() or 0)
    if not removed:
        return None
    kept = table.filter(pc.invert(hit))
    data = to_parquet(kept)
    digest = content_hash(data)
    key = f"datasets/{contract.name}/segments/{seg.segment_id}-e{digest[:12]}.parquet"
    lo, hi = time_range(contract, kept) if kept.num_rows else (None, None)
    entry = seg.model_copy(
        update={
            "key": key,
            "uri": store.put(key, data),
            "content_hash": digest,
            "rows": kept.num_rows,
            "stats": field_stats(contract, kept),
            "min_event_time": lo,
            "max_event_time": hi,
        }
    )
    return entry, removed


def erase(
    store: ObjectStore,
    contract: DatasetContract,
    manifest: Manifest,
    ids: list[str],
    *,
    actor: str,
    reason: str,
    now: datetime,
    save: Callable[[Manifest], None],
) -> tuple[Erasure, DataAudit]:
    """Remove the records ``ids`` from ``manifest``'s segments; ``save(manifest)`` is called
    once the new files are written (the commit point), then old files are deleted and
    snapshot records marked. The erasure (logged) and its audit record."""
    wanted = pa.array(sorted(set(ids)), pa.string())
    old: list[str] = []
    changed: dict[str, int] = {}
    for i, seg in enumerate(manifest.segments):
        done = _rewrite(store, contract, seg, wanted)
        if done is not None:
            old.append(seg.key)
            manifest.segments[i], changed[seg.segment_id] = done
    if changed:
        save(manifest)
        for key in old:
            store.delete(key)
    marked = mark_snapshots(store, contract.name, set(changed))
    hashes = sorted({keyed_hash(i) for i in ids})
    erasure = Erasure(
        at=now,
        actor=actor,
        reason=reason,
        id_hashes=hashes,
        rows=sum(changed.values()),
        segments=sorted(changed),
        snapshots=marked,
    )
    log = read_log(store, contract.name)
    log.erasures.append(erasure)
    store.put(erasure_key(contract.name), log.model_dump_json(indent=1).encode())
    audit = DataAudit(
        event_id=derived_id("data.audit", "erase", contract.name, now.isoformat(), *hashes),
        dataset=contract.name,
        action="erase",
        target=",".join(sorted(changed)) or "-",
        count=erasure.rows,
        reason=reason,
        actor=actor,
    )
    return erasure, audit


def mark_snapshots(store: ObjectStore, dataset: str, segments: set[str]) -> list[str]:
    """Mark every stored snapshot record naming one of ``segments`` ``contains_erased``; the
    ids of those records."""
    marked = []
    for key in store.list(f"datasets/{dataset}/snapshots"):
        if not key.endswith(".json"):
            continue
        record = Snapshot.model_validate_json(store.get(key))
        if segments & set(record.segments):
            marked.append(record.id)
            if not record.contains_erased:
                flagged = record.model_copy(update={"contains_erased": True})
                store.put(key, flagged.model_dump_json(indent=1).encode())
    return sorted(marked)
