"""The bodies of serving's routes as pydantic models, for its OpenAPI document (``openapi.py``).

They describe the wire format; requests are not parsed with them (``endpoints.py`` and
``domain/oip.py`` do that).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from flywheel_shared.aliases import Alias

from .domain.oip import DATATYPES

# -- Open Inference Protocol v2 (KServe, Triton, MLServer) ----------------------------------


class OipError(BaseModel):
    """An OIP error answer (``code`` only on 401 and 403, from the bearer guard)."""

    model_config = ConfigDict(extra="forbid")
    error: str
    code: str | None = Field(None, description="unauthorized | forbidden | not_found")


class ServerMetadata(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    """``GET /v2/health/live``."""

    live: bool


class Ready(BaseModel):
    """``GET /v2/health/ready``: the worker read the registry and loaded the aliases' versions."""

    ready: bool


class TensorMetadata(BaseModel):
    """A model input or output: name, datatype and shape (-1: any length)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}``: the model's inputs (its features) and outputs."""

    name: str
    versions: list[str] = Field(description="the versions loaded here (behind an alias)")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    """``GET /v2/models/{name}/ready``."""

    name: str
    ready: bool


class RequestInput(BaseModel):
    """An input tensor: one per feature (shape ``[N]`` or ``[N, 1]``), or a single 2-D one
    (``[N, F]``) whose columns are the model's features in order."""

    name: str
    shape: list[int] = Field(description="non-negative sizes")
    datatype: str = Field(json_schema_extra={"enum": list[JsonValue](sorted(DATATYPES))})
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="the values, row-major (nested lists are flattened)")


class RequestOutput(BaseModel):
    """An output asked for."""

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}/infer``."""

    id: str | None = Field(None, description="request id (the x-request-id header wins)")
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(None, description="default: every output")


class ResponseOutput(BaseModel):
    """An output tensor."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceParameters(BaseModel):
    """Which alias answered, and the id of each prediction (labels refer to them)."""

    route: Alias
    prediction_ids: list[str]


class InferenceResponse(BaseModel):
    """The answer to an inference request."""

    model_name: str
    model_version: str
    id: str
    parameters: InferenceParameters
    outputs: list[ResponseOutput]


# -- plain JSON ------------------------------------------------------------------------------


class PredictRequest(BaseModel):
    """``POST /v1/models/{name}/predict``: records of the model's features (fields the model
    does not use are ignored; its dataset's id field is logged for the label join)."""

    records: list[dict[str, Any]]


class Prediction(BaseModel):
    """One record's prediction: its label and, for a classifier, the score (two classes) or
    the probability of each class."""

    model_config = ConfigDict(extra="forbid")
    prediction_id: str
    label: Any
    score: float | None = None
    probabilities: list[float] | None = None


class PredictResponse(BaseModel):
    """The predictions, in the order of the records."""

    model: str
    version: int
    route: Alias
    request_id: str
    predictions: list[Prediction]


class FieldProblem(BaseModel):
    """A field of a record that breaks the model's contract."""

    index: int
    field: str
    reason: str


class JsonError(BaseModel):
    """An error answer of the JSON routes."""

    model_config = ConfigDict(extra="forbid")
    error: str
    code: str = Field(description="stable reason, e.g. invalid_input, unknown_model")
    errors: list[FieldProblem] | None = Field(None, description="every problem (422)")


class Status(BaseModel):
    """``GET /v1/status``: what this worker serves and how its links are."""

    model_config = ConfigDict(extra="allow")
    worker: int = Field(description="the worker process that answered")
    ready: bool
