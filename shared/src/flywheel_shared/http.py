"""HTTP pieces every service shares: ``/healthz``, ``/readyz``, ``/metrics``, request metrics,
the JSON error shape ``{"detail", "code"}``, size-limited body reading, and running uvicorn.

The OpenAPI document says what each route answers: :func:`responses` declares the error
statuses a route can give with their body (:class:`ErrorBody`) and headers, :func:`request_body`
the body a route reads itself (raw and size-limited, so FastAPI cannot infer it), and
:func:`install_openapi` puts the schemas those refer to into the document's components."""

from __future__ import annotations

import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from .logging import setup_logging
from .settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)

HTTP_REQUESTS = Counter(
    "flywheel_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "flywheel_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when the dependency is fine, else a short reason."""

REF_TEMPLATE = "#/components/schemas/{model}"
# Component schemas an operation brings (request_body); install_openapi moves them.
_SCHEMAS_KEY = "x-flywheel-schemas"


class ErrorBody(BaseModel):
    """Every error answer: a sentence for people and a stable code for programs."""

    model_config = ConfigDict(extra="forbid")
    detail: str = Field(description="what went wrong and, where it helps, what to do")
    code: str = Field(description="stable machine-readable reason, e.g. unknown_model")


class Health(BaseModel):
    """``GET /healthz``: the process answers."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["ok"]


class Ready(BaseModel):
    """``GET /readyz`` when every dependency is fine."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["ready"]
    checks: list[str] = Field(description="the dependencies checked")


class NotReady(BaseModel):
    """``GET /readyz`` when a dependency is not: each failing check with its reason."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["not ready"]
    problems: dict[str, str]


AUTH = (401, 403)
"""The statuses of a route behind the bearer guard (:mod:`flywheel_shared.auth`)."""

ERROR_DESCRIPTIONS = {
    400: "The request cannot be read: unparsable body or parameters that contradict each other",
    401: "No bearer token: send `Authorization: Bearer <token>`",
    403: "The bearer token is not valid",
    404: "No such resource (or no such route)",
    405: "The route does not take this method",
    409: "The request clashes with the current state",
    413: "The request body is over the size limit",
    415: "The body's media type is not one this route reads",
    422: "The request is well-formed but not acceptable (validation failed)",
    500: "The server failed (the reason is in the body)",
    503: "A dependency is unavailable or still starting: retry after `Retry-After` seconds",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme to use: `Bearer`",
            "required": True,
            "schema": {"type": "string", "enum": ["Bearer"]},
        }
    },
    503: {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}
BEARER_SCHEME = "bearer"
BEARER: dict[str, Any] = {"security": [{BEARER_SCHEME: []}]}
"""``openapi_extra`` of a route behind the bearer guard."""


