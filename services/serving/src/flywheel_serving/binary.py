"""Triton's binary tensor data extension of the OIP v2 REST protocol (``binary_tensor_data``).

A binary request is a JSON inference header followed by raw tensors: the
``Inference-Header-Content-Length`` header gives the JSON part's length, and each input whose
data follows it says how many bytes it takes (``parameters.binary_data_size``) instead of
carrying ``data``. Tensors are row-major, little-endian; ``BOOL`` is one byte per element
(0 or 1), ``BYTES`` is each element as a 4-byte little-endian length and its bytes (UTF-8
text here). Outputs are asked for in binary per output (``parameters.binary_data``) or for
all of them (request ``parameters.binary_data_output``); the answer is then its JSON header
(each binary output with its ``binary_data_size`` and no ``data``) followed by the tensors.

Pure functions: :func:`decode_request` turns a binary body into the same JSON payload a
client would have sent without the extension (every input with its ``data``), which the OIP
codec (``domain/oip.py``) then reads; :func:`encode_response` turns the JSON answer into a
binary one. Numeric tensors are decoded with ``numpy.frombuffer`` (no loop per element).
Every inconsistency (sizes, offsets, types) is a :class:`BinaryError` (400 unless said).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson

from .domain.oip import ProtocolError

EXTENSION = "binary_tensor_data"
HEADER_LENGTH = "inference-header-content-length"
"""The request and response header: length in bytes of the JSON part of the body."""

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("u1"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # the upper half of an FP32; read as FP32
}
BINARY_DATATYPES = frozenset(NUMPY_DTYPES) | {"BYTES"}
_LENGTH = struct.Struct("<I")
_ENCODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib wbits of each


class BinaryError(ProtocolError):
    """A binary (or compressed) body that cannot be read: HTTP ``status``, stable ``code``."""

    def __init__(self, message: str, code: str = "invalid_binary", status: int = 400) -> None:
        super().__init__(message, status)
        self.code = code


def header_length(raw: str) -> int:
    """The value of ``Inference-Header-Content-Length``."""
    value = raw.strip()
    if not value.isdigit():
        raise BinaryError(
            f"Inference-Header-Content-Length must be a non-negative integer, got {raw!r}"
        )
    return int(value)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` decoded per its ``Content-Encoding`` (identity, gzip or deflate), at most
    ``limit`` bytes once decompressed (413 beyond, 415 for another encoding)."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body
    wbits = _ENCODINGS.get(name)
    if wbits is None:
        raise BinaryError(
            f"Content-Encoding {encoding!r} is not supported: send identity, gzip or deflate",
            code="unsupported_encoding",
            status=415,
        )
    attempts = (wbits, -15) if name == "deflate" else (wbits,)  # zlib, else raw deflate
    for i, bits in enumerate(attempts):
        inflater = zlib.decompressobj(bits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            if i + 1 < len(attempts):
                continue
            raise BinaryError(f"the body is not valid {name} data: {exc}") from exc
        if len(out) > limit:
            raise BinaryError(
                f"body over {limit} bytes once decompressed", code="too_large", status=413
            )
        if not inflater.eof:
            raise BinaryError(f"the {name} body is truncated")
        if inflater.unused_data:
            raise BinaryError(f"{len(inflater.unused_data)} bytes follow the {name} data")
        return out
    raise AssertionError("unreachable")  # pragma: no cover


def _shape(raw: Mapping[str, Any], name: str) -> list[int]:
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise BinaryError(f"input '{name}': 'shape' must be a list of non-negative integers")
    return shape


def _numeric(chunk: memoryview, datatype: str, shape: list[int], name: str) -> list[Any]:
    dtype = NUMPY_DTYPES[datatype]
    count = math.prod(shape)
    if len(chunk) != count * dtype.itemsize:
        raise BinaryError(
            f"input '{name}': shape {shape} of {datatype} takes {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(chunk)}"
        )
    values = np.frombuffer(chunk, dtype=dtype)
    if datatype == "BOOL":
        if values.size and int(values.max()) > 1:
            raise BinaryError(f"input '{name}': BOOL elements must be bytes 0 or 1")
        return values.astype(np.bool_).tolist()
    if datatype == "BF16":
        values = (values.astype("<u4") << 16).view("<f4")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise BinaryError(f"input '{name}': NaN and infinity are not valid inputs")
    return values.tolist()


def _strings(chunk: memoryview, shape: list[int], name: str) -> list[str]:
    count = math.prod(shape)
    data = chunk.tobytes()
    end = len(data)
    if count * _LENGTH.size > end:
        raise BinaryError(
            f"input '{name}': {count} BYTES elements need at least {count * _LENGTH.size} bytes, "
            f"binary_data_size is {end}"
        )
    # ASCII throughout (short lengths are ASCII bytes too): slice the text, decode once.
    text = data.decode("ascii") if data.isascii() else None
    source: str | bytes = data if text is None else text
    unpack = _LENGTH.unpack_from
    items: list[Any] = []
    append = items.append
    pos = 0
    try:
        for _ in range(count):
            (size,) = unpack(data, pos)
            pos += _LENGTH.size
            append(source[pos : pos + size])
            pos += size
    except struct.error:
        i = len(items)
        where = f"element {i - 1} runs" if pos > end else f"element {i} starts"
        raise BinaryError(f"input '{name}': {where} past binary_data_size") from None
    if pos > end:
        raise BinaryError(f"input '{name}': element {count - 1} runs past binary_data_size")
    if pos != end:
        raise BinaryError(
            f"input '{name}': {end - pos} bytes follow its {count} elements in binary_data_size"
        )
    if text is not None:
        return items
    try:
        return [item.decode() for item in items]
    except UnicodeDecodeError as exc:
        raise BinaryError(f"input '{name}': an element is not UTF-8 text") from exc


def _binary_size(raw: Mapping[str, Any], index: int) -> int | None:
    params = raw.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    name = raw.get("name")
    if type(size) is not int or size < 0:
        raise BinaryError(
            f"input '{name}' (inputs[{index}]): binary_data_size must be a non-negative integer"
        )
    if "data" in raw:
        raise BinaryError(f"input '{name}' has both 'data' and a binary_data_size")
    return size


def decode_request(body: bytes, length: int) -> dict[str, Any]:
    """A binary request body (JSON header of ``length`` bytes, then the tensors) as the
    JSON payload it stands for: every binary input gets its ``data`` (BF16 becomes FP32)."""
    if length > len(body):
        raise BinaryError(
            f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes"
        )
    view = memoryview(body)
    try:
        payload = orjson.loads(view[:length])
    except orjson.JSONDecodeError as exc:
        raise BinaryError(
            f"the inference header (the first {length} bytes) is not valid JSON: {exc}",
            code="invalid_json",
        ) from exc
    if not isinstance(payload, dict):
        raise BinaryError("the inference header must be a JSON object with 'inputs'")
    offset = length
    inputs = payload.get("inputs")
    if isinstance(inputs, list):
        decoded: list[Any] = []
        for i, raw in enumerate(inputs):
            size = _binary_size(raw, i) if isinstance(raw, dict) else None
            if size is None:
                decoded.append(raw)
                continue
            name = raw.get("name")
            if not isinstance(name, str) or not name:
                raise BinaryError(f"inputs[{i}] needs a 'name'")
            datatype = raw.get("datatype")
            if datatype not in BINARY_DATATYPES:
                raise BinaryError(f"input '{name}': unsupported datatype {datatype!r}")
            shape = _shape(raw, name)
            if offset + size > len(body):
                raise BinaryError(
                    f"input '{name}': binary_data_size {size} at byte {offset} runs past the "
                    f"end of the body ({len(body)} bytes)"
                )
            chunk = view[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                data: list[Any] = _strings(chunk, shape, name)
            else:
                data = _numeric(chunk, datatype, shape, name)
            tensor = {**raw, "data": data}
            if datatype == "BF16":
                tensor["datatype"] = "FP32"
            decoded.append(tensor)
        payload = {**payload, "inputs": decoded}
    if offset != len(body):
        raise BinaryError(
            f"{len(body) - offset} bytes follow the inference header and the binary inputs "
            "(binary_data_size of the inputs do not add up to the body)"
        )
    return payload


def binary_outputs(payload: Any) -> Callable[[str], bool]:
    """Which outputs the request asks in binary: per output ``parameters.binary_data``,
    else the request's ``parameters.binary_data_output`` (default false)."""
    if not isinstance(payload, dict):
        return lambda _: False
    params = payload.get("parameters")
    default = isinstance(params, dict) and params.get("binary_data_output") is True
    chosen: dict[str, bool] = {}
    outputs = payload.get("outputs")
    for out in outputs if isinstance(outputs, list) else ():
        if isinstance(out, dict) and isinstance(out.get("name"), str):
            flag = (out.get("parameters") or {}).get("binary_data")
            if isinstance(flag, bool):
                chosen[out["name"]] = flag
    return lambda name: chosen.get(name, default)


