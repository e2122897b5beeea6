"""Wiring: the FastAPI app, the database, the outbox relay, the verdict consumer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import yaml
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError

from flywheel_shared.aliases import VersionStatus
from flywheel_shared.auth import bearer_guard
from flywheel_shared.http import (
    AUTH,
    BEARER,
    ApiError,
    EncodedSlashes,
    RequestMetrics,
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
from flywheel_shared.registry import (
    AliasMove,
    AliasState,
    Artifact,
    AuditEntry,
    ModelInfo,
    ModelVersion,
    VersionCreate,
)
from flywheel_shared.runtime import KafkaRuntime
from flywheel_shared.spec import DatasetContract, ModelSpec
from flywheel_shared.storage import ObjectStore

from . import migrate
from .artifacts import ArtifactStore, IntegrityFailure, is_sha256
from .db import make_engine
from .errors import install_errors
from .handlers import VerdictHandler
from .metrics import ARTIFACTS_STORED
from .relay import OutboxRelay
from .settings import RegistrySettings, UnsafeSettings
from .store import RegistryStore

log = logging.getLogger(__name__)
TOPICS_USED = ["model.version.registered", "model.alias.changed", "rollout.verdict", "deadletter"]
_YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
_READ_METHODS = {"GET", "HEAD", "OPTIONS"}
_SPEC_BYTES = 1024 * 1024
_VERSION_BYTES = 4 * 1024 * 1024
_SMALL_BYTES = 64 * 1024
_BINARY = {"type": "string", "format": "binary"}


class StatusChange(BaseModel):
    """Body of ``PATCH /v1/models/{name}/versions/{v}``."""

    model_config = ConfigDict(extra="forbid")
    status: VersionStatus
    reason: str = ""


class ReasonBody(BaseModel):
    """Body of ``POST /v1/models/{name}/rollback``."""

    model_config = ConfigDict(extra="ignore")
    reason: str = ""


Rollout = Annotated[
    bool,
    Query(
        description="a candidate takes the first alias of the model's rollout policy: production"
        " while nothing serves yet, else the spec's rollout.first_alias (the body names no"
        " first_alias then)"
    ),
]


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True)


class Runtime(KafkaRuntime):
    """The service's moving parts: database, artifact store, outbox relay, verdict consumer."""

    service = "registry"
    topics = TOPICS_USED

    def __init__(self, settings: RegistrySettings) -> None:
        super().__init__(settings.kafka)
        self.settings = settings
        self.engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        self.store = RegistryStore(self.engine)
        self.artifacts = ArtifactStore(ObjectStore(settings.storage.uri))
        self.relay = OutboxRelay(
            self.store,
            self.producer,
            enabled=settings.relay_enabled,
            poll_s=settings.relay_poll_s,
            batch=settings.relay_batch,
            crash_after_publish=settings.fault_crash_after_publish,
        )
        self.store.notify = self.relay.notify
        self._relay_started = False

    async def on_start(self) -> None:
        """Bring the database schema to the newest migration before serving anything."""
        revision = await asyncio.to_thread(migrate.upgrade, self.engine)
        log.info(
            "registry starting",
            extra={
                "database": self.engine.url.render_as_string(hide_password=True),
                "revision": revision,
                "auth": self.settings.token_value() is not None,
                "read_auth": self.settings.read_auth,
                "relay_enabled": self.settings.relay_enabled,
            },
        )

    async def on_connected(self) -> None:
        """The producer is up: start the outbox relay (once, even if connecting is retried)."""
        if not self._relay_started:
            self.relay.start()
            self._relay_started = True

    def make_consumers(self) -> list[EventConsumer]:
        """The rollout.verdict consumer (unless switched off)."""
        if not self.settings.consume_verdicts:
            return []
        return [
            EventConsumer(
                self.settings.kafka,
                ConsumerConfig(group_id=self.settings.consumer_group, topics=["rollout.verdict"]),
                VerdictHandler(self.store),
                self.producer,
            )
        ]

    async def on_shutdown(self) -> None:
        """Let the relay finish its round (the producer flushes after this)."""
        await self.relay.stop()

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """The Kafka lifecycle, then release the database connections."""
        try:
            async with super().lifespan(app):
                yield
        finally:
            await asyncio.to_thread(self.engine.dispose)

    async def kafka_ready(self) -> str | None:
        """Readiness of the Kafka link: producer, verdict consumer and outbox relay."""
        problem = await super().kafka_ready()
        return problem or self.relay.alive()

    async def database_ready(self) -> str | None:
        """Readiness of the database."""
        await asyncio.to_thread(self.store.ping)
        return None

    async def storage_ready(self) -> str | None:
        """Readiness of the artifact store."""
        await asyncio.to_thread(self.artifacts.store.list, "artifacts")
        return None


