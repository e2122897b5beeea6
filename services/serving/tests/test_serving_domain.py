"""Unit tests of serving's plain-Python parts: routing, the OIP codec, outputs, batching."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from flywheel_serving.batching import AdaptiveBatcher
from flywheel_serving.domain.oip import ProtocolError, decode_request, output_tensors
from flywheel_serving.domain.outputs import rows_from_proba
from flywheel_serving.domain.routing import bucket, choose
from flywheel_shared.spec import FieldType

FEATURES = ("amount", "hour", "card_present", "merchant_category")
TYPES = {
    "amount": FieldType.FLOAT,
    "hour": FieldType.INT,
    "card_present": FieldType.BOOL,
    "merchant_category": FieldType.CATEGORY,
}


def test_bucket_is_stable_and_uniform() -> None:
    assert bucket("abc") == bucket("abc")
    assert bucket("7f1d4c6e") == pytest.approx(bucket("7f1d4c6e"))
    keys = [uuid.uuid4().hex for _ in range(20_000)]
    share = sum(choose(k, 0.2, has_canary=True) == "canary" for k in keys) / len(keys)
    assert 0.19 < share < 0.21
    assert all(choose(k, 0.2, has_canary=False) == "production" for k in keys[:100])
    # Raising the weight only moves keys to the canary.
    at10 = {k for k in keys if choose(k, 0.1, has_canary=True) == "canary"}
    at20 = {k for k in keys if choose(k, 0.2, has_canary=True) == "canary"}
    assert at10 <= at20


def test_oip_named_inputs_become_records_with_bools_coerced() -> None:
    req = decode_request(
        {
            "id": "r1",
            "inputs": [
                {"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.5, 2.0]},
                {"name": "hour", "shape": [2, 1], "datatype": "INT64", "data": [[3], [4]]},
                {"name": "card_present", "shape": [2], "datatype": "INT8", "data": [1, 0]},
                {
                    "name": "merchant_category",
                    "shape": [2],
                    "datatype": "BYTES",
                    "data": ["a", "b"],
                },
            ],
            "outputs": [{"name": "score"}],
        },
        FEATURES,
        TYPES,
    )
    assert req.id == "r1" and req.outputs == ["score"]
    assert req.records == [
        {"amount": 1.5, "hour": 3, "card_present": True, "merchant_category": "a"},
        {"amount": 2.0, "hour": 4, "card_present": False, "merchant_category": "b"},
    ]


def test_oip_one_2d_input_is_read_in_feature_order() -> None:
    req = decode_request(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [2, 4],
                    "datatype": "BYTES",
                    "data": [1.0, 2, True, "a", 3.0, 4, False, "b"],
                }
            ]
        },
        FEATURES,
        TYPES,
    )
    assert req.records[1] == {
        "amount": 3.0,
        "hour": 4,
        "card_present": False,
        "merchant_category": "b",
    }


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ([], "JSON object"),
        ({"inputs": []}, "non-empty"),
        (
            {"inputs": [{"name": "amount", "shape": [2], "datatype": "FP64", "data": [1]}]},
            "holds 2",
        ),
        (
            {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP99", "data": [1]}]},
            "datatype",
        ),
        ({"inputs": [{"name": "nope", "shape": [1], "datatype": "FP64", "data": [1]}]}, "'nope'"),
        (
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "4 columns",
        ),
        (
            {
                "inputs": [
                    {"name": "amount", "shape": [2], "datatype": "FP64", "data": [1, 2]},
                    {"name": "hour", "shape": [1], "datatype": "INT64", "data": [1]},
                ]
            },
            "rows",
        ),
    ],
)
def test_oip_malformed_requests_are_refused_with_a_reason(payload: Any, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle) as info:
        decode_request(payload, FEATURES, TYPES)
    assert info.value.status == 400


def test_outputs_of_a_binary_classifier_and_their_tensors() -> None:
    rows = rows_from_proba(np.array([[0.9, 0.1], [0.2, 0.8]]), [0, 1])
    assert rows == [{"label": 0, "score": 0.1}, {"label": 1, "score": 0.8}]
    tensors = output_tensors(rows, None)
    assert tensors[0] == {"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]}
    assert tensors[1]["datatype"] == "FP64" and tensors[1]["data"] == [0.1, 0.8]
    with pytest.raises(ProtocolError, match="unknown output"):
        output_tensors(rows, ["nope"])
    multi = rows_from_proba(np.array([[0.2, 0.5, 0.3]]), ["a", "b", "c"])
    assert multi == [{"label": "b", "probabilities": [0.2, 0.5, 0.3]}]
    assert output_tensors(multi, None)[1]["shape"] == [1, 3]


async def test_batcher_coalesces_concurrent_requests_while_the_model_is_busy() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def model(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        gate.wait(5)
        return [{"x": r["x"] * 2} for r in rows]

    with ThreadPoolExecutor(1) as pool:
        batcher = AdaptiveBatcher(model, max_batch_size=8, executor=pool, on_batch=sizes.append)
        first = asyncio.create_task(batcher.submit([{"x": 0}]))
        await asyncio.sleep(0.05)  # the first batch is running; these queue up
        rest = [asyncio.create_task(batcher.submit([{"x": i}, {"x": -i}])) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        gate.set()
        assert await first == [{"x": 0}]
        results = await asyncio.gather(*rest)
    assert results[2] == [{"x": 6}, {"x": -6}]
    assert sizes == [1, 8, 4]  # whole requests, at most max_batch_size records
    assert batcher.pending_rows == 0


async def test_batcher_fails_every_request_of_a_failed_batch_and_goes_on() -> None:
    calls = 0

    def model(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")
        return [{} for _ in rows]

    batcher = AdaptiveBatcher(model, max_batch_size=4, executor=None)
    with pytest.raises(ValueError, match="boom"):
        await batcher.submit([{}])
    assert await batcher.submit([{}, {}]) == [{}, {}]


async def test_batcher_runs_small_batches_on_the_loop_and_large_ones_on_the_thread() -> None:
    threads: list[tuple[int, int]] = []

    def model(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        threads.append((len(rows), threading.get_ident()))
        return [{} for _ in rows]

    with ThreadPoolExecutor(1) as pool:
        batcher = AdaptiveBatcher(model, max_batch_size=8, executor=pool, inline_rows=2)
        assert await batcher.submit([{}, {}]) == [{}, {}]
        assert await batcher.submit([{}] * 3) == [{}] * 3
    loop_thread = threading.get_ident()
    assert threads[0] == (2, loop_thread)  # inline: no hand-off, no GIL convoy
    assert threads[1][0] == 3 and threads[1][1] != loop_thread
