"""Triton's binary tensor data extension: the codec (round trips against tritonclient's own
encoder and decoder, malformed bodies) and the OIP route through the ASGI app (fakes)."""

from __future__ import annotations

import gzip
import json
import math
import struct
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from serving_support import fraud_spec, records, trained
from test_serving_plane import FakeRegistry, FakeRuntime, ListSink
from tritonclient.utils import np_to_triton_dtype

from flywheel_serving.api import create_app
from flywheel_serving.binary import (
    HEADER_LENGTH,
    BinaryError,
    binary_outputs,
    decode_request,
    decompress,
    encode_response,
    header_length,
)
from flywheel_serving.domain.oip import FIELD_DATATYPE
from flywheel_serving.models import ModelManager
from flywheel_serving.plane import DataPlane

NUMERIC: list[Any] = [np.bool_, np.uint8, np.uint16, np.uint32, np.uint64]
NUMERIC += [np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64]


def triton_body(*arrays: tuple[str, np.ndarray[Any, Any]], **kw: Any) -> tuple[bytes, int]:
    """What tritonclient sends with its default settings (binary inputs and outputs)."""
    inputs = []
    for name, arr in arrays:
        tensor = triton.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    body, length = triton.InferenceServerClient.generate_request_body(inputs, **kw)
    assert length is not None
    return body, length


def raw_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), len(head)


def strings(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def refused(body: bytes, length: int) -> str:
    with pytest.raises(BinaryError) as info:
        decode_request(body, length)
    assert info.value.status == 400
    return str(info.value)


# -- decoding -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(NUMERIC).flatmap(
        lambda dtype: hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
            elements={"allow_nan": False, "allow_infinity": False}
            if np.dtype(dtype).kind == "f"
            else None,
        )
    )
)
def test_numeric_tensors_from_tritonclient_decode_to_their_values(arr: np.ndarray) -> None:
    body, length = triton_body(("x", arr))
    payload = decode_request(body, length)
    [tensor] = payload["inputs"]
    assert tensor["shape"] == list(arr.shape)
    assert tensor["datatype"] == np_to_triton_dtype(arr.dtype)
    assert tensor["data"] == arr.flatten().tolist()
    assert payload["parameters"] == {"binary_data_output": True}


@settings(max_examples=100, deadline=None)
@given(
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=5).flatmap(
        lambda shape: st.tuples(
            st.just(shape),
            st.lists(st.text(), min_size=math.prod(shape), max_size=math.prod(shape)),
        )
    )
)
def test_bytes_tensors_decode_to_their_text(case: tuple[tuple[int, ...], list[str]]) -> None:
    shape, texts = case
    arr = np.array([t.encode() for t in texts] or [b""], dtype=np.object_)[: len(texts)]
    body, length = triton_body(("s", arr.reshape(shape)), ("n", np.arange(3.0)))
    inputs = decode_request(body, length)["inputs"]
    assert inputs[0]["datatype"] == "BYTES" and inputs[0]["data"] == texts
    assert inputs[1]["data"] == [0.0, 1.0, 2.0]


def test_json_and_binary_inputs_mix_and_bf16_reads_as_fp32() -> None:
    bf16 = np.array([1.5, -2.0], dtype=np.float32).view(np.uint32) >> 16
    header = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]},
            {"name": "b", "shape": [2], "datatype": "BF16", "parameters": {"binary_data_size": 4}},
            {"name": "c", "shape": [1], "datatype": "BOOL", "parameters": {"binary_data_size": 1}},
        ]
    }
    body, length = raw_body(header, bf16.astype("<u2").tobytes(), b"\x01")
    inputs = decode_request(body, length)["inputs"]
    assert inputs[0] == header["inputs"][0]
    assert inputs[1]["datatype"] == "FP32" and inputs[1]["data"] == [1.5, -2.0]
    assert inputs[2]["data"] == [True]
    # A header alone (all JSON) is a valid binary request too.
    only = json.dumps({"inputs": [header["inputs"][0]]}).encode()
    assert decode_request(only, len(only))["inputs"] == [header["inputs"][0]]


def fp64(n: int, size: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "shape": [n],
        "datatype": "FP64",
        "parameters": {"binary_data_size": 8 * n if size is None else size},
        **extra,
    }