def _parse_spec(body: bytes, content_type: str) -> Any:
    if content_type in _YAML_TYPES or content_type in ("", "application/json"):
        try:
            return (
                orjson.loads(body) if content_type == "application/json" else yaml.safe_load(body)
            )
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise ApiError(400, "invalid_body", f"cannot parse the spec: {exc}") from exc
    raise ApiError(
        415, "unsupported_media_type", "send the spec as application/yaml or application/json"
    )


def _validate(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise ApiError(422, "invalid_body", _errors(exc)) from exc


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def _actor(request: Request) -> str:
    return (request.headers.get("x-flywheel-actor") or "api").strip()[:200] or "api"


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    """Build the registry app; raises ``UnsafeSettings`` for unsafe production settings."""
    settings = settings or RegistrySettings()
    settings.check()
    rt = Runtime(settings)
    app = FastAPI(
        title="Flywheel registry",
        version="0.1.0",
        description="Model specs, dataset contracts, versions, aliases, artifacts and lineage.",
        lifespan=rt.lifespan,
    )
    app.state.runtime = rt
    app.include_router(
        ops_router(
            {
                "database": rt.database_ready,
                "kafka": rt.kafka_ready,
                "storage": rt.storage_ready,
            }
        )
    )
    token = settings.token_value()

    guard = bearer_guard(token, "registry")

    def authorize(request: Request) -> None:
        """Bearer token on writes (and on reads with read_auth), when a token is set."""
        if request.method in _READ_METHODS and not settings.read_auth:
            return
        guard(request)

    api = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])
    store = rt.store

    # What each route can answer besides success. Every route reads the database (503 while
    # it is away); names in the path may name nothing (404). The guard answers 401/403 on
    # writes when there is a token, and on reads too with read_auth.
    write_auth = AUTH if token else ()
    read_auth = AUTH if token and settings.read_auth else ()

    def read(*codes: int, named: bool = True) -> dict[str, Any]:
        return {
            "responses": responses(*read_auth, *((404,) if named else ()), *codes, 503),
            "openapi_extra": BEARER if read_auth else None,
        }

    def write(*codes: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "responses": responses(*write_auth, 404, *codes, 503),
            "openapi_extra": {**(BEARER if write_auth else {}), **(body or {})},
        }

    def created(model: Any, what: str) -> dict[int | str, dict[str, Any]]:
        return {201: {"model": model, "description": f"{what} created"}}

    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- specs and contracts --------------------------------------------------------------

    spec_doc = write(
        400,
        413,
        415,
        422,
        body=request_body(
            {"application/json": ModelSpec, "application/yaml": ModelSpec},
            description=f"The spec (YAML or JSON, at most {_SPEC_BYTES} bytes), named as in"
            " the URL",
        ),
    )
    spec_doc["responses"] = {**created(ModelInfo, "Model"), **spec_doc["responses"]}

    @api.put(
        "/models/{name}/spec",
        summary="Create or update a model spec",
        response_model=ModelInfo,
        **spec_doc,
    )
    async def put_spec(name: str, request: Request) -> Response:
        """Body: the spec as YAML (``application/yaml``) or JSON; validated as a ModelSpec.
        201 for a new model, 200 for an update."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        data = _parse_spec(await read_body(request, _SPEC_BYTES), ctype)
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_spec", "a spec must be a mapping")
        if data.get("name") != name:
            raise ApiError(
                400,
                "name_mismatch",
                f"the spec is named {data.get('name')!r} but the URL says {name!r}",
            )
        try:
            spec = ModelSpec.model_validate(data)
        except ValidationError as exc:
            raise ApiError(422, "invalid_spec", f"invalid spec: {_errors(exc)}") from exc
        info, created = await run(store.put_spec, spec)
        return json_response(201 if created else 200, _dump(info))

    @api.get("/models", summary="List models", response_model=list[ModelInfo], **read(named=False))
    async def list_models() -> Response:
        """Every model with its aliases (specs left out)."""
        return json_response(200, [_dump(m) for m in await run(store.list_models)])

    @api.get(
        "/models/{name}",
        summary="A model, its spec and aliases",
        response_model=ModelInfo,
        **read(),
    )
    async def get_model(name: str) -> Response:
        """One model."""
        return json_response(200, _dump(await run(store.get_model, name)))

    @api.get("/models/{name}/spec", summary="A model's spec", response_model=ModelSpec, **read())
    async def get_spec(name: str) -> Response:
        """The spec as JSON."""
        return json_response(200, await run(store.get_spec, name))

    @api.get(
        "/datasets",
        summary="Every dataset contract",
        response_model=list[DatasetContract],
        **read(named=False),
    )
    async def list_contracts() -> Response:
        """Contracts declared by the stored specs."""
        return json_response(200, [_dump(c) for c in await run(store.list_contracts)])

    @api.get(
        "/datasets/{dataset}/contract",
        summary="A dataset's contract",
        response_model=DatasetContract,
        **read(),
    )
    async def get_contract(dataset: str) -> Response:
        """The contract of ``dataset``."""
        return json_response(200, _dump(await run(store.get_contract, dataset)))

    # -- artifacts ------------------------------------------------------------------------

    artifact_doc = write(
        400,
        413,
        body={
            **request_body(
                {"application/octet-stream": _BINARY},
                description=f"The artifact's bytes (at most {settings.max_artifact_bytes})",
            ),
            "parameters": [
                {
                    "name": "x-sha256",
                    "in": "header",
                    "required": False,
                    "description": "the sha256 the client computed: checked against the body",
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                }
            ],
        },
    )
    artifact_doc["responses"] = {**created(Artifact, "Artifact"), **artifact_doc["responses"]}
    artifact_doc["responses"].pop(404)  # a path without names

    @api.post(
        "/artifacts",
        summary="Store an artifact (raw bytes)",
        response_model=Artifact,
        **artifact_doc,
    )
    async def post_artifact(request: Request) -> Response:
        """Content-addressed: answers ``{sha256, size, uri}``; ``x-sha256`` is checked."""
        data = await read_body(request, settings.max_artifact_bytes)
        digest = await run(lambda: hashlib.sha256(data).hexdigest())
        claimed = request.headers.get("x-sha256", "").strip().lower()
        if claimed and claimed != digest:
            raise ApiError(
                400, "hash_mismatch", f"body hashes to {digest}, x-sha256 says {claimed}"
            )
        uri, written = await run(rt.artifacts.put, data, digest)
        artifact, created = await run(store.record_artifact, digest, len(data), uri)
        ARTIFACTS_STORED.labels("new" if created else "existing").inc()
        if written and not created:
            log.warning(
                "artifact bytes rewritten (were missing or damaged)", extra={"sha256": digest}
            )
        return json_response(201 if created else 200, _dump(artifact))

    bytes_doc = read(400, 500)
    bytes_doc["responses"][200] = {
        "description": "The artifact's bytes",
        "content": {"application/octet-stream": {"schema": _BINARY}},
    }

    @api.get(
        "/artifacts/{sha256}",
        summary="Fetch an artifact (hash checked)",
        response_class=Response,  # bytes; the errors stay JSON
        **bytes_doc,
    )
    async def get_artifact(sha256: str) -> Response:
        """The artifact's bytes; 500 ``integrity_error`` if they no longer match the hash."""
        if not is_sha256(sha256):
            raise ApiError(400, "invalid_sha256", "artifacts are named by a lower-case hex sha256")
        await run(store.get_artifact, sha256)
        try:
            data = await run(rt.artifacts.get, sha256)
        except IntegrityFailure as exc:
            log.error(
                "artifact integrity check failed", extra={"sha256": sha256, "error": str(exc)}
            )
            raise ApiError(500, "integrity_error", str(exc)) from exc
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"x-sha256": sha256, "etag": f'"{sha256}"'},
        )

    # -- versions -------------------------------------------------------------------------

    version_doc = write(
        413,
        422,
        body=request_body(
            {"application/json": VersionCreate},
            description=f"The version (at most {_VERSION_BYTES} bytes)",
        ),
    )
    version_doc["responses"] = {**created(ModelVersion, "Version"), **version_doc["responses"]}

    @api.post(
        "/models/{name}/versions",
        summary="Register a version (idempotent by run_id)",
        response_model=ModelVersion,
        **version_doc,
    )
    async def register_version(name: str, request: Request, rollout: Rollout = False) -> Response:
        """201 with the new version, or 200 with the one this ``run_id`` registered before."""
        body = _validate(VersionCreate, await read_body(request, _VERSION_BYTES))
        version, created = await run(
            store.register_version, name, body, actor=_actor(request), rollout=rollout
        )
        return json_response(201 if created else 200, _dump(version))

    @api.get(
        "/models/{name}/versions",
        summary="List versions, oldest first",
        response_model=list[ModelVersion],
        **read(),
    )
    async def list_versions(name: str) -> Response:
        """Every version of a model."""
        return json_response(200, [_dump(v) for v in await run(store.list_versions, name)])

    @api.get(
        "/models/{name}/versions/{version}",
        summary="One version",
        response_model=ModelVersion,
        **read(422),
    )
    async def get_version(name: str, version: int) -> Response:
        """A version with its metrics and lineage."""
        return json_response(200, _dump(await run(store.get_version, name, version)))

    @api.patch(
        "/models/{name}/versions/{version}",
        summary="Change a version's status",
        response_model=ModelVersion,
        **write(409, 413, 422, body=request_body({"application/json": StatusChange})),
    )
    async def patch_version(name: str, version: int, request: Request) -> Response:
        """``{"status": "archived", "reason": ...}``; 409 while an alias points at it."""
        body = _validate(StatusChange, await read_body(request, _SMALL_BYTES))
        result = await run(store.set_status, name, version, body.status, body.reason)
        return json_response(200, _dump(result))

    # -- aliases --------------------------------------------------------------------------

    @api.put(
        "/models/{name}/aliases/{alias}",
        summary="Move an alias",
        response_model=AliasState,
        **write(400, 409, 413, 422, body=request_body({"application/json": AliasMove})),
    )
    async def put_alias(name: str, alias: str, request: Request) -> Response:
        """Point ``alias`` at a version (audited, announced on model.alias.changed); 400 for
        an alias that is not production, canary or shadow, 409 for a version not servable."""
        move = _validate(AliasMove, await read_body(request, _SMALL_BYTES))
        state = await run(
            store.move_alias,
            name,
            alias,
            move.version,
            weight=move.weight,
            reason=move.reason,
            actor=_actor(request),
        )
        return json_response(200, _dump(state))

    @api.delete(
        "/models/{name}/aliases/{alias}",
        summary="Remove an alias",
        status_code=204,
        **write(400),
    )
    async def delete_alias(name: str, alias: str, request: Request, reason: str = "") -> Response:
        """Remove ``alias`` (audited, announced with ``version: null``)."""
        await run(store.remove_alias, name, alias, reason=reason, actor=_actor(request))
        return Response(status_code=204)

    @api.post(
        "/models/{name}/rollback",
        summary="Production back to its previous version",
        response_model=AliasState,
        **write(409, 413, 422, body=request_body({"application/json": ReasonBody}, required=False)),
    )
    async def rollback(name: str, request: Request) -> Response:
        """409 ``no_previous_version`` when production has nothing to go back to."""
        body = _validate(ReasonBody, await read_body(request, _SMALL_BYTES))
        state = await run(store.rollback, name, reason=body.reason, actor=_actor(request))
        return json_response(200, _dump(state))

    @api.get(
        "/models/{name}/history",
        summary="Alias audit log, newest first",
        response_model=list[AuditEntry],
        **read(),
    )
    async def history(name: str) -> Response:
        """Every alias change of a model."""
        return json_response(200, [_dump(e) for e in await run(store.history, name)])

    app.include_router(api)

    # -- errors ---------------------------------------------------------------------------

    install_errors(app)
    install_openapi(app, bearer=token is not None)

    app.add_middleware(EncodedSlashes)
    app.add_middleware(RequestMetrics, service="registry")
    return app


def main() -> None:
    """Run the registry (``python -m flywheel_registry``)."""
    settings = RegistrySettings()
    setup_logging("registry", settings.log_level, json=settings.log_json)
    try:
        app = create_app(settings)
    except UnsafeSettings as exc:
        log.critical(str(exc))
        print(f"flywheel-registry: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings)


def migrate_main() -> None:
    """Apply the database migrations and exit (``python -m flywheel_registry migrate``)."""
    settings = RegistrySettings()
    setup_logging("registry", settings.log_level, json=settings.log_json)
    engine = make_engine(settings.database_url)
    try:
        revision = migrate.upgrade(engine)
    finally:
        engine.dispose()
    print(f"registry database at revision {revision}")
