"""Merged segment statistics equal the statistics of the segments' rows taken together."""

from __future__ import annotations

import math

import pyarrow as pa
from ingest_support import good

from flywheel_ingest.domain.segments import build_table, field_stats
from flywheel_shared.events import NumericStats
from flywheel_shared.snapshots import merge_stats
from flywheel_shared.spec import DatasetContract


def test_merged_field_stats_match_field_stats_of_all_rows(contract: DatasetContract) -> None:
    parts = [
        [good(i) for i in range(0, 7)],
        [good(i, count=None, fraud=True) for i in range(7, 10)],
        [good(i, kind="a", online=False) for i in range(10, 22)],
    ]
    tables = [build_table(contract, rows, [f"e{i}"] * len(rows)) for i, rows in enumerate(parts)]
    merged = merge_stats(field_stats(contract, t) for t in tables)
    whole = field_stats(contract, pa.concat_tables(tables))
    assert set(merged) == set(whole)
    for name, expected in whole.items():
        got = merged[name]
        if isinstance(expected, NumericStats):
            assert isinstance(got, NumericStats)
            assert (got.count, got.nulls, got.min, got.max) == (
                expected.count,
                expected.nulls,
                expected.min,
                expected.max,
            ), name
            for k in ("mean", "std"):
                assert math.isclose(getattr(got, k), getattr(expected, k), rel_tol=1e-9), (name, k)
        else:
            assert got == expected, name  # counts summed (dicts: order aside)
