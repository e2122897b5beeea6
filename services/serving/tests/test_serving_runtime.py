"""Unit tests of the worker wiring that keeps serving's tail short: accepts and the GC heap."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from flywheel_serving.runtime import ServingRuntime, spread_accepts
from flywheel_serving.settings import ServingSettings


class RecordingLoop(asyncio.SelectorEventLoop):
    """A selector loop that records the backlog each accept round is given."""

    backlogs: list[int] = []

    def _accept_connection(  # type: ignore[override]
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *args: Any,
    ) -> Any:
        RecordingLoop.backlogs.append(backlog)
        return super()._accept_connection(  # type: ignore[misc]
            protocol_factory, sock, sslcontext, server, backlog, *args
        )


def test_spread_accepts_takes_one_connection_per_loop_turn() -> None:
    assert spread_accepts(RecordingLoop)
    assert spread_accepts(RecordingLoop)  # idempotent: wrapped once
    loop = RecordingLoop()
    connected: list[int] = []

    async def main() -> None:
        async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connected.append(1)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=2048)
        port = server.sockets[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        for _ in range(200):
            if len(connected) == 5:
                break
            await asyncio.sleep(0.01)
        for c in clients:
            c.close()
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert len(connected) == 5  # every connection is accepted, one per turn
    assert RecordingLoop.backlogs and set(RecordingLoop.backlogs) == {1}


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_heap_is_frozen_once_the_models_are_loaded_and_after_each_change(
    unfrozen: None,
) -> None:
    runtime = ServingRuntime(ServingSettings(models=["fraud"]))
    runtime._freeze_new()  # a load before the first settle: nothing frozen yet
    assert gc.get_freeze_count() == 0
    runtime.settle_heap()
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    junk = [object() for _ in range(10)]  # noqa: F841 -- objects made after the settle
    assert runtime.manager.on_change is not None
    runtime.manager.on_change()
    assert gc.get_freeze_count() > 0
    runtime.executor.shutdown()


def test_gc_freeze_off_leaves_the_heap_alone(unfrozen: None) -> None:
    runtime = ServingRuntime(ServingSettings(models=["fraud"], gc_freeze=False))
    runtime.settle_heap()
    runtime.manager.on_change and runtime.manager.on_change()
    assert gc.get_freeze_count() == 0
    runtime.executor.shutdown()
