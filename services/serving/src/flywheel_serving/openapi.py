"""Serving's OpenAPI document (``GET /openapi.json``): the Open Inference Protocol v2 and JSON
routes of ``api.py``, their bodies, and every status each route answers with its body.

FastAPI builds the document from the documentation router below and the pydantic models of
the bodies (no request goes through FastAPI: the routes are ``api.py``'s Starlette ones; a
test checks that both list the same operations). Each worker then completes it from what it
serves: the model names (the ``name`` parameter's values), the records of the JSON route (the
production version's contract, the one requests are checked against), and an example
request per model in both protocols. BentoML's own ``/docs.json`` is left as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from flywheel_shared.http import (
    AUTH,
    BEARER,
    document_routes,
    endpoint_stub,
    request_body,
    responses,
)

from .binary import BINARY_DATATYPES
from .domain.oip import FIELD_DATATYPE
from .models import LoadedModel
from .schemas import (
    InferenceRequest,
    InferenceResponse,
    JsonError,
    Live,
    ModelMetadata,
    ModelReady,
    OipError,
    PredictRequest,
    PredictResponse,
    Ready,
    ServerMetadata,
    Status,
)

OIP = "Open Inference Protocol v2"
JSON = "JSON predictions"
PROBES = "probes"

# -- the operations ----------------------------------------------------------------------------

_ANSWER_HEADERS = {
    "x-request-id": "the request id (the client's, else a new one)",
    "x-flywheel-model-version": "the version that answered",
    "x-flywheel-route": "the alias that answered: production or canary (or the one asked for)",
    "x-flywheel-worker": "the worker process that answered",
}
_NOT_READY = "The worker is starting, the model is not loaded yet, or it has no production version"
_MODEL_ERRORS = {
    400: "The body is not JSON, or does not follow the protocol (the reason says where)",
    404: "No such model, version or route here",
    413: "The body is over the size limit (compressed or not)",
    415: "The Content-Encoding is not identity, gzip or deflate, or binary tensors (Triton's "
    "binary tensor data extension) were sent to the JSON route",
    422: "A record breaks the model's contract",
    500: "The model failed on valid input",
    503: _NOT_READY,
}


LENGTH_HEADER = "Inference-Header-Content-Length"
_BINARY_REQUEST = (
    "Triton's binary tensor data extension (with the Inference-Header-Content-Length header): "
    "the JSON inference request in the body's first Inference-Header-Content-Length bytes (an "
    "input whose tensor follows carries parameters.binary_data_size instead of data), then the "
    "inputs' tensors in order: row-major, little-endian, BOOL one byte per element, BYTES each "
    "element as a 4-byte little-endian length and its UTF-8 bytes. Datatypes: "
    f"{', '.join(sorted(BINARY_DATATYPES))} (BF16 read as FP32)"
)
_BINARY_ANSWER = (
    "Triton's binary tensor data extension, when the request asks for binary outputs "
    "(parameters.binary_data of an output, or the request's parameters.binary_data_output): "
    "the JSON answer in the body's first Inference-Header-Content-Length bytes (a binary "
    "output carries parameters.binary_data_size instead of data), then those outputs' "
    "tensors in order"
)
_LENGTH = {
    "description": "Length of the JSON part of a binary body (Triton's binary tensor data "
    "extension); the rest of the body holds the tensors",
    "schema": {"type": "integer", "minimum": 0},
}


def _answered(
    model: type[BaseModel], description: str, *, binary: bool = False
) -> dict[int | str, dict[str, Any]]:
    headers: dict[str, Any] = {
        name: {"description": text, "required": True, "schema": {"type": "string"}}
        for name, text in _ANSWER_HEADERS.items()
    }
    answer: dict[str, Any] = {"model": model, "description": description, "headers": headers}
    if binary:
        headers[LENGTH_HEADER] = {**_LENGTH, "required": False}
        binary_body = {"type": "string", "format": "binary", "description": _BINARY_ANSWER}
        answer["content"] = {"application/octet-stream": {"schema": binary_body}}
    return {200: answer}


def _router(*, auth: bool, max_body_bytes: int) -> APIRouter:
    """The documentation of ``api.py``'s routes."""
    r = APIRouter()
    guarded = BEARER if auth else None

    def errors(
        *codes: int, model: type[BaseModel], guard: bool = False
    ) -> dict[int | str, dict[str, Any]]:
        auth_codes = AUTH if auth and guard else ()
        return responses(
            *auth_codes, *codes, model=model, retry_after=False, descriptions=_MODEL_ERRORS
        )

    def not_ready(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
        return {503: {"model": model, "description": _NOT_READY}}

    def body(model: type[BaseModel], *, binary: bool = False) -> dict[str, Any]:
        if not binary:
            extra = request_body(
                {"application/json": model},
                description=f"JSON, at most {max_body_bytes} bytes (gzip or deflate allowed)",
            )
            return {**extra, **(guarded or {})}
        binary_body = {"type": "string", "format": "binary", "description": _BINARY_REQUEST}
        extra = request_body(
            {"application/json": model, "application/octet-stream": binary_body},
            description=f"JSON, or binary tensors; at most {max_body_bytes} bytes (gzip or "
            "deflate allowed)",
        )
        length = {"name": LENGTH_HEADER, "in": "header", "required": False, **_LENGTH}
        return {**extra, "parameters": [length], **(guarded or {})}

    def add(method: str, path: str, operation_id: str, tag: str, summary: str, **kw: Any) -> None:
        params = {"name": str, "version": int}
        needed = {n: t for n, t in params.items() if "{" + n + "}" in path}
        r.add_api_route(
            path,
            endpoint_stub(**needed),
            methods=[method],
            operation_id=operation_id,
            tags=[tag],
            summary=summary,
            **kw,
        )

    add("GET", "/v2", "server_metadata", OIP, "Server metadata", response_model=ServerMetadata)
    add("GET", "/v2/health/live", "server_live", OIP, "Server liveness", response_model=Live)
    add(
        "GET",
        "/v2/health/ready",
        "server_ready",
        OIP,
        "Server readiness",
        response_model=Ready,
        responses=not_ready(Ready),
    )
    for prefix, base, which in (
        ("", "/v2/models/{name}", "a model (its production version)"),
        ("version_", "/v2/models/{name}/versions/{version}", "a version of a model"),
    ):
        add(
            "GET",
            base,
            f"{prefix}metadata",
            OIP,
            f"Metadata of {which}",
            response_model=ModelMetadata,
            responses=errors(404, 503, model=OipError),
        )
        add(
            "GET",
            f"{base}/ready",
            f"{prefix}ready",
            OIP,
            f"Readiness of {which}",
            response_model=ModelReady,
            responses={**errors(404, model=OipError), **not_ready(ModelReady)},
        )
        add(
            "POST",
            f"{base}/infer",
            f"{prefix}infer",
            OIP,
            f"Inference with {which}",
            responses={
                **_answered(InferenceResponse, "The outputs, one row per input row", binary=True),
                **errors(400, 404, 413, 415, 422, 500, 503, model=OipError, guard=True),
            },
            openapi_extra=body(InferenceRequest, binary=True),
        )
    for prefix, path, which in (
        ("", "/v1/models/{name}/predict", "the production (or canary) version"),
        ("version_", "/v1/models/{name}/versions/{version}/predict", "a version"),
    ):
        add(
            "POST",
            path,
            f"{prefix}predict",
            JSON,
            f"Predictions of {which}",
            responses={
                **_answered(PredictResponse, "A prediction per record"),
                **errors(400, 404, 413, 415, 422, 500, 503, model=JsonError, guard=True),
            },
            openapi_extra=body(PredictRequest),
        )
    add(
        "GET",
        "/v1/status",
        "status",
        JSON,
        "Worker status",
        response_model=Status,
        responses=errors(model=JsonError, guard=True),
        openapi_extra=guarded,
    )
    add("GET", "/openapi.json", "openapi", PROBES, "This document", response_model=dict[str, Any])
    return r


def base_document(*, auth: bool, max_body_bytes: int) -> dict[str, Any]:
    """The document without what depends on the models served."""
    return document_routes(
        _router(auth=auth, max_body_bytes=max_body_bytes).routes,
        title="Flywheel serving",
        version="0.1.0",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        tags=[
            {"name": OIP, "description": "KServe / Triton REST inference protocol"},
            {"name": JSON, "description": "records in, predictions out"},
            {"name": PROBES},
        ],
        bearer=auth,
    )


def _oip_example(model: LoadedModel, record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": f,
                "shape": [1],
                "datatype": FIELD_DATATYPE[model.field_types[f]],
                "data": [record[f]],
            }
            for f in model.features
        ]
    }


