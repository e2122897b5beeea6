"""HTTP transports over the data plane: Open Inference Protocol v2 REST (JSON, or binary
tensors with Triton's binary tensor data extension, ``binary.py``) and a plain JSON route.

A small Starlette app, mounted into the BentoML service (``bentoml.asgi_app``); BentoML
keeps ``/healthz``, ``/livez``, ``/readyz``, ``/metrics`` and its ``/docs.json``. Every answer
carries the request id (``x-request-id``, generated when the client sent none) and the version
that answered (``x-flywheel-model-version`` and in the body). ``/openapi.json`` describes
these routes (``openapi.py``) for the models this worker serves. The prediction and
inference ``POST`` routes are plain ASGI handlers (``endpoints.py``), mounted here and called
directly by the fast path (``fastpath.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from flywheel_shared.auth import bearer_problem
from flywheel_shared.http import EncodedSlashes, json_response

from . import binary
from .domain.oip import ProtocolError, model_metadata
from .endpoints import PID, Asgi, PredictionEndpoints, error_body
from .models import Deployment, LoadedModel
from .openapi import base_document, document
from .plane import DataPlane, InferenceError

SERVER_NAME = "flywheel-serving"
SERVER_VERSION = "0.1.0"
Endpoint = Callable[[Request], Awaitable[Response]]


class RuntimeView(Protocol):
    """What the transports need from the worker's runtime."""

    plane: DataPlane

    def ready(self) -> bool:
        """Ready to serve."""
        ...

    def status(self) -> dict[str, Any]:
        """Worker status (models, links, log)."""
        ...


def create_app(
    runtime: Callable[[], RuntimeView | None],
    *,
    max_body_bytes: int = 8 * 1024 * 1024,
    token: str | None = None,
) -> Starlette:
    """The transports' ASGI app; ``runtime()`` returns this worker's runtime (None: starting).
    With ``token``, predictions, inference and status need ``Authorization: Bearer <token>``
    (health and metadata stay open for probes)."""
    endpoints = PredictionEndpoints(runtime, max_body_bytes=max_body_bytes, token=token)
    app = Starlette(
        routes=_routes(endpoints),
        middleware=[Middleware(EncodedSlashes, error=lambda d: _error(d, "not_found"))],
        exception_handlers={404: _no_route, 405: _no_route},
    )
    app.state.runtime = runtime
    app.state.token = token.encode() if token else None
    app.state.openapi_base = base_document(auth=token is not None, max_body_bytes=max_body_bytes)
    app.state.predictions = endpoints  # the fast path's way in (fastpath.py)
    return app


