"""Wiring: the FastAPI app of ingest (routes in :mod:`.routes`, the Kafka producer, consumers
and their lifecycle in :mod:`.runtime`), and ``main``."""

from __future__ import annotations

from fastapi import FastAPI

from flywheel_shared.auth import Role, TokenTable, read_secret, require_token
from flywheel_shared.http import install_api_errors, run_service, service_app

from .contracts import ContractSource, contract_source
from .governance import governance_router
from .routes import reads, writes_router
from .runtime import Runtime
from .settings import IngestSettings


def create_app(
    settings: IngestSettings | None = None, contracts: ContractSource | None = None
) -> FastAPI:
    """Build the ingest app (contracts default to the registry's, or to the spec files named
    in settings); raises ``UnsafeSettings`` for production without a token. Writes need a
    token with the ``service`` role."""
    settings = settings or IngestSettings()
    tokens = TokenTable.for_service(
        read_secret(settings.token, settings.token_file), settings.tokens_file
    )
    require_token(
        None if tokens.open else "set",
        environment=settings.environment,
        variable="FLYWHEEL_INGEST_TOKEN",
        what="record and label writes",
        tokens_variable="FLYWHEEL_INGEST_TOKENS_FILE",
    )
    rt = Runtime(settings, contracts if contracts is not None else contract_source(settings))
    app = service_app(
        "ingest",
        rt,
        rt.readiness(),
        title="Flywheel ingest",
        description="Validates data events against their dataset contract and stores them.",
        bearer=not tokens.open,
    )
    install_api_errors(app)
    app.include_router(
        writes_router(
            tokens.require(Role.SERVICE, service="ingest"),
            guarded=not tokens.open,
            max_body_bytes=settings.max_body_bytes,
        )
    )
    app.include_router(reads)
    app.include_router(
        governance_router(tokens.require(Role.OPERATOR, service="ingest"), guarded=not tokens.open)
    )
    return app


def main() -> None:
    """Run the ingest service (``python -m flywheel_ingest``)."""
    run_service("ingest", IngestSettings(), create_app)