def responses(
    *codes: int,
    model: type[BaseModel] = ErrorBody,
    retry_after: bool = True,
    descriptions: Mapping[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for the error statuses a route can answer, each with ``model``
    as its body: 401 with ``WWW-Authenticate``, 503 with ``Retry-After`` (unless
    ``retry_after`` is False). ``descriptions`` replaces the generic ones per status."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "model": model,
            "description": (descriptions or {}).get(code) or ERROR_DESCRIPTIONS[code],
        }
        headers = _HEADERS.get(code)
        if headers and (code != 503 or retry_after):
            entry["headers"] = headers
        out[code] = entry
    return out


def json_schema(annotation: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON Schema of a type (a pydantic model, ``list[Model]``, …) for an OpenAPI
    document: (schema, the component schemas it refers to)."""
    schema = TypeAdapter(annotation).json_schema(ref_template=REF_TEMPLATE)
    defs = schema.pop("$defs", {})
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        name = annotation.__name__  # a model is a component of its own, named as its class
        defs[name] = schema
        schema = {"$ref": REF_TEMPLATE.format(model=name)}
    return schema, defs


def request_body(
    content: Mapping[str, Any], *, description: str = "", required: bool = True
) -> dict[str, Any]:
    """``openapi_extra`` declaring the body of a route that reads it itself (raw and
    size-limited): media type → a type (its JSON Schema is generated) or a JSON Schema
    dict. Needs :func:`install_openapi` on the app (it moves the referred schemas)."""
    media: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for media_type, annotation in content.items():
        if isinstance(annotation, dict):
            schema = annotation
        else:
            schema, defs = json_schema(annotation)
            schemas.update(defs)
        media[media_type] = {"schema": schema}
    body: dict[str, Any] = {"content": media, "required": required}
    if description:
        body["description"] = description
    return {"requestBody": body, _SCHEMAS_KEY: schemas}


def hoist_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Move the component schemas operations brought (:func:`request_body`) into
    ``components.schemas``; two different schemas under one name are a bug (ValueError)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for name, schema in operation.pop(_SCHEMAS_KEY, {}).items():
                known = components.setdefault(name, schema)
                if known != schema:
                    raise ValueError(f"two different OpenAPI schemas are named {name!r}")
            if "responses" in operation:  # in status order, success first
                operation["responses"] = dict(sorted(operation["responses"].items()))
    return document


_FASTAPI_422 = REF_TEMPLATE.format(model="HTTPValidationError")


def _own_validation_errors(document: dict[str, Any]) -> None:
    # FastAPI documents its own 422 body on every route with parameters; with
    # install_api_errors a request it refuses is answered as an ErrorBody instead.
    error_schema, _ = json_schema(ErrorBody)
    used = False
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            answer = operation.get("responses", {}).get("422")
            media = (answer or {}).get("content", {}).get("application/json", {})
            if media.get("schema") == {"$ref": _FASTAPI_422}:
                answer["description"] = ERROR_DESCRIPTIONS[422]
                media["schema"] = {"$ref": REF_TEMPLATE.format(model="ErrorBody")}
                used = True
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if used:
        schemas.setdefault("ErrorBody", error_schema)
    if _FASTAPI_422 not in orjson.dumps(document.get("paths", {})).decode():
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def install_openapi(app: FastAPI, *, bearer: bool = False) -> None:
    """Complete the app's OpenAPI document: the schemas of :func:`request_body`, the 422
    body of :func:`install_api_errors` in place of FastAPI's, and, with ``bearer``, the
    bearer security scheme that :data:`BEARER` routes name."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = hoist_schemas(build())
            _own_validation_errors(document)
            if bearer:
                document["components"].setdefault("securitySchemes", {})[BEARER_SCHEME] = {
                    "type": "http",
                    "scheme": "bearer",
                }
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def endpoint_stub(**params: type) -> Callable[..., None]:
    """A documentation-only endpoint taking these path parameters, for
    :func:`document_routes` (never called)."""

    def endpoint(**_: Any) -> None:  # pragma: no cover -- never called
        raise NotImplementedError

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=t)
            for n, t in params.items()
        ]
    )
    return endpoint


def document_routes(
    routes: Sequence[BaseRoute],
    *,
    title: str,
    version: str,
    description: str = "",
    tags: list[dict[str, Any]] | None = None,
    bearer: bool = False,
) -> dict[str, Any]:
    """The OpenAPI document of an HTTP API that FastAPI does not serve (serving's Starlette
    app, the monitor's faust pages): FastAPI builds it from documentation-only routes (see
    :func:`endpoint_stub`) and the models of their bodies. FastAPI's 422 for parameters it
    would have validated is left out: such a service answers bad parameters itself, with the
    statuses its routes declare."""
    document = get_openapi(
        title=title, version=version, description=description, routes=routes, tags=tags
    )
    hoist_schemas(document)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            answer = operation["responses"].get("422", {})
            media = answer.get("content", {}).get("application/json", {})
            if media.get("schema") == {"$ref": _FASTAPI_422}:
                del operation["responses"]["422"]
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if bearer:
        document["components"]["securitySchemes"] = {
            BEARER_SCHEME: {"type": "http", "scheme": "bearer"}
        }
    return document


