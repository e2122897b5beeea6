"""Wiring: the FastAPI app of ingest (routes in :mod:`.routes`, the Kafka producer, consumers
and their lifecycle in :mod:`.runtime`), and ``main``."""

from __future__ import annotations

import logging
import sys

from fastapi import FastAPI

from flywheel_shared.auth import UnsafeSettings, bearer_guard, read_secret, require_token
from flywheel_shared.http import (
    EncodedSlashes,
    RequestMetrics,
    install_api_errors,
    install_openapi,
    ops_router,
    serve,
)
from flywheel_shared.logging import setup_logging

from .contracts import ContractSource, contract_source
from .routes import reads, writes_router
from .runtime import Runtime
from .settings import IngestSettings

log = logging.getLogger(__name__)


def create_app(
    settings: IngestSettings | None = None, contracts: ContractSource | None = None
) -> FastAPI:
    """Build the ingest app (contracts default to the registry's, or to the spec files named
    in settings); raises ``UnsafeSettings`` for production without a token."""
    settings = settings or IngestSettings()
    token = read_secret(settings.token, settings.token_file)
    require_token(
        token,
        environment=settings.environment,
        variable="FLYWHEEL_INGEST_TOKEN",
        what="record and label writes",
    )
    rt = Runtime(settings, contracts if contracts is not None else contract_source(settings))
    app = FastAPI(
        title="Flywheel ingest",
        version="0.1.0",
        description="Validates data events against their dataset contract and stores them.",
        lifespan=rt.lifespan,
    )
    app.state.runtime = rt
    app.include_router(ops_router(rt.readiness()))
    install_api_errors(app)
    install_openapi(app, bearer=token is not None)
    app.include_router(
        writes_router(
            bearer_guard(token, "ingest"),
            guarded=bool(token),
            max_body_bytes=settings.max_body_bytes,
        )
    )
    app.include_router(reads)
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
