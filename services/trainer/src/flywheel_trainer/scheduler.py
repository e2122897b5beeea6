"""Per-model run queue: one run at a time, triggers during a run coalesce into one follow-up.

A model's cooldown holds back runs that new data or staleness asks for; a retrain request (the
monitor's or a person's) does not wait for it. A run that could not happen yet (the registry is
down, or a retrain still waits for fresh data) is retried after ``retry_s``, or earlier when
``poke`` says something changed.

It also says which Kafka offsets are still owed work (``barrier``): a trigger's offset is held
until the run that covers it has finished, so a crash mid-training re-delivers the trigger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from uuid import UUID

from aiokafka import TopicPartition
from prometheus_client import Gauge

log = logging.getLogger(__name__)
QUEUED = Gauge("flywheel_trainer_triggers_queued", "Triggers waiting for a run", ["model"])
RUNNING = Gauge("flywheel_trainer_runs_in_progress", "Training runs in progress", ["model"])


@dataclass(frozen=True)
class Trigger:
    """Why a model should train."""

    kind: str  # new_data | retrain | staleness | manual
    event_id: UUID
    correlation_id: UUID
    tp: TopicPartition | None = None
    offset: int | None = None
    min_rows: int = 0  # the run waits until the dataset holds this many rows (fresh data)


URGENT = frozenset({"retrain", "manual"})
"""Trigger kinds that do not wait for the model's cooldown."""


@dataclass
class _Queue:
    pending: list[Trigger] = field(default_factory=list)
    covering: list[Trigger] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    not_before: float = 0.0  # cooldown: no data-triggered run before this time
    retry_at: float = 0.0  # no run at all before this time (the last attempt asked to wait)
    timer: asyncio.TimerHandle | None = None


RunFn = Callable[[str, list[Trigger]], Awaitable[bool]]
"""Runs one training for a model; returns False to retry the same triggers later."""


class Scheduler:
    """Coalescing run queue per model."""

    def __init__(
        self,
        run: RunFn,
        cooldown: Callable[[str], float],
        *,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run_fn = run
        self._cooldown = cooldown
        self.retry_s = retry_s
        self.clock = clock
        self._queues: dict[str, _Queue] = {}
        self.runs_started = 0

    def submit(self, model: str, trigger: Trigger) -> None:
        """Queue a trigger; starts a run now if the model is idle and out of cooldown."""
        q = self._queues.setdefault(model, _Queue())
        q.pending.append(trigger)
        QUEUED.labels(model).set(len(q.pending))
        self._maybe_start(model)

    def cool_down_for(self, model: str, seconds: float) -> None:
        """Hold data-triggered runs of ``model`` for at least ``seconds`` more. A restarted
        trainer calls it with the cooldown its last version left, which memory lost."""
        q = self._queues.setdefault(model, _Queue())
        q.not_before = max(q.not_before, self.clock() + seconds)

    def busy(self, model: str) -> bool:
        """True while a run is in progress or triggers wait."""
        q = self._queues.get(model)
        return q is not None and (q.task is not None or bool(q.pending))

    def _maybe_start(self, model: str) -> None:
        q = self._queues[model]
        if q.task is not None or not q.pending:
            return
        start_at = q.retry_at
        if not any(t.kind in URGENT for t in q.pending):
            start_at = max(start_at, q.not_before)
        wait = start_at - self.clock()
        if wait > 0:
            if q.timer is not None and q.timer.when() > asyncio.get_running_loop().time() + wait:
                q.timer.cancel()  # an urgent trigger arrived: wake up earlier
                q.timer = None
            if q.timer is None:
                q.timer = asyncio.get_running_loop().call_later(wait, self._wake, model)
            return
        q.covering, q.pending = q.pending, []
        QUEUED.labels(model).set(0)
        q.task = asyncio.create_task(self._run(model, q), name=f"train:{model}")

    def poke(self, model: str) -> None:
        """Something a waiting run needs may have changed (new data): retry it now."""
        q = self._queues.get(model)
        if q is not None and q.retry_at > self.clock():
            q.retry_at = 0.0
            self._maybe_start(model)

    def _wake(self, model: str) -> None:
        self._queues[model].timer = None
        self._maybe_start(model)

    async def _run(self, model: str, q: _Queue) -> None:
        self.runs_started += 1
        RUNNING.labels(model).inc()
        done = False
        try:
            done = await self._run_fn(model, list(q.covering))
        except Exception:
            log.exception("training run crashed", extra={"model": model})
            done = True  # a crash in our own code is reported, not retried forever
        finally:
            RUNNING.labels(model).dec()
            if done:
                q.not_before = self.clock() + self._cooldown(model)
            else:
                # Keep the triggers (and their offsets) and try again after a pause.
                q.pending = q.covering + q.pending
                q.retry_at = self.clock() + self.retry_s
            q.covering = []
            q.task = None
            QUEUED.labels(model).set(len(q.pending))
            self._maybe_start(model)

    def barrier(self, tp: TopicPartition) -> int | None:
        """Lowest offset on ``tp`` whose training has not finished (None: nothing owed)."""
        offsets = [
            t.offset
            for q in self._queues.values()
            for t in (*q.pending, *q.covering)
            if t.tp == tp and t.offset is not None
        ]
        return min(offsets) if offsets else None

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for runs in progress (used on shutdown and in tests)."""
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def cancel(self) -> None:
        """Stop runs in progress; their triggers stay uncommitted and come back on restart."""
        for q in self._queues.values():
            if q.timer is not None:
                q.timer.cancel()
            if q.task is not None:
                q.task.cancel()
        await asyncio.gather(
            *(q.task for q in self._queues.values() if q.task), return_exceptions=True
        )