def document(base: Mapping[str, Any], served: Mapping[str, LoadedModel | None]) -> dict[str, Any]:
    """``base`` completed for the models this worker serves: name → its production version
    (None while it has none)."""
    doc = copy.deepcopy(dict(base))
    if not served:
        return doc
    loaded = {n: m for n, m in served.items() if m is not None}
    for item in doc["paths"].values():
        for operation in item.values():
            for param in operation.get("parameters", []):
                if param["name"] == "name" and param["in"] == "path":
                    param["schema"] = {"type": "string", "enum": sorted(served)}
                if param["name"] == "version" and param["in"] == "path" and loaded:
                    param["example"] = next(iter(loaded.values())).version
    if not loaded:
        return doc
    records = [m.validator.json_schema() for m in loaded.values()]
    items = records[0] if len(records) == 1 else {"anyOf": records}
    doc["components"]["schemas"]["PredictRequest"]["properties"]["records"]["items"] = items
    examples = {n: m.validator.example() for n, m in loaded.items()}
    for path, item in doc["paths"].items():
        body = item.get("post", {}).get("requestBody")
        if body is None:
            continue
        media = body["content"]["application/json"]
        media["examples"] = {
            n: {
                "summary": f"a valid request for {n}",
                "value": (
                    {"records": [examples[n]]}
                    if path.startswith("/v1/")
                    else _oip_example(m, examples[n])
                ),
            }
            for n, m in loaded.items()
        }
    return doc