def test_malformed_binary_requests_are_refused_with_the_reason() -> None:
    ok, n = raw_body({"inputs": [fp64(2)]}, np.zeros(2).tobytes())
    assert decode_request(ok, n)["inputs"][0]["data"] == [0.0, 0.0]
    assert "the body has" in refused(ok, len(ok) + 1)
    assert "not valid JSON" in refused(ok, n - 1)
    assert "runs past the end" in refused(ok[:-1], n)
    assert "follow the inference header" in refused(ok + b"\0", n)
    assert "JSON object" in refused(*raw_body([1]))  # type: ignore[arg-type]
    cases: list[tuple[dict[str, Any], bytes, str]] = [
        (fp64(2, 8), np.zeros(1).tobytes(), "takes 16 bytes, binary_data_size is 8"),
        (fp64(2, -1), b"", "non-negative integer"),
        (fp64(2, True), b"", "non-negative integer"),
        (fp64(1, data=[1.0]), b"", "both 'data' and a binary_data_size"),
        ({**fp64(1), "datatype": "FP8"}, bytes(8), "unsupported datatype 'FP8'"),
        ({**fp64(1), "shape": [-1]}, bytes(8), "non-negative integers"),
        ({**fp64(1), "shape": "1"}, bytes(8), "non-negative integers"),
        ({**fp64(1), "name": ""}, bytes(8), "needs a 'name'"),
        (fp64(1), np.array([np.nan]).tobytes(), "NaN and infinity"),
        (fp64(1), np.array([np.inf]).tobytes(), "NaN and infinity"),
        ({**fp64(2, 2), "datatype": "BOOL"}, b"\x01\x02", "0 or 1"),
    ]
    for tensor, data, reason in cases:
        assert reason in refused(*raw_body({"inputs": [tensor]}, data)), reason

    def text(n: int, data: bytes) -> str:
        tensor: dict[str, Any] = {"name": "s", "shape": [n], "datatype": "BYTES"}
        tensor["parameters"] = {"binary_data_size": len(data)}
        return refused(*raw_body({"inputs": [tensor]}, data))

    assert "runs past" in text(1, struct.pack("<I", 5) + b"abc")
    assert "starts past" in text(2, strings([b"abcd"]))
    assert "need at least 8 bytes" in text(2, strings([b"a"]))
    assert "2 bytes follow its 1 elements" in text(1, strings([b"a"]) + b"zz")
    assert "not UTF-8" in text(1, strings([b"\xff"]))


@pytest.mark.parametrize("raw", ["", "-1", "1.5", "abc", "0x10", "1e3"])
def test_the_header_length_is_a_non_negative_integer(raw: str) -> None:
    with pytest.raises(BinaryError, match="non-negative integer"):
        header_length(raw)
    assert header_length(" 17 ") == 17


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 220), st.binary(max_size=24))
def test_any_body_decodes_or_is_refused_never_crashes(
    noise: bytes, length: int, tail: bytes
) -> None:
    for body, n in (
        (noise, length),
        raw_body({"inputs": [fp64(1)]}, tail),
        raw_body({"inputs": [{**fp64(1), "datatype": "BYTES"}]}, tail),
    ):
        try:
            decode_request(body, n)
        except BinaryError as exc:
            assert exc.status == 400 and str(exc)


# -- compression ------------------------------------------------------------------------------


def test_gzip_and_deflate_bodies_are_decompressed_within_the_limit() -> None:
    body = b'{"inputs": []}' * 10
    assert decompress(body, None, 10) == body
    assert decompress(body, "identity", 10) == body
    assert decompress(gzip.compress(body), "gzip", 1000) == body
    assert decompress(zlib.compress(body), "Deflate", 1000) == body
    raw = zlib.compressobj(wbits=-15)
    assert decompress(raw.compress(body) + raw.flush(), "deflate", 1000) == body
    bomb = gzip.compress(bytes(10_000_000))
    with pytest.raises(BinaryError) as info:
        decompress(bomb, "gzip", 1_000_000)
    assert info.value.status == 413 and info.value.code == "too_large"
    with pytest.raises(BinaryError) as info:
        decompress(body, "br", 1000)
    assert info.value.status == 415 and "gzip or deflate" in str(info.value)
    for broken in (body, gzip.compress(body)[:-12], gzip.compress(body) + b"x"):
        with pytest.raises(BinaryError) as info:
            decompress(broken, "gzip", 1000)
        assert info.value.status == 400


# -- encoding the answer ----------------------------------------------------------------------


def answer(*outputs: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": "m", "model_version": "1", "id": "r", "outputs": list(outputs)}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False), max_size=30),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30),
    st.lists(st.text(), max_size=10),
    st.lists(st.booleans(), max_size=10),
)
def test_binary_answers_read_back_with_tritonclient(
    scores: list[float], labels: list[int], names: list[str], flags: list[bool]
) -> None:
    body = answer(
        {"name": "score", "shape": [len(scores)], "datatype": "FP64", "data": scores},
        {"name": "label", "shape": [len(labels)], "datatype": "INT64", "data": labels},
        {"name": "name", "shape": [len(names)], "datatype": "BYTES", "data": names},
        {"name": "flag", "shape": [len(flags)], "datatype": "BOOL", "data": flags},
        {"name": "json", "shape": [1], "datatype": "FP64", "data": [0.5]},
    )
    encoded = encode_response(body, lambda name: name != "json")
    assert encoded is not None
    content, length = encoded
    result = triton.InferenceServerClient.parse_response_body(content, header_length=length)
    assert result.as_numpy("score").tolist() == scores
    assert result.as_numpy("label").tolist() == labels
    assert [b.decode() for b in result.as_numpy("name").tolist()] == names
    assert result.as_numpy("flag").tolist() == flags
    assert result.as_numpy("json").tolist() == [0.5]
    header = json.loads(content[:length])
    assert header["id"] == "r" and "data" not in header["outputs"][0]
    assert header["outputs"][4]["data"] == [0.5]


