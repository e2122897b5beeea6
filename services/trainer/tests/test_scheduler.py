from __future__ import annotations

import asyncio
import uuid

from aiokafka import TopicPartition

from flywheel_trainer.scheduler import Scheduler, Trigger

TP = TopicPartition("t", 0)


def trig(offset: int, kind: str = "new_data") -> Trigger:
    return Trigger(kind, uuid.uuid4(), uuid.uuid4(), TP, offset)


async def test_triggers_during_a_run_coalesce_into_one_follow_up() -> None:
    release = asyncio.Event()
    runs: list[list[int]] = []

    async def run(model: str, triggers: list[Trigger]) -> bool:
        runs.append([t.offset or 0 for t in triggers])
        if len(runs) == 1:
            await release.wait()
        return True

    s = Scheduler(run, lambda m: 0.0)
    s.submit("m", trig(0))
    await asyncio.sleep(0)
    for off in range(1, 6):
        s.submit("m", trig(off))
    assert s.barrier(TP) == 0  # nothing is done yet
    release.set()
    await s.drain()
    await asyncio.sleep(0)
    await s.drain()
    assert runs == [[0], [1, 2, 3, 4, 5]]
    assert s.barrier(TP) is None and not s.busy("m")


async def test_failed_run_keeps_its_triggers_and_retries() -> None:
    outcomes = [False, True]
    runs = []

    async def run(model: str, triggers: list[Trigger]) -> bool:
        runs.append(len(triggers))
        return outcomes[len(runs) - 1]

    s = Scheduler(run, lambda m: 0.0, retry_s=0.05)
    s.submit("m", trig(7))
    await s.drain()
    assert s.barrier(TP) == 7  # still owed
    deadline = asyncio.get_running_loop().time() + 5
    while len(runs) < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    await s.drain()
    assert runs == [1, 1] and s.barrier(TP) is None


async def test_cooldown_delays_the_next_run() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()
    second = asyncio.Event()

    async def run(model: str, triggers: list[Trigger]) -> bool:
        times.append(loop.time())
        if len(times) == 2:
            second.set()
        return True

    s = Scheduler(run, lambda m: 0.2)
    s.submit("m", trig(0))
    await s.drain()
    s.submit("m", trig(1))
    assert s.busy("m")
    await asyncio.wait_for(second.wait(), 5)
    assert times[1] - times[0] >= 0.19


async def test_a_retrain_request_does_not_wait_for_the_cooldown() -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    ran = asyncio.Event()

    async def run(model: str, triggers: list[Trigger]) -> bool:
        times.append(loop.time())
        ran.set()
        return True

    s = Scheduler(run, lambda m: 60.0)
    s.submit("m", trig(0))
    await s.drain()
    ran.clear()
    s.submit("m", trig(1))  # new data: waits the 60 s cooldown
    for _ in range(10):  # a run that started would be a task that ran by now
        await asyncio.sleep(0)
    assert len(times) == 1 and s.busy("m")
    s.submit("m", trig(2, "retrain"))  # drift: goes now, and covers the waiting data trigger
    await asyncio.wait_for(ran.wait(), 5)
    await s.drain()
    assert len(times) == 2 and times[1] - times[0] < 5
    assert s.barrier(TP) is None and not s.busy("m")


async def test_a_run_that_must_wait_is_retried_early_when_poked() -> None:
    attempts: list[float] = []
    ready = False
    done = asyncio.Event()

    async def run(model: str, triggers: list[Trigger]) -> bool:
        attempts.append(asyncio.get_running_loop().time())
        if ready:
            done.set()
        return ready

    s = Scheduler(run, lambda m: 0.0, retry_s=60.0)
    s.submit("m", trig(0, "retrain"))
    await s.drain()
    assert len(attempts) == 1 and s.barrier(TP) == 0  # not done: the offset is still owed
    s.poke("other")  # unknown models are ignored
    ready = True
    s.poke("m")  # new data arrived: try again now, not in 60 s
    await asyncio.wait_for(done.wait(), 5)
    await s.drain()
    assert len(attempts) == 2 and s.barrier(TP) is None


async def test_a_cooldown_learned_after_a_restart_holds_data_runs_but_not_retrains() -> None:
    ran: list[str] = []

    async def run(model: str, triggers: list[Trigger]) -> bool:
        ran.extend(t.kind for t in triggers)
        return True

    s = Scheduler(run, lambda m: 3600.0)
    s.cool_down_for("m", 60.0)  # the last version is 59 minutes old
    s.submit("m", trig(0))
    await asyncio.sleep(0)
    assert ran == [] and s.busy("m")  # new data waits for the rest of the cooldown
    s.submit("m", trig(1, kind="retrain"))
    await s.drain()
    assert ran == ["new_data", "retrain"]  # a retrain does not wait, and takes the data along
