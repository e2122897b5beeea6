"""HTTP pieces every service shares: ``/healthz``, ``/readyz``, ``/metrics``, request metrics,
the JSON error shape ``{"detail", "code"}``, size-limited body reading, and running uvicorn."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from .settings import ServiceSettings

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


def ops_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    """Router with liveness, readiness (runs every check) and Prometheus metrics."""
    router = APIRouter(tags=["ops"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
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

    @router.get("/metrics")
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
    """Answer every :class:`ApiError` raised by a route as JSON."""

    async def handler(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return json_response(exc.status, {"detail": exc.detail, "code": exc.code}, exc.headers)

    app.add_exception_handler(ApiError, handler)


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
