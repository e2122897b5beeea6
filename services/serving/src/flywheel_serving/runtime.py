"""One worker process's moving parts: registry client, models, alias follower, prediction log.

Every BentoML worker builds its own :class:`ServingRuntime` at start-up. It serves as soon
as the registry answered once (retrying until then), follows alias events once Kafka
answers, and keeps serving what it has loaded when either goes away.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any

from flywheel_shared.regcache import RegistryCache
from flywheel_shared.registry import RegistryClient
from flywheel_shared.runtime import KafkaRuntime

from .follower import AliasFollower
from .models import ModelManager
from .plane import DataPlane
from .predlog import PredictionLog
from .settings import ServingSettings

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)


class ServingRuntime(KafkaRuntime):
    """Serving's per-process state and background tasks."""

    service = "serving"
    topics = ("model.alias.changed", "predictions", "deadletter")

    def __init__(self, settings: ServingSettings) -> None:
        super().__init__(settings.kafka)
        self.settings = settings
        self.registry = RegistryClient(
            settings.registry_url, settings.registry_token, timeout=10.0, actor="serving"
        )
        # One model thread per process: batches run one at a time, off the event loop.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # The manager's sync loop is this cache's refresher: it re-reads on every alias event
        # and every resync_s, so the cache's own background refresh stays off.
        self.cache = RegistryCache(
            self.registry, refresh_s=settings.resync_s, name="serving-registry"
        )
        self.manager = ModelManager(
            self.cache,
            models=settings.models,
            max_batch_size=settings.max_batch_size,
            executor=self.executor,
            resync_s=settings.resync_s,
            retry_max_s=settings.retry_max_s,
        )
        self.log = PredictionLog(
            self.producer,
            capacity=settings.log_capacity,
            batch=settings.log_batch,
            flush_s=settings.log_flush_s,
        )
        self.plane = DataPlane(
            self.manager,
            self.log,
            shadow=settings.shadow,
            max_shadow_pending=settings.max_shadow_pending,
        )
        self.follower = AliasFollower(
            settings.kafka, self._on_alias, self.manager.mark, self.producer
        )
        self._stack: AsyncExitStack | None = None

    def _on_alias(self, event: Any) -> None:
        self.manager.on_alias(event)  # once per event_id: redeliveries are counted, skipped

    async def on_start(self) -> None:
        """Load models from the registry and ship the prediction log, in the background."""
        self.keep(self.manager.task)
        self.keep(self.log.task)

    async def on_connected(self) -> None:
        """Kafka answers: follow alias events (the follower then asks for a resync)."""
        if self.follower.alive() is not None:
            await self.follower.start()

    async def on_shutdown(self) -> None:
        """Finish mirrored requests and send the buffered predictions."""
        await self.follower.stop()
        await self.plane.drain_shadow(2.0)
        await self.log.flush(timeout=10.0)

    async def start(self) -> None:
        """Enter the Kafka lifecycle (returns at once; connecting goes on in the background)."""
        self._stack = AsyncExitStack()
        await self._stack.enter_async_context(self.lifespan(None))

    async def stop(self) -> None:
        """Leave the Kafka lifecycle: stop tasks, flush the log, close clients."""
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        await self.registry.close()
        self.executor.shutdown(wait=False)

    def ready(self) -> bool:
        """Ready once the registry was read and every alias it names is loaded."""
        return self.manager.synced

    def status(self) -> dict[str, Any]:
        """What this worker serves and how its links are."""
        return {
            "ready": self.ready(),
            "registry_error": self.manager.last_error or self.cache.last_error,
            "kafka_connected": self.connected.is_set(),
            "alias_follower": self.follower.alive() or "following",
            "alias_events": self.follower.events,
            "alias_applied": self.manager.alias_applied,
            "alias_duplicates": self.manager.alias_duplicates,
            "models": {n: d.summary() for n, d in sorted(self.manager.deployments.items())},
            "prediction_log": {
                "depth": self.log.depth,
                "sent": self.log.sent,
                "dropped": self.log.dropped,
            },
        }


async def wait_ready(runtime: ServingRuntime, timeout: float) -> bool:
    """Poll until the runtime is ready (tests, scripts)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not runtime.ready():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
