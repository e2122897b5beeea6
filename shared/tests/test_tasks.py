"""Supervised background tasks: restarts with backoff, periodic runs, wake, stop, alive."""

from __future__ import annotations

import asyncio
import uuid

from prometheus_client import REGISTRY

from flywheel_devkit.testing.waiting import eventually
from flywheel_shared.tasks import Supervised

SLACK = 0.005  # the event loop's clock may fire a timer this much early


def unique() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def metric(name: str, task: str) -> float:
    return REGISTRY.get_sample_value(name, {"task": task}) or 0.0


class Recorder:
    """A body that notes when it ran and does what ``plan`` says for each call."""

    def __init__(self, *plan: str) -> None:
        self.plan = list(plan)  # "fail", "ok", "hang", "slow" per call; the last one repeats
        self.times: list[float] = []
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.times.append(asyncio.get_running_loop().time())
        step = self.plan[min(len(self.times), len(self.plan)) - 1]
        if step == "hang":
            await self.release.wait()
        elif step == "slow":
            await asyncio.sleep(0.25)
            raise RuntimeError("slow failure")
        elif step == "fail":
            raise RuntimeError(f"boom {len(self.times)}")

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


async def test_long_running_body_is_restarted_with_doubling_backoff() -> None:
    body, name = Recorder("fail"), unique()
    task = Supervised(name, body, min_backoff_s=0.02, max_backoff_s=0.08)
    task.start()
    try:
        await eventually(lambda: len(body.times) >= 5)
        assert task.alive() is None  # failing, but supervised
    finally:
        await task.stop()
    gaps = body.gaps()[:4]
    for gap, want in zip(gaps, [0.02, 0.04, 0.08, 0.08], strict=True):
        assert gap >= want - SLACK, gaps
    assert gaps[1] > gaps[0] + 0.01 and gaps[2] > gaps[1] + 0.02, gaps  # it doubles
    assert task.restarts >= 4 and task.last_error and task.last_error.startswith("RuntimeError")
    assert metric("flywheel_task_failures_total", name) == task.restarts
    assert metric("flywheel_task_up", name) == 0


async def test_a_healthy_run_resets_the_backoff() -> None:
    # Five failures (backoff 0.01 ... 0.16), a run longer than max_backoff_s, a failure.
    body = Recorder("fail", "fail", "fail", "fail", "fail", "slow", "fail")
    task = Supervised(unique(), body, min_backoff_s=0.01, max_backoff_s=0.2)
    task.start()
    try:
        await eventually(lambda: len(body.times) >= 7)
    finally:
        await task.stop()
    gaps = body.gaps()
    assert gaps[4] >= 0.16 - SLACK  # doubled four times
    # The slow run (0.25 s), then the backoff: 0.01 after the reset, else 0.2.
    assert 0.25 <= gaps[5] < 0.25 + 0.1, gaps


async def test_periodic_body_runs_every_period_and_failures_retry_with_backoff() -> None:
    body, name = Recorder("ok", "fail", "fail", "ok"), unique()
    task = Supervised(name, body, every_s=0.1, min_backoff_s=0.02, max_backoff_s=0.03)
    started = asyncio.get_running_loop().time()
    task.start()
    try:
        await eventually(lambda: len(body.times) >= 6)
    finally:
        await task.stop()
    assert body.times[0] - started < 0.05  # the first iteration at once
    gaps = body.gaps()
    assert gaps[0] >= 0.1 - SLACK  # the period
    assert gaps[1] < 0.05 and gaps[2] < 0.06  # failed: retried after 0.02, then 0.03 (capped)
    assert gaps[3] >= 0.1 - SLACK and gaps[4] >= 0.1 - SLACK  # ok again: the period resumes
    assert task.restarts == 2 and task.last_ok is not None
    assert metric("flywheel_task_iterations_total", name) == len(body.times)
    assert metric("flywheel_task_failures_total", name) == 2


async def test_wake_runs_the_next_iteration_now_and_is_kept_during_one() -> None:
    body = Recorder("ok", "hang", "ok")
    task = Supervised(unique(), body, every_s=60)
    task.start()
    try:
        await eventually(lambda: len(body.times) == 1)
        task.wake()
        await eventually(lambda: len(body.times) == 2, timeout=2)
        task.wake()  # while the second iteration runs: it runs again right after
        body.release.set()
        await eventually(lambda: len(body.times) == 3, timeout=2)
    finally:
        await task.stop()


async def test_delayed_first_iteration() -> None:
    body = Recorder("ok")
    task = Supervised(unique(), body, every_s=60, immediate=False)
    task.start()
    try:
        for _ in range(5):
            await asyncio.sleep(0)  # an immediate first iteration would have run by now
        assert body.times == []
        task.wake()
        await eventually(lambda: len(body.times) == 1, timeout=2)
    finally:
        await task.stop()


async def test_stop_cancels_is_idempotent_and_alive_says_why() -> None:
    body, name = Recorder("hang"), unique()
    task = Supervised(name, body)
    assert task.alive() == "not started"
    await task.stop()  # before start: nothing to do
    task.start()
    task.start()  # idempotent
    await eventually(lambda: len(body.times) == 1)
    assert task.alive() is None and metric("flywheel_task_up", name) == 1
    await task.stop()
    await task.stop()
    assert task.alive() == "stopped" and len(body.times) == 1
    task.start()  # a stopped task can be started again
    await eventually(lambda: len(body.times) == 2)
    await task.stop()


async def test_stop_can_let_the_iteration_in_hand_finish() -> None:
    finished = []

    async def body() -> None:
        await asyncio.sleep(0.05)
        finished.append(True)

    task = Supervised(unique(), body, every_s=60)
    task.start()
    await asyncio.sleep(0)  # the iteration starts
    await task.stop(finish_iteration=True)
    assert finished == [True] and task.alive() == "stopped"


async def test_cancelled_inside_the_body_stops_or_restarts() -> None:
    async def cancelled_inside() -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    stopping = Supervised(unique(), cancelled_inside, min_backoff_s=0.01)
    stopping.start()
    await eventually(lambda: stopping.alive() is not None)
    assert stopping.alive() == "cancelled"

    restarting = Supervised(unique(), cancelled_inside, min_backoff_s=0.01, stop_on_cancel=False)
    restarting.start()
    try:
        await eventually(lambda: restarting.restarts >= 2)
        assert restarting.alive() is None and "cancelled" in (restarting.last_error or "")
    finally:
        await restarting.stop()


async def test_run_supervises_in_the_callers_task() -> None:
    body = Recorder("ok")
    task = Supervised(unique(), body, every_s=60)
    runner = asyncio.create_task(task.run())
    await eventually(lambda: len(body.times) == 1)
    assert task.alive() is None
    runner.cancel()
    await asyncio.wait([runner])
    assert task.alive() == "cancelled"
    await task.stop()
