"""The monitor's OpenAPI document (``GET /openapi.json``): its probes, metrics and status.

The monitor takes no writes over HTTP. Its server is faust's, not FastAPI; FastAPI builds
the document from the documentation routes below and the models of the bodies (a test checks
them against the pages the app serves).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from flywheel_shared.http import Health, document_routes, endpoint_stub, responses

OPS = "ops"


class Ready(BaseModel):
    """``GET /readyz`` when the worker has its partitions and the registry answers."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["ready"]


class Unready(BaseModel):
    """``GET /readyz`` otherwise: each failing check with its reason."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["unready"]
    checks: dict[str, str]


class VersionWatch(BaseModel):
    """Drift watch of one version."""

    pending_rows: int = Field(description="predictions waiting for the next drift test")
    calibrated: bool = Field(description="the detector was fitted on the reference sample")
    last_alert_at: float | None = Field(description="unix time of the last drift alert")


class RolloutArm(BaseModel):
    """A candidate under rollout (canary or shadow)."""

    version: int
    step: int = Field(description="the canary step it is at")
    requests: int = Field(description="requests seen in this step")


class ModelWatch(BaseModel):
    """What the worker watches of one model."""

    production: int | None
    versions: dict[str, VersionWatch]
    rollouts: dict[str, RolloutArm]


class Status(BaseModel):
    """``GET /v1/status``: this worker's partitions, models and latest decisions."""

    worker: str
    assignment: list[str] = Field(description="topic:partition this worker holds")
    models: dict[str, ModelWatch]
    recent_decisions: list[dict[str, Any]] = Field(description="newest first")


def _router() -> APIRouter:
    r = APIRouter()

    def add(path: str, summary: str, **kw: Any) -> None:
        r.add_api_route(path, endpoint_stub(), methods=["GET"], tags=[OPS], summary=summary, **kw)

    add("/healthz", "Liveness: the process answers", response_model=Health)
    add(
        "/readyz",
        "Readiness: partitions assigned, tables recovered, registry answering",
        response_model=Ready,
        responses=responses(
            503, model=Unready, retry_after=False, descriptions={503: "A check fails"}
        ),
    )
    add(
        "/metrics",
        "Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "The Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    add("/v1/status", "Worker status", response_model=Status)
    add("/openapi.json", "This document", response_model=dict[str, Any])
    return r


def document() -> dict[str, Any]:
    """The monitor's OpenAPI document."""
    return document_routes(
        _router().routes,
        title="Flywheel monitor",
        version="0.1.0",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
    )
