"""One worker process's moving parts: registry client, models, alias follower, prediction log.

Every BentoML worker builds its own :class:`ServingRuntime` at start-up. It serves as soon
as the registry answered once (retrying until then), follows alias events once Kafka
answers, and keeps serving what it has loaded when either goes away.

The heap: a worker holds a few hundred thousand long-lived objects (BentoML, pandas,
scikit-learn, pydantic, the models) that CPython's full (generation 2) collection walks every
time, a 0.6-1.2 s pause of the event loop measured under load at c=32, every few seconds, and
most of serving's p99. With ``gc_freeze`` the worker collects once when its models are loaded,
before it takes connections, and moves everything alive into the permanent generation
(``gc.freeze``); full collections then walk only what was made since (tens of ms). A model
loaded later is frozen in turn without a collection (no pause on an alias move); refcounting
still frees a released version, and the cyclic garbage it leaves (a few dozen objects) stays.

Accepting: BentoML's workers share one listening socket, and asyncio accepts up to the
server's backlog (2048) connections each time it is readable, so a burst of new connections
lands on whichever worker woke first: 26 to 32 of a wrk run's 32 keep-alive connections went
to one of the two workers, the other idle. :func:`spread_accepts` makes a worker take one
connection per event-loop turn, so the other worker, woken by the same readiness, takes its
share (``fair_accept``).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from asyncio.selector_events import BaseSelectorEventLoop
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any, cast

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
            inline_rows=settings.inline_rows,
            resync_s=settings.resync_s,
            retry_max_s=settings.retry_max_s,
            on_change=self._freeze_new,
            environment=settings.environment,
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
        self._heap_settled = False

    def settle_heap(self) -> None:
        """Collect once, then freeze what is alive (``gc_freeze``): call with the models loaded,
        before taking connections."""
        if self.settings.gc_freeze:
            gc.collect()
            gc.freeze()
            self._heap_settled = True

    def _freeze_new(self) -> None:
        """A deployment changed: freeze the version just loaded too (no collection, no pause)."""
        if self._heap_settled:
            gc.freeze()

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


def spread_accepts(loop_class: type[BaseSelectorEventLoop] = BaseSelectorEventLoop) -> bool:
    """Make ``loop_class``'s servers accept one connection per event-loop turn (this process).

    ``_accept_connection`` (CPython's, every version since 3.7) runs once per turn in which
    the listening socket is readable and accepts up to ``backlog`` connections; this passes
    1, so a loop takes one and lets the other processes on the same socket take the next.
    The socket stays readable while connections wait, so none waits more than a turn. False
    (and nothing changed) if the method is not there or not as expected.
    """
    original = getattr(loop_class, "_accept_connection", None)
    if original is None or getattr(original, "_one_per_turn", False):
        return original is not None
    params = list(inspect.signature(original).parameters)
    if "backlog" not in params:
        log.warning("asyncio's accept loop is not as expected; accepts not spread")
        return False
    at = params.index("backlog") - 1  # position in args, after self

    def accept_one(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) > at:
            args = (*args[:at], 1, *args[at + 1 :])
        else:
            kwargs["backlog"] = 1
        return original(self, *args, **kwargs)

    cast(Any, accept_one)._one_per_turn = True
    setattr(loop_class, "_accept_connection", accept_one)  # noqa: B010 -- a private method
    return True


async def wait_ready(runtime: ServingRuntime, timeout: float) -> bool:
    """Poll until the runtime is ready (tests, scripts)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not runtime.ready():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