def ops_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    """Router with liveness, readiness (runs every check) and Prometheus metrics."""
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        response_model=Ready,
        summary="Readiness: every dependency is usable",
        responses=responses(
            503, model=NotReady, retry_after=False, descriptions={503: "A dependency is not"}
        ),
    )
    async def readyz() -> JSONResponse:
        problems: dict[str, str] = {}
        for name, check in checks.items():
            try:
                reason = await check()
            except Exception as exc:  # a broken check means not ready, never a 500
                reason = f"{type(exc).__name__}: {exc}"
            if reason:
                problems[name] = reason
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "checks": sorted(checks)})

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "The Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


class RequestMetrics:
    """Pure ASGI middleware: request count and latency by route template, method and status."""

    def __init__(self, app: Callable[..., Awaitable[None]], service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            labels = (self.service, scope["method"], path, str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_SECONDS.labels(*labels[:3]).observe(time.perf_counter() - started)


def _not_found(detail: str) -> dict[str, str]:
    return {"detail": detail, "code": "not_found"}


class EncodedSlashes:
    """Pure ASGI middleware: 404 for a path with an encoded slash (``%2F``).

    The server decodes the path before routing, so ``/v1/models/a%2Fversions`` would reach
    another route (here: the versions of ``a``) with another meaning, or a 405. No name of
    anything served holds a slash, so such a path names nothing: 404, before any route."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        error: Callable[[str], Mapping[str, Any]] = _not_found,
    ) -> None:
        self.app = app
        self.error = error

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw is None or b"%2f" not in raw.lower():
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(self.error("no resource has a '/' in its name"))
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class ApiError(Exception):
    """An error answered to the client as ``{"detail": ..., "code": ...}``."""

    def __init__(
        self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def install_api_errors(app: FastAPI) -> None:
    """Answer every :class:`ApiError` raised by a route as JSON, and in the same shape the
    requests FastAPI refuses itself: 422 ``invalid_request`` for parameters that fail
    validation, 404 ``not_found`` and 405 ``method_not_allowed`` for unknown routes."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return json_response(exc.status, {"detail": exc.detail, "code": exc.code}, exc.headers)

    async def invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return json_response(422, {"detail": detail, "code": "invalid_request"})

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response(
            exc.status_code, {"detail": str(exc.detail), "code": code}, exc.headers
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_big = ApiError(413, "body_too_large", f"request body is over the limit of {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run a service's app with uvicorn (asyncio loop: steadier tail latency here)."""
    import uvicorn

    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="asyncio",
        log_config=None,
        timeout_graceful_shutdown=20,
    )


def service_app(
    service: str,
    runtime: Any,
    checks: dict[str, ReadinessCheck],
    *,
    title: str,
    description: str = "",
    bearer: bool = False,
    encoded_slashes: bool = True,
) -> FastAPI:
    """A service's FastAPI app before its own routes and errors: ``runtime`` (its
    ``lifespan`` runs the app; it is ``app.state.runtime``), the ops routes of
    :func:`ops_router` with ``checks``, :func:`install_openapi`, and the middleware:
    :class:`EncodedSlashes` (unless ``encoded_slashes`` is False) inside
    :class:`RequestMetrics`."""
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] = runtime.lifespan
    app = FastAPI(title=title, version="0.1.0", description=description, lifespan=lifespan)
    app.state.runtime = runtime
    app.include_router(ops_router(checks))
    install_openapi(app, bearer=bearer)
    if encoded_slashes:
        app.add_middleware(EncodedSlashes)
    app.add_middleware(RequestMetrics, service=service)
    return app


def run_service(service: str, settings: S, create_app: Callable[[S], FastAPI]) -> None:
    """A service's ``main``: logging, the app, uvicorn; settings unsafe to start with
    (:class:`~flywheel_shared.auth.UnsafeSettings`) are logged and exit with status 2."""
    from .auth import UnsafeSettings  # auth needs this module

    setup_logging(service, settings.log_level, json=settings.log_json)
    try:
        app = create_app(settings)
    except UnsafeSettings as exc:
        logging.getLogger(create_app.__module__).critical(str(exc))
        print(f"flywheel-{service}: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings)
