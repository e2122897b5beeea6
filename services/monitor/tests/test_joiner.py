"""Unit tests of the label join (no Kafka: the table is a dict)."""

from __future__ import annotations

from typing import Any

from flywheel_monitor.joiner import (
    Entry,
    expired,
    group_by_model,
    join_key,
    join_partition,
    on_label,
    on_prediction,
)


def pred(
    rid: str,
    pid: str,
    *,
    version: int = 1,
    route: str = "production",
    at: float = 10.0,
    model: str = "fraud",
) -> list[Any]:
    return ["transactions", rid, model, version, route, 0.8, at, pid]


def label(rid: str, value: Any = True, at: float = 20.0) -> list[Any]:
    return ["transactions", rid, value, at]


def roundtrip(entry: Entry) -> Entry:
    return Entry.from_bytes(entry.to_bytes())


def test_partition_is_stable_and_spreads() -> None:
    parts = {join_partition("transactions", f"tx-{i}", 6) for i in range(200)}
    assert parts == set(range(6))
    assert join_partition("transactions", "tx-1", 6) == join_partition("transactions", "tx-1", 6)
    assert join_key("a", "b") != join_key("ab", "")


def test_prediction_then_label_joins_once() -> None:
    entry, out = on_prediction(None, pred("tx-1", "p1"))
    assert out == []
    entry, out = on_label(roundtrip(entry), label("tx-1", True))
    assert out == [("fraud", (1, "production", 0.8, True, 10.0, "p1"))]
    # The label stays; the same prediction redelivered joins nothing more.
    entry, out = on_prediction(roundtrip(entry), pred("tx-1", "p1"))
    assert out == []
    # A later prediction of the same record (a shadow) joins at once.
    entry, out = on_prediction(roundtrip(entry), pred("tx-1", "p2", version=2, route="shadow"))
    assert out == [("fraud", (2, "shadow", 0.8, True, 10.0, "p2"))]


def test_label_then_prediction_joins() -> None:
    entry, out = on_label(None, label("tx-2", False))
    assert out == []
    entry, out = on_prediction(roundtrip(entry), pred("tx-2", "p1"))
    assert out == [("fraud", (1, "production", 0.8, False, 10.0, "p1"))]


def test_redelivered_prediction_waits_once_and_labels_parse() -> None:
    entry, _ = on_prediction(None, pred("tx-3", "p1"))
    entry, _ = on_prediction(entry, pred("tx-3", "p1"))
    assert len(entry.preds) == 1
    for raw, expected in ((1, True), (0, False), ("true", True), ("0", False)):
        _, out = on_label(on_prediction(None, pred("r", "p"))[0], label("r", raw))
        assert out[0][1][3] is expected
    # A label that is not a boolean joins nothing and changes nothing.
    entry2, out = on_label(entry, label("tx-3", "maybe"))
    assert out == [] and entry2.label is None and len(entry2.preds) == 1


def test_time_to_live_counts_from_the_latest_side() -> None:
    entry, _ = on_prediction(None, pred("tx-4", "p1", at=100.0))
    assert not expired(entry, 150.0, ttl_s=60.0)
    assert expired(entry, 161.0, ttl_s=60.0)


def test_group_by_model() -> None:
    pairs = [
        ("a", (1, "production", 0.1, True, 1.0, "x")),
        ("b", (1, "production", 0.2, False, 1.0, "y")),
        ("a", (2, "shadow", 0.3, True, 1.0, "z")),
    ]
    grouped = group_by_model(pairs)
    assert [len(grouped["a"]), len(grouped["b"])] == [2, 1]
