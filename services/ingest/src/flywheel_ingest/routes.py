"""Ingest's HTTP routes: records and labels in (behind the bearer guard), datasets out.

Each route is a module-level function taking the app's :class:`~.runtime.Runtime` as a
dependency; errors are raised as :class:`~flywheel_shared.http.ApiError` and answered by the
app's one error mapping (:func:`~flywheel_shared.http.install_api_errors`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, cast

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from flywheel_shared.auth import ROLE_403, Role, openapi_roles, roles_note
from flywheel_shared.datasets import manifest_key, read_manifest
from flywheel_shared.events import Label
from flywheel_shared.http import (
    AUTH,
    BEARER,
    ApiError,
    json_response,
    read_body,
    request_body,
    responses,
)

from .bodies import (
    DatasetEntry,
    DatasetInfo,
    LabelsAnswer,
    LabelsBody,
    Record,
    RecordsAnswer,
    RecordsBody,
    parse_labels,
    parse_records,
    records_media_type,
)
from .contracts import ContractsUnavailable
from .runtime import Runtime
from .stats import DatasetStats, dataset_stats

log = logging.getLogger(__name__)


def runtime(request: Request) -> Runtime:
    """The app's runtime (``app.state.runtime``)."""
    return cast(Runtime, request.app.state.runtime)


AppRuntime = Annotated[Runtime, Depends(runtime)]


async def require_dataset(rt: Runtime, name: str) -> None:
    """404 for an unknown dataset; 503 when the registry is away and nothing is cached."""
    if rt.contracts.get(name) is not None:
        return
    try:
        await rt.contracts.refresh_for(name)
    except ContractsUnavailable as exc:
        raise ApiError(503, "registry_unavailable", str(exc), {"Retry-After": "5"}) from exc
    if rt.contracts.get(name) is None:
        raise ApiError(404, "unknown_dataset", f"no contract declares dataset '{name}'")


def unacknowledged(exc: BaseException, timeout_s: float) -> ApiError:
    """The 503 for a publish Kafka did not acknowledge in time."""
    log.warning("publish failed", extra={"error": f"{type(exc).__name__}: {exc}"})
    # Unacknowledged is not the same as lost: the producer may still deliver what it
    # holds once Kafka is back. Records sent again under the same Idempotency-Key get the
    # same event ids, and the writer stores an event once.
    return ApiError(
        503,
        "kafka_unavailable",
        f"Kafka did not acknowledge within {timeout_s:g} s; retry with the"
        " same Idempotency-Key (records under one key are stored once)",
        {"Retry-After": "1"},
    )


# -- writes ------------------------------------------------------------------------------


async def post_records(name: str, request: Request, rt: AppRuntime) -> Response:
    """Validate a JSON array (or NDJSON body) of records and publish them.

    Answers after Kafka acknowledged: 202 with counts and, for each refused record, its
    index and field errors; 422 when every record was refused.
    """
    ctype = records_media_type(request.headers.get("content-type", ""))
    await require_dataset(rt, name)
    settings = rt.settings
    records = parse_records(await read_body(request, settings.max_body_bytes), ctype)
    if not rt.producer.started:
        raise ApiError(503, "not_ready", "not connected to Kafka yet, retry", {"Retry-After": "1"})
    try:
        result = await asyncio.wait_for(
            rt.plane.submit(
                name,
                records,
                path="http",
                source=request.headers.get("x-flywheel-source"),
                idempotency_key=request.headers.get("idempotency-key"),
            ),
            settings.publish_timeout_s,
        )
    except (TimeoutError, KafkaError, OSError) as exc:
        raise unacknowledged(exc, settings.publish_timeout_s) from exc
    body = {
        "dataset": name,
        "accepted": result.accepted,
        "rejected": len(result.rejections),
        "rejections": [r.model_dump(exclude={"record"}) for r in result.rejections],
    }
    return json_response(202 if result.accepted else 422, body)


async def post_labels(name: str, request: Request, rt: AppRuntime) -> Response:
    """Late labels: ``[{"record_id" or "prediction_id": ..., "label": ...}]``."""
    settings = rt.settings
    labels = parse_labels(await read_body(request, settings.max_body_bytes))
    await require_dataset(rt, name)
    try:
        n = await asyncio.wait_for(rt.plane.submit_labels(name, labels), settings.publish_timeout_s)
    except ValueError as exc:
        raise ApiError(422, "invalid_labels", str(exc)) from exc
    except (TimeoutError, KafkaError, OSError) as exc:
        raise unacknowledged(exc, settings.publish_timeout_s) from exc
    return json_response(202, {"dataset": name, "accepted": n})


