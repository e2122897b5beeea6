"""Wiring: the FastAPI app, its Kafka producer and consumers, and their lifecycle."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from flywheel_shared.auth import UnsafeSettings, bearer_guard, read_secret, require_token
from flywheel_shared.datasets import manifest_key, read_manifest
from flywheel_shared.events import FieldError, Label, remember_encoded
from flywheel_shared.http import (
    AUTH,
    BEARER,
    ApiError,
    EncodedSlashes,
    RequestMetrics,
    install_api_errors,
    install_openapi,
    json_response,
    ops_router,
    read_body,
    request_body,
    responses,
    serve,
)
from flywheel_shared.kafka.consumer import ConsumerConfig, EventConsumer
from flywheel_shared.logging import setup_logging
from flywheel_shared.registry import RegistryClient
from flywheel_shared.runtime import KafkaRuntime
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore

from .contracts import ContractSource, ContractsUnavailable, RegistryContracts, load_spec_files
from .handlers import IngestService
from .settings import IngestSettings
from .writer import DatasetWriter

log = logging.getLogger(__name__)
TOPICS_USED = [
    "data.raw",
    "data.validated",
    "data.rejected",
    "data.batch.committed",
    "data.labels",
    "deadletter",
]
_LABELS = TypeAdapter(list[Label])
_JSON_TYPES = {"application/json"}
_NDJSON_TYPES = {
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
}


Record = dict[str, Any]


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


class Runtime(KafkaRuntime):
    """Ingest's moving parts: the data plane, the dataset writer and their consumers."""

    service = "ingest"
    topics = TOPICS_USED

    def __init__(self, settings: IngestSettings, contracts: ContractSource) -> None:
        super().__init__(settings.kafka)
        self.settings = settings
        self.contracts = contracts
        self.store = ObjectStore(settings.storage.uri)
        self.plane = IngestService(
            contracts,
            self.producer,
            chunk_records=settings.chunk_records,
            keep_rejected_records=settings.keep_rejected_records,
        )
        self.writer = DatasetWriter(
            self.store,
            contracts,
            self.producer,
            max_rows=settings.segment_rows,
            max_age_s=settings.segment_seconds,
            vouched=self.plane.vouched,
        )
        if settings.run_writer:
            # The writer reads back what this process publishes: the data.validated events it
            # encoded are handed back as they are when the bytes match (no second decode).
            remember_encoded(128)

    async def on_start(self) -> None:
        """Keep registry contracts fresh for the life of the service."""
        if isinstance(self.contracts, RegistryContracts):
            c = self.contracts
            self.spawn("contracts-refresh", c.refresh, every_s=c.refresh_s)

    async def on_connected(self) -> None:
        """Announce segments a crash left unannounced before consuming anything new."""
        if isinstance(self.contracts, RegistryContracts):
            await self.contracts.refresh()
        if self.settings.run_writer:
            await self.writer.start()

    def make_consumers(self) -> list[EventConsumer]:
        """The data.raw validator and the data.validated writer (each can be switched off)."""
        s, out = self.settings, []
        if s.run_raw_consumer:
            out.append(
                EventConsumer(
                    s.kafka,
                    ConsumerConfig(group_id="flywheel-ingest-raw", topics=["data.raw"]),
                    self.plane.on_raw,
                    self.producer,
                )
            )
        if s.run_writer:
            out.append(
                EventConsumer(
                    s.kafka,
                    ConsumerConfig(group_id="flywheel-ingest-writer", topics=["data.validated"]),
                    self.writer.handle,
                    self.producer,
                    processed=self.writer,
                    commit_barrier=self.writer.barrier,
                    on_revoked=self.writer.on_revoked,
                    on_tick=self.writer.tick,
                    drain=self.writer.flush,
                )
            )
        return out

    async def contracts_ready(self) -> str | None:
        """Readiness: contracts can be served (cached ones count while the registry is away)."""
        c = self.contracts
        if isinstance(c, RegistryContracts) and not c.names() and c.last_error:
            return f"no contracts: {c.last_error}"
        return None

    async def storage_ready(self) -> str | None:
        """Readiness check of the dataset store."""
        await asyncio.to_thread(self.store.list, "datasets")
        return None


def _parse_records(body: bytes, content_type: str) -> list[Any]:
    if content_type in _JSON_TYPES:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("records"), list):
            data = data["records"]
        if not isinstance(data, list):
            raise ApiError(
                400, "not_an_array", 'body must be a JSON array of records (or {"records": [...]})'
            )
        return data
    records = []
    for n, line in enumerate(body.splitlines(), start=1):
        if line.strip():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, "invalid_json", f"line {n} is not valid JSON: {exc}") from exc
    return records


