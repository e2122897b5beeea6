"""Open Inference Protocol v2 (KServe, Seldon MLServer, Triton) REST codec.

Requests carry tensors: either one named input per model feature (shape ``[N]`` or
``[N, 1]``), or a single 2-D input of shape ``[N, F]`` whose columns are the model's
features in order. Both become a list of records, which are then checked against the
model's dataset contract like any JSON request. Errors answer ``{"error": "..."}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flywheel_shared.spec import FieldType

NUMERIC_TYPES = frozenset(
    {
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
    }
)
DATATYPES = NUMERIC_TYPES | {"BOOL", "BYTES"}
FIELD_DATATYPE = {
    FieldType.INT: "INT64",
    FieldType.FLOAT: "FP64",
    FieldType.BOOL: "BOOL",
    FieldType.STRING: "BYTES",
    FieldType.CATEGORY: "BYTES",
    FieldType.DATETIME: "BYTES",
}


class ProtocolError(ValueError):
    """A request that does not follow the protocol: answered with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request."""

    id: str | None
    records: list[dict[str, Any]]
    outputs: list[str] | None
    """Names of the outputs asked for (None: all)."""
    parameters: dict[str, Any]


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _coerce(values: list[Any], datatype: str, field_type: FieldType | None) -> list[Any]:
    # Numeric tensors carry booleans as 0/1; the contract wants true/false.
    if field_type is FieldType.BOOL and datatype in NUMERIC_TYPES:
        return [bool(v) if type(v) in (int, float) and v in (0, 1) else v for v in values]
    return values


def _tensor(raw: Any, index: int) -> tuple[str, list[int], str, list[Any]]:
    if not isinstance(raw, dict):
        raise ProtocolError(f"inputs[{index}] must be an object")
    name = raw.get("name")
    shape = raw.get("shape")
    datatype = raw.get("datatype")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"inputs[{index}] needs a 'name'")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(f"input '{name}': 'shape' must be a list of non-negative integers")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input '{name}': unsupported datatype {datatype!r}")
    if "data" not in raw:
        raise ProtocolError(f"input '{name}' has no 'data' (binary tensors are not supported)")
    data = _flatten(raw["data"])
    if len(data) != math.prod(shape):
        raise ProtocolError(
            f"input '{name}': shape {shape} holds {math.prod(shape)} values, data has {len(data)}"
        )
    return name, shape, datatype, data


def decode_request(
    payload: Any,
    features: Sequence[str],
    field_types: Mapping[str, FieldType],
    extra_inputs: Iterable[str] = (),
) -> InferRequest:
    """Turn an inference request body (parsed JSON) into records keyed by feature name."""
    if not isinstance(payload, dict):
        raise ProtocolError("the body must be a JSON object with 'inputs'")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    tensors = [_tensor(raw, i) for i, raw in enumerate(inputs)]
    known = set(features) | set(extra_inputs)
    records: list[dict[str, Any]]
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][0] not in known:
        name, shape, datatype, data = tensors[0]
        cols = shape[1]
        if cols != len(features):
            raise ProtocolError(
                f"input '{name}': a 2-D input needs {len(features)} columns "
                f"({', '.join(features)}), got {cols}"
            )
        columns = [
            _coerce(data[c::cols], datatype, field_types.get(f)) for c, f in enumerate(features)
        ]
        records = [dict(zip(features, row, strict=True)) for row in zip(*columns, strict=True)]
    else:
        n: int | None = None
        by_name: dict[str, list[Any]] = {}
        for name, shape, datatype, data in tensors:
            if name not in known:
                raise ProtocolError(
                    f"unknown input '{name}'; this model's inputs are: {', '.join(features)}"
                )
            if name in by_name:
                raise ProtocolError(f"input '{name}' given twice")
            if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise ProtocolError(f"input '{name}': shape must be [N] or [N, 1], got {shape}")
            if n is None:
                n = shape[0]
            elif shape[0] != n:
                raise ProtocolError(f"input '{name}' has {shape[0]} rows, other inputs have {n}")
            by_name[name] = _coerce(data, datatype, field_types.get(name))
        records = [{k: v[i] for k, v in by_name.items()} for i in range(n or 0)]
    if not records:
        raise ProtocolError("the inputs hold no rows")
    outputs = payload.get("outputs")
    wanted: list[str] | None = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise ProtocolError("'outputs' must be a list of {\"name\": ...} objects")
        wanted = [o["name"] for o in outputs]
    rid = payload.get("id")
    params = payload.get("parameters")
    return InferRequest(
        id=str(rid) if rid is not None else None,
        records=records,
        outputs=wanted,
        parameters=params if isinstance(params, dict) else {},
    )


def _datatype(values: list[Any]) -> str:
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return "BOOL"
    if kinds <= {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def output_tensors(rows: Sequence[Mapping[str, Any]], wanted: Sequence[str] | None) -> list[Any]:
    """Per-record outputs as OIP tensors, one per output name (``wanted`` filters them)."""
    if not rows:
        return []
    names = list(rows[0])
    if wanted is not None:
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise ProtocolError(
                f"unknown output {unknown[0]!r}; this model's outputs are: {', '.join(names)}"
            )
        names = list(wanted)
    tensors = []
    for name in names:
        values = [r[name] for r in rows]
        if values and isinstance(values[0], list):
            width = len(values[0])
            flat = [x for v in values for x in v]
            tensors.append(
                {"name": name, "shape": [len(values), width], "datatype": "FP64", "data": flat}
            )
        else:
            tensors.append(
                {
                    "name": name,
                    "shape": [len(values)],
                    "datatype": _datatype(values),
                    "data": values,
                }
            )
    return tensors


def model_metadata(
    name: str,
    versions: Sequence[int],
    features: Sequence[str],
    field_types: Mapping[str, FieldType],
    outputs: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The ``GET /v2/models/{name}`` body."""
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": "sklearn",
        "inputs": [
            {"name": f, "datatype": FIELD_DATATYPE[field_types[f]], "shape": [-1]} for f in features
        ],
        "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in outputs],
    }
