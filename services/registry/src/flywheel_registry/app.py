"""The app factory: the runtime, the routes of ``routers/``, errors, middleware; ``main``."""

from __future__ import annotations

from fastapi import FastAPI

from flywheel_shared.http import run_service, service_app
from flywheel_shared.logging import setup_logging

from . import migrate
from .db import make_engine
from .errors import install_errors
from .routers import Docs, Services, include_api
from .runtime import Runtime
from .settings import RegistrySettings


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    """Build the registry app; raises ``UnsafeSettings`` for unsafe production settings."""
    settings = settings or RegistrySettings()
    settings.check()
    rt = Runtime(settings)
    tokens = settings.token_table()
    app = service_app(
        "registry",
        rt,
        {"database": rt.database_ready, "kafka": rt.kafka_ready, "storage": rt.storage_ready},
        title="Flywheel registry",
        description="Model specs, dataset contracts, versions, aliases, artifacts and lineage.",
        bearer=not tokens.open,
    )
    app.state.services = Services(
        store=rt.store,
        artifacts=rt.artifacts,
        settings=settings,
        tokens=tokens,
    )
    docs = Docs(
        token=not tokens.open,
        read_auth=settings.read_auth,
        max_artifact_bytes=settings.max_artifact_bytes,
    )
    include_api(app, docs)
    install_errors(app)
    return app


def main() -> None:
    """Run the registry (``python -m flywheel_registry``)."""
    run_service("registry", RegistrySettings(), create_app)


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
