"""One supervised background task, so that no service writes its own ``while True`` again.

Two shapes:

- ``every_s=None``: ``body`` is a long-running coroutine (a reader, a follower). If it returns
  or raises it is started again after a pause that doubles from ``min_backoff_s`` up to
  ``max_backoff_s``; a run that lasted longer than ``max_backoff_s`` was healthy and resets
  the pause.
- ``every_s=X``: ``body`` is one iteration, called every ``X`` seconds (the first one at
  once, unless ``immediate=False``). An iteration that raises is logged, counted and tried
  again after the same doubling pause; after a success the normal period resumes.
  :meth:`Supervised.wake` runs the next iteration now (event-driven refresh); a wake that
  arrives while an iteration runs is kept, so nothing announced during it is missed.

Guarantees: one body runs at a time; an exception never ends the task (only :meth:`stop`
does, or, with ``stop_on_cancel``, a ``CancelledError`` escaping the body); :meth:`stop`
cancels and awaits, is idempotent and never raises. Metrics: ``flywheel_task_up{task}``
(1 while running and not failing), ``flywheel_task_failures_total{task}``,
``flywheel_task_iterations_total{task}`` (every run of the body).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .metrics import TASK_FAILURES, TASK_ITERATIONS, TASK_UP

log = logging.getLogger(__name__)


class Supervised:
    """A background task that is restarted (or retried) with backoff until stopped."""

    def __init__(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        *,
        every_s: float | None = None,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        stop_on_cancel: bool = True,
        immediate: bool = True,
    ) -> None:
        """``stop_on_cancel``: a ``CancelledError`` raised inside ``body`` (not by :meth:`stop`)
        ends the task; with False it counts as a failure and the body runs again.
        ``immediate`` (periodic only): run the first iteration at start, not one period later.
        """
        if every_s is not None and every_s <= 0:
            raise ValueError("every_s must be positive")
        self.name = name
        self.body = body
        self.every_s = every_s
        self.min_backoff_s = min(min_backoff_s, max_backoff_s)
        self.max_backoff_s = max_backoff_s
        self.stop_on_cancel = stop_on_cancel
        self.immediate = immediate
        self.last_error: str | None = None
        self.restarts = 0
        self.last_ok: float | None = None
        """Monotonic time of the last successful iteration (long-running: of the last start)."""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_body = False

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create the asyncio task (idempotent; a stopped task may be started again)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def run(self) -> None:
        """Supervise in the calling task until cancelled (``start`` runs this in a new task)."""
        current = asyncio.current_task()
        if self._task is not None and not self._task.done() and self._task is not current:
            raise RuntimeError(f"{self.name} is already running")
        self._task, self._stopping = current, False
        TASK_UP.labels(self.name).set(1)
        try:
            if self.every_s is None:
                await self._restarting()
            else:
                await self._periodic(self.every_s)
        finally:
            TASK_UP.labels(self.name).set(0)

    async def stop(self, *, finish_iteration: bool = False) -> None:
        """Cancel the task and wait for it to end (idempotent, never raises).

        ``finish_iteration``: let a periodic iteration in progress finish first (a pause is
        still cancelled at once).
        """
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        if task is asyncio.current_task():
            return  # stopped from inside the body: the loop ends when the body returns
        if not (finish_iteration and self._in_body):
            task.cancel()
        await asyncio.wait([task])

    def wake(self) -> None:
        """Run the next periodic iteration now (or right after the one in progress)."""
        self._wake.set()

    def alive(self) -> str | None:
        """None while running, else why not: "not started", "stopped", "crashed: ..."."""
        task = self._task
        if task is None:
            return "not started"
        if not task.done():
            return None
        if task.cancelled():
            return "stopped" if self._stopping else "cancelled"
        exc = task.exception()
        return f"crashed: {type(exc).__name__}: {exc}" if exc is not None else "stopped"

    # -- loops -----------------------------------------------------------------------------

    async def _restarting(self) -> None:
        backoff = self.min_backoff_s
        while not self._stopping:
            began = self.last_ok = time.monotonic()
            error = await self._call()
            if self._stopping:
                return
            if time.monotonic() - began > self.max_backoff_s:
                backoff = self.min_backoff_s  # it ran well for a while: not a crash loop
            self._failed(error or "returned", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _periodic(self, every_s: float) -> None:
        backoff = self.min_backoff_s
        delay, wakeable = (0.0 if self.immediate else every_s), True
        while True:
            await self._pause(delay, wakeable=wakeable)
            if self._stopping:
                return
            self._wake.clear()  # a wake from now on means "again, after this one"
            error = await self._call()
            if self._stopping:
                return
            if error is None:
                self.last_ok = time.monotonic()
                TASK_UP.labels(self.name).set(1)
                backoff = self.min_backoff_s
                delay, wakeable = every_s, True
            else:
                self._failed(error, backoff)
                delay, wakeable = backoff, False
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _call(self) -> str | None:
        """Run the body once; the error that ended it, or None."""
        TASK_ITERATIONS.labels(self.name).inc()
        self._in_body = True
        try:
            await self.body()
        except asyncio.CancelledError:
            if self._stopping or self.stop_on_cancel or _cancel_requested():
                raise
            return "CancelledError: cancelled inside the body"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._in_body = False
        return None

    def _failed(self, error: str, retry_in_s: float) -> None:
        self.last_error = error
        self.restarts += 1
        TASK_FAILURES.labels(self.name).inc()
        TASK_UP.labels(self.name).set(0)
        log.warning(
            f"{self.name} failed, retrying",
            extra={"task": self.name, "error": error, "retry_in_s": retry_in_s},
        )

    async def _pause(self, seconds: float, *, wakeable: bool) -> None:
        if seconds <= 0:
            return
        if not wakeable:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass


def _cancel_requested() -> bool:
    """True when someone cancelled the current task (not just a future inside it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
