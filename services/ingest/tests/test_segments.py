from __future__ import annotations

import io

import pyarrow.parquet as pq
from ingest_support import good

from flywheel_ingest.domain.segments import (
    EVENT_ID_COLUMN,
    build_table,
    content_hash,
    field_stats,
    to_parquet,
)
from flywheel_shared.datasets import snapshot_id
from flywheel_shared.events import CategoricalStats, NumericStats
from flywheel_shared.spec import DatasetContract
from flywheel_shared.validation import ContractValidator


def _rows(contract: DatasetContract, n: int) -> list[dict[str, object]]:
    v = ContractValidator(contract)
    return v.validate([good(i) for i in range(n)]).valid


def test_parquet_roundtrip_keeps_types_and_event_ids(contract: DatasetContract) -> None:
    rows = _rows(contract, 10)
    data = to_parquet(build_table(contract, rows, ["e1"] * 10))
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == 10
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert table.column(EVENT_ID_COLUMN).to_pylist() == ["e1"] * 10
    assert table.column("amount").to_pylist() == [r["amount"] for r in rows]


def test_same_rows_same_hash(contract: DatasetContract) -> None:
    rows = _rows(contract, 5)
    a = content_hash(to_parquet(build_table(contract, rows, ["e"] * 5)))
    b = content_hash(to_parquet(build_table(contract, rows, ["e"] * 5)))
    c = content_hash(to_parquet(build_table(contract, rows[:4], ["e"] * 4)))
    assert a == b != c


def test_snapshot_id_depends_on_order() -> None:
    assert snapshot_id(["a", "b"]) != snapshot_id(["b", "a"])
    assert snapshot_id(["a", "b"]) == snapshot_id(["a", "b"])


def test_field_stats(contract: DatasetContract) -> None:
    rows = _rows(contract, 4)  # amounts 10.5 .. 13.5, fraud all null
    stats = field_stats(contract, build_table(contract, rows, ["e"] * 4))
    amount = stats["amount"]
    assert isinstance(amount, NumericStats)
    assert (amount.count, amount.min, amount.max, amount.mean) == (4, 10.5, 13.5, 12.0)
    kind = stats["kind"]
    assert isinstance(kind, CategoricalStats) and kind.counts == {"a": 2, "b": 2}
    fraud = stats["fraud"]
    assert fraud.nulls == 4 and fraud.count == 0
    online = stats["online"]
    assert isinstance(online, CategoricalStats) and online.counts == {"false": 2, "true": 2}


def test_field_stats_of_personal_fields_are_counts_only(contract: DatasetContract) -> None:
    fields = dict(contract.fields)
    for name in ("amount", "kind"):
        fields[name] = fields[name].model_copy(update={"personal": True})
    personal = contract.model_copy(update={"fields": fields})
    rows = _rows(contract, 4)
    stats = field_stats(personal, build_table(personal, rows, ["e"] * 4))
    assert stats["amount"] == NumericStats(count=4, nulls=0)
    assert stats["kind"] == CategoricalStats(count=4, nulls=0)
    assert stats["online"].counts == {"false": 2, "true": 2}  # type: ignore[union-attr]
