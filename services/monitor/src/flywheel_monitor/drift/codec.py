"""A small, deterministic container for a JSON header plus named numpy arrays.

Calibrations and detector states are stored as bytes (object store, faust tables). This format
keeps every float bit-exact, loads without pickle, and gives the same bytes for the same
content (no timestamps, sorted keys), so equal calibrations have equal bytes.

Layout: ``MAGIC`` (8 bytes) | header length (uint32, little endian) | header (JSON, UTF-8) |
array payloads, concatenated in header order. The header holds ``meta`` (any JSON) and, per
array, its name, dtype, shape and byte length.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

MAGIC = b"FWDRIFT1"
_ALLOWED_KINDS = set("biuf")  # bool, signed, unsigned, float: no object arrays


def pack(meta: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    """Serialise ``meta`` (JSON values) and ``arrays`` (numeric numpy arrays)."""
    specs = []
    payloads = []
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"array {name!r} has unsupported dtype {arr.dtype}")
        data = arr.tobytes()
        specs.append(
            {"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "n": len(data)}
        )
        payloads.append(data)
    header = json.dumps(
        {"meta": meta, "arrays": specs}, sort_keys=True, separators=(",", ":"), allow_nan=True
    ).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *payloads])


def unpack(blob: bytes) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    """Inverse of :func:`pack`; raises ``ValueError`` on anything else."""
    if len(blob) < 12 or blob[:8] != MAGIC:
        raise ValueError("not a flywheel drift blob")
    (size,) = struct.unpack("<I", blob[8:12])
    try:
        header = json.loads(blob[12 : 12 + size])
    except ValueError as exc:
        raise ValueError(f"corrupt drift blob header: {exc}") from exc
    offset = 12 + size
    arrays: dict[str, npt.NDArray[Any]] = {}
    for spec in header["arrays"]:
        dtype = np.dtype(spec["dtype"])
        if dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"unsupported dtype {dtype} in drift blob")
        end = offset + int(spec["n"])
        if end > len(blob):
            raise ValueError("truncated drift blob")
        arr = np.frombuffer(blob[offset:end], dtype=dtype).reshape(spec["shape"]).copy()
        arrays[spec["name"]] = arr
        offset = end
    return header["meta"], arrays
