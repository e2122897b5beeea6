"""What ingest's HTTP API reads and answers: the request bodies, parsed by hand (raw and
size-limited), and the answer models the OpenAPI document shows."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from flywheel_shared.events import FieldError, Label
from flywheel_shared.http import ApiError
from flywheel_shared.spec import DatasetContract

Record = dict[str, Any]

JSON_TYPES = {"application/json"}
NDJSON_TYPES = {
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
}
_LABELS = TypeAdapter(list[Label])


class RecordsBody(BaseModel):
    """A JSON body of records, the other form of the bare array."""

    records: list[Record]


class LabelsBody(BaseModel):
    """A JSON body of labels, the other form of the bare array."""

    labels: list[Label]


class RecordRejection(BaseModel):
    """One refused record: its index in the body and why."""

    index: int
    errors: list[FieldError]


class RecordsAnswer(BaseModel):
    """What became of the records of a request."""

    dataset: str
    accepted: int = Field(description="records published (after Kafka acknowledged them)")
    rejected: int
    rejections: list[RecordRejection]


class LabelsAnswer(BaseModel):
    """Labels published."""

    dataset: str
    accepted: int


class DatasetEntry(BaseModel):
    """A declared dataset and its contract."""

    name: str
    contract: DatasetContract


class DatasetInfo(DatasetEntry):
    """A dataset with what is stored of it."""

    rows: int
    segments: int
    snapshot_id: str = Field(description="names the exact stored state (training lineage)")
    manifest_uri: str


def records_media_type(content_type: str) -> str:
    """The media type of a records body (JSON or one of the NDJSON names); 415 otherwise."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in JSON_TYPES and ctype not in NDJSON_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send application/json (an array) or application/x-ndjson",
        )
    return ctype


def parse_records(body: bytes, media_type: str) -> list[Any]:
    """The records of a body: a JSON array, ``{"records": [...]}`` or NDJSON; 400 when it
    cannot be read or holds none."""
    records = _json_records(body) if media_type in JSON_TYPES else _ndjson_records(body)
    if not records:
        raise ApiError(400, "empty", "no records in the body")
    return records


def _json_records(body: bytes) -> list[Any]:
    data = _json(body)
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise ApiError(
            400, "not_an_array", 'body must be a JSON array of records (or {"records": [...]})'
        )
    return data


def _ndjson_records(body: bytes) -> list[Any]:
    records = []
    for n, line in enumerate(body.splitlines(), start=1):
        if line.strip():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, "invalid_json", f"line {n} is not valid JSON: {exc}") from exc
    return records


def parse_labels(body: bytes) -> list[Label]:
    """The labels of a body: a JSON array, ``{"labels": [...]}`` or one label; 400 when it
    cannot be read or holds none, 422 when a label is not one."""
    data = _json(body)
    if isinstance(data, dict):
        data = data.get("labels", [data])
    try:
        labels = _LABELS.validate_python(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_labels", str(exc)) from exc
    if not labels:
        raise ApiError(400, "empty", "no labels in the body")
    return labels


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
