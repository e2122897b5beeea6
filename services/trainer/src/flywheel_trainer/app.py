"""Wiring: the trainer's consumer, its run scheduler, and the ops endpoints."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from flywheel_shared.http import install_api_errors, run_service, service_app
from flywheel_shared.kafka.consumer import ConsumerConfig, EventConsumer
from flywheel_shared.registry import RegistryClient
from flywheel_shared.runtime import KafkaRuntime
from flywheel_shared.storage import ObjectStore

from .handlers import TrainerService
from .kube import KubernetesExecutor
from .settings import TrainerSettings

log = logging.getLogger(__name__)


class Runtime(KafkaRuntime):
    """The trainer's consumer (new data + retrain requests) and its scheduler."""

    service = "trainer"
    topics = (
        "data.batch.committed",
        "retrain.requested",
        "training.started",
        "training.completed",
        "training.failed",
        "deadletter",
    )

    def __init__(self, settings: TrainerSettings) -> None:
        super().__init__(settings.kafka)
        self.settings = settings
        self.registry = RegistryClient(
            settings.registry_url, settings.registry_token, actor="trainer"
        )
        self.trainer = TrainerService(
            self.registry,
            self.producer,
            ObjectStore(settings.storage.uri),
            storage_uri=settings.storage.uri,
            registry_token=settings.registry_token,
            spec_refresh_s=settings.spec_refresh_s,
            retry_s=settings.retry_s,
            executor=(
                KubernetesExecutor(settings, ObjectStore(settings.storage.uri))
                if settings.executor == "kubernetes"
                else None
            ),
        )

    def make_consumers(self) -> list[EventConsumer]:
        """One consumer for both trigger topics; offsets wait for the runs they trigger."""
        return [
            EventConsumer(
                self.settings.kafka,
                ConsumerConfig(
                    group_id="flywheel-trainer",
                    topics=["data.batch.committed", "retrain.requested"],
                ),
                self.trainer.on_event,
                self.producer,
                commit_barrier=self.trainer.scheduler.barrier,
            )
        ]

    async def on_start(self) -> None:
        """Keep the registry cache (model specs) fresh in the background; warm a worker."""
        self.trainer.cache.start()
        self.trainer.workers.prepare()

    async def on_connected(self) -> None:
        """Start the staleness check (first one period after start-up)."""
        self.spawn(
            "staleness",
            self.trainer.check_staleness,
            every_s=self.settings.staleness_check_s,
            immediate=False,
        )

    async def on_shutdown(self) -> None:
        """Abandon runs in progress: their triggers were not committed and come back."""
        await self.trainer.scheduler.cancel()
        await self.trainer.workers.close()
        await self.trainer.cache.stop()
        await self.registry.close()

    async def registry_ready(self) -> str | None:
        """Readiness: the registry answers."""
        try:
            await self.trainer.specs(refresh=True)
        except Exception as exc:
            return f"registry: {exc}"
        return None


def create_app(settings: TrainerSettings | None = None) -> FastAPI:
    """Build the trainer app."""
    settings = settings or TrainerSettings()
    rt = Runtime(settings)
    app = service_app(
        "trainer",
        rt,
        {"kafka": rt.kafka_ready, "registry": rt.registry_ready},
        title="Flywheel trainer",
        encoded_slashes=False,
    )
    install_api_errors(app)
    return app


def main() -> None:
    """Run the trainer service (``python -m flywheel_trainer``)."""
    run_service("trainer", TrainerSettings(), create_app)