def _tensor_bytes(datatype: str, data: list[Any]) -> bytes | None:
    if datatype == "BYTES":
        elements = [
            v if isinstance(v, bytes) else (v if isinstance(v, str) else str(v)).encode()
            for v in data
        ]
        return b"".join(_LENGTH.pack(len(e)) + e for e in elements)
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None or datatype == "BF16":
        return None
    try:
        return np.asarray(data, dtype=dtype).tobytes()
    except (OverflowError, TypeError, ValueError):
        return None  # values the datatype cannot hold: the output stays JSON


def encode_response(
    body: Mapping[str, Any], binary: Callable[[str], bool]
) -> tuple[bytes, int] | None:
    """The JSON answer ``body`` with the outputs ``binary`` picks as binary tensors: (the
    body, its JSON header's length), or None when no output is binary (answer JSON)."""
    blobs: list[bytes] = []
    outputs: list[Any] = []
    for out in body.get("outputs", []):
        blob = _tensor_bytes(out["datatype"], out["data"]) if binary(out["name"]) else None
        if blob is None:
            outputs.append(out)
            continue
        tensor = {k: v for k, v in out.items() if k != "data"}
        tensor["parameters"] = {**(out.get("parameters") or {}), "binary_data_size": len(blob)}
        outputs.append(tensor)
        blobs.append(blob)
    if not blobs:
        return None
    header = orjson.dumps({**body, "outputs": outputs})
    return b"".join([header, *blobs]), len(header)
