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

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flywheel_shared.auth import bearer_problem
from flywheel_shared.http import EncodedSlashes

from . import binary
from .domain.oip import ProtocolError, model_metadata
from .endpoints import PID, Asgi, PredictionEndpoints
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


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _error(detail: str, code: str) -> dict[str, str]:
    return {"error": detail, "code": code}


def served_models(rt: RuntimeView) -> dict[str, LoadedModel | None]:
    """The models this worker serves (configured, else deployed) → production version."""
    manager = rt.plane.manager
    names = manager.models or sorted(manager.deployments)
    return {n: dep.production if (dep := manager.deployments.get(n)) else None for n in names}


def create_app(
    runtime: Callable[[], RuntimeView | None],
    *,
    max_body_bytes: int = 8 * 1024 * 1024,
    token: str | None = None,
) -> Starlette:
    """The transports' ASGI app; ``runtime()`` returns this worker's runtime (None: starting).
    With ``token``, predictions, inference and status need ``Authorization: Bearer <token>``
    (health and metadata stay open for probes)."""
    expected = token.encode() if token else None

    endpoints = PredictionEndpoints(runtime, max_body_bytes=max_body_bytes, token=token)

    def guarded(handler: Endpoint) -> Endpoint:
        if expected is None:
            return handler

        async def wrapped(request: Request) -> Response:
            problem = bearer_problem(request.headers.get("authorization", ""), expected, "serving")
            if problem is not None:
                return _json(
                    problem.status, {"error": problem.detail, "code": problem.code}, problem.headers
                )
            return await handler(request)

        return wrapped

    def current() -> RuntimeView:
        rt = runtime()
        if rt is None:
            raise InferenceError(503, "starting", "the service is starting, retry")
        return rt

    def errors(handler: Endpoint, *, detailed: bool) -> Endpoint:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except (InferenceError, ProtocolError) as exc:
                status = exc.status
                message = exc.message if isinstance(exc, InferenceError) else str(exc)
                body: dict[str, Any] = {"error": message}
                if detailed and isinstance(exc, InferenceError):
                    body["code"] = exc.reason
                    if exc.errors:
                        body["errors"] = exc.errors
                rid = request.headers.get("x-request-id")
                return _json(status, body, {"x-request-id": rid} if rid else None)

        return wrapped

    def version_of(request: Request) -> int | None:
        raw = request.path_params.get("version")
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise InferenceError(
                404, "unknown_version", f"version must be an integer, got {raw!r}"
            ) from None

    def model_for(request: Request) -> tuple[LoadedModel, Deployment]:
        name = request.path_params["name"]
        dep = current().plane.deployment(name)
        version = version_of(request)
        if version is not None:
            found = dep.by_version(version)
            if found is None:
                raise InferenceError(
                    404, "unknown_version", f"version {version} of '{name}' is not loaded here"
                )
            return found[0], dep
        if dep.production is None:
            raise InferenceError(503, "no_production", f"'{name}' has no production version")
        return dep.production, dep

    # -- Open Inference Protocol v2 ------------------------------------------------------

    async def server_metadata(_: Request) -> Response:
        return _json(
            200, {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": [binary.EXTENSION]}
        )

    async def live(_: Request) -> Response:
        return _json(200, {"live": True})

    async def ready(_: Request) -> Response:
        rt = runtime()
        ok = rt is not None and rt.ready()
        return _json(200 if ok else 503, {"ready": ok})

    async def metadata(request: Request) -> Response:
        model, dep = model_for(request)
        body = model_metadata(
            model.name,
            dep.versions(),
            model.features,
            model.field_types,
            model.outputs(),
        )
        return _json(200, body)

    async def model_ready(request: Request) -> Response:
        try:
            model, _ = model_for(request)
        except InferenceError as exc:
            if exc.status == 404:
                raise
            return _json(503, {"name": request.path_params["name"], "ready": False})
        return _json(200, {"name": model.name, "ready": True})

    async def status(_: Request) -> Response:
        rt = runtime()
        body = rt.status() if rt is not None else {"ready": False, "starting": True}
        return _json(200, {**body, "worker": int(PID)}, {"x-flywheel-worker": PID})

    base = base_document(auth=expected is not None, max_body_bytes=max_body_bytes)

    async def openapi(_: Request) -> Response:
        rt = runtime()
        return _json(200, document(base, served_models(rt) if rt is not None else {}))

    async def no_route(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return _json(exc.status_code, _error(str(exc.detail), code), headers)

    v2 = {"detailed": False}
    v1 = {"detailed": True}
    routes = [
        Route("/v2", errors(server_metadata, **v2), methods=["GET"]),
        Route("/v2/health/live", errors(live, **v2), methods=["GET"]),
        Route("/v2/health/ready", errors(ready, **v2), methods=["GET"]),
        Route("/v2/models/{name}", errors(metadata, **v2), methods=["GET"]),
        Route("/v2/models/{name}/ready", errors(model_ready, **v2), methods=["GET"]),
        Route("/v2/models/{name}/infer", Asgi(endpoints.infer), methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", errors(metadata, **v2), methods=["GET"]),
        Route(
            "/v2/models/{name}/versions/{version}/ready",
            errors(model_ready, **v2),
            methods=["GET"],
        ),
        Route(
            "/v2/models/{name}/versions/{version}/infer", Asgi(endpoints.infer), methods=["POST"]
        ),
        Route("/v1/models/{name}/predict", Asgi(endpoints.predict), methods=["POST"]),
        Route(
            "/v1/models/{name}/versions/{version}/predict",
            Asgi(endpoints.predict),
            methods=["POST"],
        ),
        Route("/v1/status", guarded(errors(status, **v1)), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(EncodedSlashes, error=lambda d: _error(d, "not_found"))],
        exception_handlers={404: no_route, 405: no_route},
    )
    app.state.predictions = endpoints  # the fast path's way in (fastpath.py)
    return app