def create_app(
    settings: IngestSettings | None = None, contracts: ContractSource | None = None
) -> FastAPI:
    """Build the ingest app (contracts default to the spec files named in settings); raises
    ``UnsafeSettings`` for production without a token."""
    settings = settings or IngestSettings()
    token = read_secret(settings.token, settings.token_file)
    require_token(
        token,
        environment=settings.environment,
        variable="FLYWHEEL_INGEST_TOKEN",
        what="record and label writes",
    )
    writes = [Depends(bearer_guard(token, "ingest"))]
    auth = AUTH if token else ()  # the guard answers 401/403 only when there is a token
    guarded = BEARER if token else {}
    if contracts is None:
        if settings.registry_url:
            client = RegistryClient(settings.registry_url, settings.registry_token, actor="ingest")
            contracts = RegistryContracts(client, refresh_s=settings.contracts_refresh_s)
        else:
            contracts = load_spec_files(settings.specs)
    rt = Runtime(settings, contracts)
    app = FastAPI(
        title="Flywheel ingest",
        version="0.1.0",
        description="Validates data events against their dataset contract and stores them.",
        lifespan=rt.lifespan,
    )
    app.state.runtime = rt
    app.include_router(
        ops_router(
            {"kafka": rt.kafka_ready, "storage": rt.storage_ready, "contracts": rt.contracts_ready}
        )
    )

    install_api_errors(app)
    install_openapi(app, bearer=token is not None)

    def _unavailable(exc: BaseException) -> ApiError:
        log.warning("publish failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        # Unacknowledged is not the same as lost: the producer may still deliver what it
        # holds once Kafka is back. Records sent again under the same Idempotency-Key get the
        # same event ids, and the writer stores an event once.
        return ApiError(
            503,
            "kafka_unavailable",
            f"Kafka did not acknowledge within {settings.publish_timeout_s:g} s; retry with the"
            " same Idempotency-Key (records under one key are stored once)",
            {"Retry-After": "1"},
        )

    async def require_dataset(name: str) -> None:
        """404 for an unknown dataset; 503 when the registry is away and nothing is cached."""
        if rt.contracts.get(name) is not None:
            return
        try:
            await rt.contracts.refresh_for(name)
        except ContractsUnavailable as exc:
            raise ApiError(503, "registry_unavailable", str(exc), {"Retry-After": "5"}) from exc
        if rt.contracts.get(name) is None:
            raise ApiError(404, "unknown_dataset", f"no contract declares dataset '{name}'")

    @app.post(
        "/v1/datasets/{name}/records",
        status_code=202,
        summary="Submit records to a dataset",
        dependencies=writes,
        response_model=RecordsAnswer,
        responses={
            **responses(400, *auth, 404, 413, 415, 503),
            422: {"model": RecordsAnswer, "description": "Every record was refused"},
        },
        openapi_extra={
            **guarded,
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
                f"{settings.max_body_bytes} bytes",
            ),
        },
    )
    async def post_records(name: str, request: Request) -> Response:
        """Validate a JSON array (or NDJSON body) of records and publish them.

        Answers after Kafka acknowledged: 202 with counts and, for each refused record, its
        index and field errors; 422 when every record was refused.
        """
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in _JSON_TYPES and ctype not in _NDJSON_TYPES:
            raise ApiError(
                415,
                "unsupported_media_type",
                "send application/json (an array) or application/x-ndjson",
            )
        await require_dataset(name)
        records = _parse_records(await read_body(request, settings.max_body_bytes), ctype)
        if not records:
            raise ApiError(400, "empty", "no records in the body")
        if not rt.producer.started:
            raise ApiError(
                503, "not_ready", "not connected to Kafka yet, retry", {"Retry-After": "1"}
            )
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
            raise _unavailable(exc) from exc
        body = {
            "dataset": name,
            "accepted": result.accepted,
            "rejected": len(result.rejections),
            "rejections": [r.model_dump(exclude={"record"}) for r in result.rejections],
        }
        return json_response(202 if result.accepted else 422, body)

    @app.post(
        "/v1/datasets/{name}/labels",
        status_code=202,
        summary="Submit late ground truth",
        dependencies=writes,
        response_model=LabelsAnswer,
        responses=responses(400, *auth, 404, 413, 422, 503),
        openapi_extra={
            **guarded,
            **request_body(
                {"application/json": list[Label] | LabelsBody | Label},
                description=f"Labels, each naming a record or a prediction; at most "
                f"{settings.max_body_bytes} bytes",
            ),
        },
    )
    async def post_labels(name: str, request: Request) -> Response:
        """Late labels: ``[{"record_id" or "prediction_id": ..., "label": ...}]``."""
        body = await read_body(request, settings.max_body_bytes)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("labels", [data])
        try:
            labels = _LABELS.validate_python(data)
        except ValidationError as exc:
            raise ApiError(422, "invalid_labels", str(exc)) from exc
        if not labels:
            raise ApiError(400, "empty", "no labels in the body")
        await require_dataset(name)
        try:
            n = await asyncio.wait_for(
                rt.plane.submit_labels(name, labels), settings.publish_timeout_s
            )
        except ValueError as exc:
            raise ApiError(422, "invalid_labels", str(exc)) from exc
        except (TimeoutError, KafkaError, OSError) as exc:
            raise _unavailable(exc) from exc
        return json_response(202, {"dataset": name, "accepted": n})

    @app.get("/v1/datasets", summary="List datasets", response_model=list[DatasetEntry])
    async def list_datasets() -> Response:
        """Every declared dataset with its contract."""
        return json_response(
            200,
            [
                {"name": n, "contract": c.model_dump(mode="json")}
                for n in rt.contracts.names()
                if (c := rt.contracts.get(n)) is not None
            ],
        )

    @app.get(
        "/v1/datasets/{name}",
        summary="Dataset contract and stored segments",
        response_model=DatasetInfo,
        responses=responses(404, 503),
    )
    async def get_dataset(name: str) -> Response:
        """The contract, row and segment counts, and the current snapshot id."""
        await require_dataset(name)
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

    app.add_middleware(EncodedSlashes)
    app.add_middleware(RequestMetrics, service="ingest")
    return app


def main() -> None:
    """Run the ingest service (``python -m flywheel_ingest``)."""
    settings = IngestSettings()
    setup_logging("ingest", settings.log_level, json=settings.log_json)
    try:
        app = create_app(settings)
    except UnsafeSettings as exc:
        log.critical(str(exc))
        print(f"flywheel-ingest: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings)