def _routes(endpoints: PredictionEndpoints) -> list[BaseRoute]:
    v2 = {"detailed": False}
    v1 = {"detailed": True}
    infer, predict = Asgi(endpoints.infer), Asgi(endpoints.predict)
    return [
        Route("/v2", _errors(server_metadata, **v2), methods=["GET"]),
        Route("/v2/health/live", _errors(live, **v2), methods=["GET"]),
        Route("/v2/health/ready", _errors(ready, **v2), methods=["GET"]),
        Route("/v2/models/{name}", _errors(metadata, **v2), methods=["GET"]),
        Route("/v2/models/{name}/ready", _errors(model_ready, **v2), methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", _errors(metadata, **v2), methods=["GET"]),
        Route(
            "/v2/models/{name}/versions/{version}/ready",
            _errors(model_ready, **v2),
            methods=["GET"],
        ),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v1/models/{name}/predict", predict, methods=["POST"]),
        Route("/v1/models/{name}/versions/{version}/predict", predict, methods=["POST"]),
        Route("/v1/status", _guarded(_errors(status, **v1)), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


# -- the routes ------------------------------------------------------------------------------


async def server_metadata(_: Request) -> Response:
    """OIP server metadata."""
    return json_response(
        200, {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": [binary.EXTENSION]}
    )


async def live(_: Request) -> Response:
    """OIP liveness."""
    return json_response(200, {"live": True})


async def ready(request: Request) -> Response:
    """OIP readiness: the worker's models loaded."""
    rt = _runtime(request)
    ok = rt is not None and rt.ready()
    return json_response(200 if ok else 503, {"ready": ok})


async def metadata(request: Request) -> Response:
    """OIP model metadata: inputs from the dataset contract, the versions loaded."""
    model, dep = _model_for(request)
    body = model_metadata(
        model.name, dep.versions(), model.features, model.field_types, model.outputs()
    )
    return json_response(200, body)


async def model_ready(request: Request) -> Response:
    """OIP model readiness (404 for a version this worker does not have)."""
    try:
        model, _ = _model_for(request)
    except InferenceError as exc:
        if exc.status == 404:
            raise
        return json_response(503, {"name": request.path_params["name"], "ready": False})
    return json_response(200, {"name": model.name, "ready": True})


async def status(request: Request) -> Response:
    """The answering worker's deployments, links and prediction-log counters."""
    rt = _runtime(request)
    body = rt.status() if rt is not None else {"ready": False, "starting": True}
    return json_response(200, {**body, "worker": int(PID)}, {"x-flywheel-worker": PID})


async def openapi(request: Request) -> Response:
    """The OpenAPI document for the models this worker serves."""
    rt = _runtime(request)
    served = served_models(rt) if rt is not None else {}
    return json_response(200, document(request.app.state.openapi_base, served))


def served_models(rt: RuntimeView) -> dict[str, LoadedModel | None]:
    """The models this worker serves (configured, else deployed) → production version."""
    manager = rt.plane.manager
    names = manager.models or sorted(manager.deployments)
    return {n: dep.production if (dep := manager.deployments.get(n)) else None for n in names}


# -- parts -----------------------------------------------------------------------------------


def _error(detail: str, code: str) -> dict[str, str]:
    return {"error": detail, "code": code}


def _runtime(request: Request) -> RuntimeView | None:
    runtime: Callable[[], RuntimeView | None] = request.app.state.runtime
    return runtime()


def _model_for(request: Request) -> tuple[LoadedModel, Deployment]:
    """The model version a metadata route names (production when it names none)."""
    rt = _runtime(request)
    if rt is None:
        raise InferenceError(503, "starting", "the service is starting, retry")
    name = request.path_params["name"]
    dep = rt.plane.deployment(name)
    raw = request.path_params.get("version")
    if raw is None:
        if dep.production is None:
            raise InferenceError(503, "no_production", f"'{name}' has no production version")
        return dep.production, dep
    try:
        version = int(raw)
    except ValueError:
        raise InferenceError(
            404, "unknown_version", f"version must be an integer, got {raw!r}"
        ) from None
    found = dep.by_version(version)
    if found is None:
        raise InferenceError(
            404, "unknown_version", f"version {version} of '{name}' is not loaded here"
        )
    return found[0], dep


def _errors(handler: Endpoint, *, detailed: bool) -> Endpoint:
    """The one error mapping: ``{"error"}`` (OIP), plus ``code`` and ``errors`` on ``/v1``."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except (InferenceError, ProtocolError) as exc:
            rid = request.headers.get("x-request-id")
            body = error_body(exc, detailed=detailed)
            return json_response(exc.status, body, {"x-request-id": rid} if rid else None)

    return wrapped


def _guarded(handler: Endpoint) -> Endpoint:
    """``handler`` behind the bearer token, when the app has one."""

    async def wrapped(request: Request) -> Response:
        expected: bytes | None = request.app.state.token
        if expected is not None:
            header = request.headers.get("authorization", "")
            problem = bearer_problem(header, expected, "serving")
            if problem is not None:
                body = {"error": problem.detail, "code": problem.code}
                return json_response(problem.status, body, problem.headers)
        return await handler(request)

    return wrapped


async def _no_route(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return json_response(exc.status_code, _error(str(exc.detail), code), headers)
