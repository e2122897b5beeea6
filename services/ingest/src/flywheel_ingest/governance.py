"""Ingest's governance routes: quarantined batches listed and released, records erased (the
changes need a token with the ``operator`` role; the audit record names it). Manifest changes
go through this process's dataset writer, which owns the manifest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from flywheel_shared.auth import ANONYMOUS, Principal, Role, openapi_roles
from flywheel_shared.datasets import Quarantine, SegmentEntry, read_manifest
from flywheel_shared.http import AUTH, BEARER, ApiError, json_response, read_body, request_body
from flywheel_shared.http import responses as error_responses

from .routes import AppRuntime, require_dataset
from .runtime import Runtime

ACTOR_HEADER = "x-flywheel-actor"
B = TypeVar("B", bound=BaseModel)
_MAX_BODY = 64 * 1024


class ReleaseBody(BaseModel):
    """Why a person lets a quarantined batch into training."""

    reason: str = Field(min_length=1, max_length=2000)


class EraseBody(BaseModel):
    """Records to erase by id, and why."""

    ids: list[str] = Field(min_length=1, max_length=10_000)
    reason: str = Field(min_length=1, max_length=2000)


class EraseAnswer(BaseModel):
    """What an erasure did (the ids are not repeated)."""

    dataset: str
    rows: int = Field(description="rows removed")
    segments: list[str] = Field(description="segments rewritten")
    snapshots: list[str] = Field(description="snapshot records now marked contains_erased")


class QuarantinedSegment(BaseModel):
    """A segment that failed its checks."""

    segment_id: str
    rows: int
    created_at: AwareDatetime
    held: bool = Field(description="still out of training snapshots (not released)")
    quarantine: Quarantine


class QuarantinedList(BaseModel):
    """``GET /v1/datasets/{name}/quarantined``."""

    dataset: str
    segments: list[QuarantinedSegment]


def actor(request: Request) -> str:
    """Who asks: the ``x-flywheel-actor`` header (else ``unknown``)."""
    return (request.headers.get(ACTOR_HEADER) or "").strip()[:200] or "unknown"


def token_name(request: Request) -> str | None:
    """The name of the request's token (set by the operator guard; None without tokens)."""
    principal: Principal = getattr(request.state, "principal", ANONYMOUS)
    return None if principal is ANONYMOUS else principal.name


def _entry(seg: SegmentEntry) -> dict[str, Any]:
    assert seg.quarantine is not None
    return QuarantinedSegment(
        segment_id=seg.segment_id,
        rows=seg.rows,
        created_at=seg.created_at,
        held=seg.quarantined,
        quarantine=seg.quarantine,
    ).model_dump(mode="json")


def _writer(rt: Runtime) -> None:
    if not rt.settings.run_writer:
        raise ApiError(
            409,
            "no_writer",
            "this ingest process does not run the dataset writer (FLYWHEEL_INGEST_RUN_WRITER):"
            " send the request to one that does",
        )


async def _body(request: Request, model: type[B], limit: int = _MAX_BODY) -> B:
    raw = await read_body(request, limit)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, "invalid_body", f"{where}: {first['msg']}") from exc


async def list_quarantined(name: str, rt: AppRuntime) -> Response:
    """Every segment of the dataset that failed its checks, held or released."""
    await require_dataset(rt, name)
    manifest = await asyncio.to_thread(read_manifest, rt.store, name)
    body = QuarantinedList(dataset=name, segments=[])
    segments = [_entry(s) for s in manifest.segments if s.quarantine is not None]
    return json_response(200, {**body.model_dump(mode="json"), "segments": segments})


async def release_segment(name: str, segment_id: str, request: Request, rt: AppRuntime) -> Response:
    """Let a quarantined segment into the next training snapshots: it is announced as new data
    (``data.batch.committed``) and the release is recorded (``data.audit``)."""
    await require_dataset(rt, name)
    _writer(rt)
    body = await _body(request, ReleaseBody)
    entry = await rt.writer.release(
        name, segment_id, actor(request), body.reason, token=token_name(request)
    )
    return json_response(200, {"dataset": name, **_entry(entry)})


async def erase_records(name: str, request: Request, rt: AppRuntime) -> Response:
    """Remove records by id from the dataset: every future snapshot lacks them, stored
    snapshot records that held them say ``contains_erased``; audited (``data.audit``)."""
    await require_dataset(rt, name)
    _writer(rt)
    body = await _body(request, EraseBody, 2 * 1024 * 1024)
    erasure = await rt.writer.erase(
        name, body.ids, actor(request), body.reason, token=token_name(request)
    )
    answer = EraseAnswer(
        dataset=name, rows=erasure.rows, segments=erasure.segments, snapshots=erasure.snapshots
    )
    return json_response(200, answer.model_dump(mode="json"))


def governance_router(
    guard: Callable[[Request], Awaitable[Principal]], *, guarded: bool
) -> APIRouter:
    """The quarantine and erasure routes: the list is a read, the changes need ``guard`` (the
    ``operator`` role), whose principal the audit record names."""

    async def operator(request: Request) -> None:
        request.state.principal = await guard(request)

    router = APIRouter()
    auth = AUTH if guarded else ()
    security: dict[str, Any] = {**BEARER, **openapi_roles([Role.OPERATOR])} if guarded else {}
    router.add_api_route(
        "/v1/datasets/{name}/quarantined",
        list_quarantined,
        methods=["GET"],
        summary="Segments that failed their batch checks",
        response_model=QuarantinedList,
        responses=error_responses(404, 503),
    )
    router.add_api_route(
        "/v1/datasets/{name}/segments/{segment_id}/release",
        release_segment,
        methods=["POST"],
        dependencies=[Depends(operator)],
        summary="Release a quarantined segment into training",
        response_model=QuarantinedSegment,
        responses=error_responses(*auth, 404, 409, 413, 422, 503),
        openapi_extra={
            **security,
            **request_body({"application/json": ReleaseBody}, description="why (audited)"),
        },
    )
    router.add_api_route(
        "/v1/datasets/{name}/erase",
        erase_records,
        methods=["POST"],
        dependencies=[Depends(operator)],
        summary="Erase records by id from the dataset",
        response_model=EraseAnswer,
        responses=error_responses(*auth, 404, 409, 413, 422, 503),
        openapi_extra={
            **security,
            **request_body({"application/json": EraseBody}, description="ids and why (audited)"),
        },
    )
    return router