def writes_router(guard: Callable[..., Any], *, guarded: bool, max_body_bytes: int) -> APIRouter:
    """The record and label routes behind ``guard`` (it checks the ``service`` role);
    ``guarded`` (a token is set) documents their 401/403 and bearer security,
    ``max_body_bytes`` their body limit."""
    router = APIRouter(dependencies=[Depends(guard)])
    auth = AUTH if guarded else ()  # the guard answers 401/403 only when there is a token
    security: dict[str, Any] = {**BEARER, **openapi_roles([Role.SERVICE])} if guarded else {}
    denied = {403: f"{ROLE_403}. {roles_note([Role.SERVICE])}"}
    router.add_api_route(
        "/v1/datasets/{name}/records",
        post_records,
        methods=["POST"],
        status_code=202,
        summary="Submit records to a dataset",
        response_model=RecordsAnswer,
        responses={
            **responses(400, *auth, 404, 413, 415, 503, descriptions=denied),
            422: {"model": RecordsAnswer, "description": "Every record was refused"},
        },
        openapi_extra={
            **security,
            **request_body(
                {
                    "application/json": list[Record] | RecordsBody,
                    "application/x-ndjson": {
                        "type": "array",
                        "items": {"type": "object"},
                        "description": "one JSON record per line",
                    },
                },
                description="Records of the dataset's contract: a JSON array (or "
                '{"records": [...]}) or NDJSON (also as application/ndjson, '
                "application/jsonl, application/x-jsonlines); at most "
                f"{max_body_bytes} bytes",
            ),
        },
    )
    router.add_api_route(
        "/v1/datasets/{name}/labels",
        post_labels,
        methods=["POST"],
        status_code=202,
        summary="Submit late ground truth",
        response_model=LabelsAnswer,
        responses=responses(400, *auth, 404, 413, 422, 503, descriptions=denied),
        openapi_extra={
            **security,
            **request_body(
                {"application/json": list[Label] | LabelsBody | Label},
                description=f"Labels, each naming a record or a prediction; at most "
                f"{max_body_bytes} bytes",
            ),
        },
    )
    return router


# -- reads -------------------------------------------------------------------------------

reads = APIRouter()


@reads.get("/v1/datasets", summary="List datasets", response_model=list[DatasetEntry])
async def list_datasets(rt: AppRuntime) -> Response:
    """Every declared dataset with its contract."""
    return json_response(
        200,
        [
            {"name": n, "contract": c.model_dump(mode="json")}
            for n in rt.contracts.names()
            if (c := rt.contracts.get(n)) is not None
        ],
    )


@reads.get(
    "/v1/datasets/{name}",
    summary="Dataset contract and stored segments",
    response_model=DatasetInfo,
    responses=responses(404, 503),
)
async def get_dataset(name: str, rt: AppRuntime) -> Response:
    """The contract, row and segment counts, and the current snapshot id."""
    await require_dataset(rt, name)
    contract = rt.contracts.get(name)
    assert contract is not None
    manifest = await asyncio.to_thread(read_manifest, rt.store, name)
    return json_response(
        200,
        {
            "name": name,
            "contract": contract.model_dump(mode="json"),
            "rows": manifest.total_rows,
            "segments": len(manifest.segments),
            "snapshot_id": manifest.snapshot_id(),
            "manifest_uri": rt.store.uri(manifest_key(name)),
        },
    )


@reads.get(
    "/v1/datasets/{name}/stats",
    summary="Statistics of the current snapshot beside a baseline",
    response_model=DatasetStats,
    responses=responses(400, 404, 503),
)
async def get_dataset_stats(name: str, rt: AppRuntime, baseline: str | None = None) -> Response:
    """Merged per-field statistics of the snapshot a training would use now (segments past
    the contract's retention left out) and of ``baseline`` (a snapshot id; default: the
    snapshot the dataset's production model was trained on, when ingest reads the registry)."""
    await require_dataset(rt, name)
    stats = await dataset_stats(rt, name, baseline)
    return json_response(200, stats.model_dump(mode="json"))