def test_outputs_are_binary_as_asked_per_output_or_for_the_request() -> None:
    body = answer({"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]})
    assert encode_response(body, lambda _: False) is None
    everything = binary_outputs({"parameters": {"binary_data_output": True}})
    assert everything("a") and everything("b")
    some = binary_outputs(
        {
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
        }
    )
    assert not some("a") and some("b")
    one = binary_outputs({"outputs": [{"name": "a", "parameters": {"binary_data": True}}]})
    assert one("a") and not one("b")
    assert not binary_outputs(None)("a") and not binary_outputs({"parameters": 3})("a")
    # Values the datatype cannot hold stay JSON rather than fail the answer.
    big = answer({"name": "a", "shape": [1], "datatype": "INT64", "data": [2**70]})
    assert encode_response(big, lambda _: True) is None


# -- the OIP route ------------------------------------------------------------------------------


@pytest.fixture
async def client() -> Any:
    reg = FakeRegistry()
    reg.add(trained(1.0))
    reg.point("production", 1)
    manager = ModelManager(reg, models=["fraud"])
    await manager.sync_pending()
    app = create_app(lambda: FakeRuntime(DataPlane(manager, ListSink())), max_body_bytes=200_000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, np.ndarray[Any, Any]]]:
    """One tensor per feature, typed as the model's metadata says (what a Triton user sends)."""
    spec = fraud_spec()
    dtypes = {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}
    out = []
    for f in spec.features:
        dtype = dtypes[FIELD_DATATYPE[spec.dataset.fields[f].type]]
        values = [r[f].encode() if isinstance(r[f], str) else r[f] for r in rows]
        out.append((f, np.array(values, dtype=dtype)))
    return out


async def test_a_tritonclient_binary_request_answers_the_json_routes_scores(
    client: httpx.AsyncClient,
) -> None:
    rows = records(50)
    body, length = triton_body(*columns(rows), request_id="b-1")
    r = await client.post(
        "/v2/models/fraud/infer",
        content=body,
        headers={HEADER_LENGTH: str(length), "content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-request-id"] == "b-1" and r.headers["x-flywheel-model-version"] == "1"
    result = triton.InferenceServerClient.parse_response_body(
        r.content, header_length=int(r.headers[HEADER_LENGTH])
    )
    assert result.get_response()["model_version"] == "1"
    json_route = await client.post("/v1/models/fraud/predict", json={"records": rows})
    predictions = json_route.json()["predictions"]
    assert result.as_numpy("score").tolist() == pytest.approx([p["score"] for p in predictions])
    assert result.as_numpy("label").tolist() == [p["label"] for p in predictions]

    # Gzipped, and one output asked for as JSON: that output answers in the header.
    outputs = [triton.InferRequestedOutput("score", binary_data=False)]
    body, length = triton_body(*columns(rows[:3]), outputs=outputs)
    r = await client.post(
        "/v2/models/fraud/versions/1/infer",
        content=gzip.compress(body),
        headers={HEADER_LENGTH: str(length), "content-encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and HEADER_LENGTH not in r.headers
    scores = [p["score"] for p in predictions[:3]]
    assert r.json()["outputs"][0]["data"] == pytest.approx(scores)


async def test_bad_binary_requests_answer_4xx_in_the_protocols_error_format(
    client: httpx.AsyncClient,
) -> None:
    body, length = triton_body(*columns(records(2)))

    async def post(content: bytes, path: str = "/v2/models/fraud/infer", **h: str) -> Any:
        r = await client.post(path, content=content, headers=h)
        return r.status_code, r.json()

    status, err = await post(body + b"x", **{HEADER_LENGTH: str(length)})
    assert status == 400 and set(err) == {"error"} and "1 bytes follow" in err["error"]
    status, err = await post(body, **{HEADER_LENGTH: str(len(body) + 1)})
    assert status == 400 and "the body has" in err["error"]
    status, err = await post(body, **{HEADER_LENGTH: "ten"})
    assert status == 400 and "non-negative integer" in err["error"]
    status, err = await post(body, **{HEADER_LENGTH: str(length), "content-encoding": "br"})
    assert status == 415 and "gzip or deflate" in err["error"]
    status, err = await post(gzip.compress(bytes(300_000)), **{"content-encoding": "gzip"})
    assert status == 413 and set(err) == {"error"}
    status, err = await post(bytes(200_001), **{HEADER_LENGTH: "0"})
    assert status == 413
    # The JSON route reads no binary tensors; its errors carry a code.
    path = "/v1/models/fraud/predict"
    status, err = await post(body, path, **{HEADER_LENGTH: str(length)})
    assert status == 415 and err["code"] == "binary_data_unsupported"
    status, err = await post(b"{}", path, **{"content-encoding": "zstd"})
    assert status == 415 and err["code"] == "unsupported_encoding"
    gzipped = gzip.compress(json.dumps({"records": records(1)}).encode())
    r = await client.post(path, content=gzipped, headers={"content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert (await client.get("/v2")).json()["extensions"] == ["binary_tensor_data"]
