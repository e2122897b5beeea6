"""Dataset segments: records → Parquet bytes, content hash, summary statistics, snapshots.

A dataset is an append-only list of Parquet segments listed in a manifest; a snapshot is the
ordered list of segment hashes, itself hashed. Pure functions; storage lives in the writer.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel_shared.datasets import EVENT_ID_COLUMN
from flywheel_shared.events import CategoricalStats, JsonRecord, NumericStats
from flywheel_shared.integrity import sha256_hex
from flywheel_shared.spec import DatasetContract, FieldType

_ARROW: dict[FieldType, pa.DataType] = {
    FieldType.INT: pa.int64(),
    FieldType.FLOAT: pa.float64(),
    FieldType.BOOL: pa.bool_(),
    FieldType.STRING: pa.string(),
    FieldType.CATEGORY: pa.string(),
    FieldType.DATETIME: pa.timestamp("us", tz="UTC"),
}


def arrow_schema(contract: DatasetContract) -> pa.Schema:
    """The Parquet schema of a dataset: its contract's fields plus the source event id."""
    fields = [pa.field(n, _ARROW[s.type], nullable=True) for n, s in contract.fields.items()]
    fields.append(pa.field(EVENT_ID_COLUMN, pa.string(), nullable=False))
    return pa.schema(fields)


def build_table(
    contract: DatasetContract, rows: Sequence[JsonRecord], event_ids: Sequence[str]
) -> pa.Table:
    """Columnar table of validated rows; ``event_ids[i]`` is the event row ``i`` came in."""
    columns: dict[str, object] = {}
    for name, spec in contract.fields.items():
        values: list[object] = [r.get(name) for r in rows]
        if spec.type is FieldType.DATETIME:
            columns[name] = _timestamps(values)
        else:
            columns[name] = values
    columns[EVENT_ID_COLUMN] = list(event_ids)
    return pa.Table.from_pydict(columns, schema=arrow_schema(contract))


# RFC 3339 in UTC with at most microseconds: Arrow's parser and datetime.fromisoformat read
# these identically.
_UTC_RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|\+00:00)$"
_TS = pa.timestamp("us", tz="UTC")


def _timestamps(values: list[object]) -> pa.Array:
    """A datetime column: validated records hold UTC timestamps as strings, which Arrow parses
    in C (pyarrow converts aware ``datetime`` objects one Python call at a time); anything
    else (None, another form) goes through ``datetime.fromisoformat`` as always."""
    if None not in values:
        try:
            strings = pa.array(values, type=pa.string())
            if pc.all(pc.match_substring_regex(strings, _UTC_RFC3339)).as_py():
                return strings.cast(_TS)
        except (pa.ArrowException, TypeError, ValueError):
            pass
    return pa.array(
        [datetime.fromisoformat(v) if isinstance(v, str) else v for v in values], type=_TS
    )


def to_parquet(table: pa.Table) -> bytes:
    """Serialise deterministically (same table → same bytes → same hash)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True, store_schema=True)
    return sink.getvalue()


def content_hash(data: bytes) -> str:
    """sha256 of a segment's bytes."""
    return sha256_hex(data)


def _f(x: object) -> float | None:
    if x is None:
        return None
    v = float(x)  # type: ignore[arg-type]
    return v if math.isfinite(v) else None


def field_stats(
    contract: DatasetContract, table: pa.Table
) -> dict[str, NumericStats | CategoricalStats]:
    """Per-field summary: count, nulls, min/max/mean/std for numbers, counts for categories
    (a personal field gets its count and nulls only: the summary is published)."""
    out: dict[str, NumericStats | CategoricalStats] = {}
    for name, spec in contract.fields.items():
        col = table.column(name)
        nulls = col.null_count
        count = len(col) - nulls
        if spec.personal:
            numeric = spec.type in (FieldType.INT, FieldType.FLOAT)
            out[name] = (NumericStats if numeric else CategoricalStats)(count=count, nulls=nulls)
        elif spec.type in (FieldType.INT, FieldType.FLOAT):
            if count:
                mm = pc.min_max(col)
                out[name] = NumericStats(
                    count=count,
                    nulls=nulls,
                    min=_f(mm["min"].as_py()),
                    max=_f(mm["max"].as_py()),
                    mean=_f(pc.mean(col).as_py()),
                    std=_f(pc.stddev(col, ddof=0).as_py()),
                )
            else:
                out[name] = NumericStats(count=0, nulls=nulls)
        elif spec.type in (FieldType.CATEGORY, FieldType.BOOL):
            vc = pc.value_counts(col.drop_null())
            counts = {
                str(item["values"]).lower()
                if spec.type is FieldType.BOOL
                else str(item["values"]): int(item["counts"])
                for item in vc.to_pylist()
            }
            out[name] = CategoricalStats(count=count, nulls=nulls, counts=counts)
        elif spec.type is FieldType.STRING:
            out[name] = CategoricalStats(count=count, nulls=nulls)
    return out


def time_range(
    contract: DatasetContract, table: pa.Table
) -> tuple[datetime | None, datetime | None]:
    """Earliest and latest event time in a table."""
    mm = pc.min_max(table.column(contract.time_field))
    return mm["min"].as_py(), mm["max"].as_py()
