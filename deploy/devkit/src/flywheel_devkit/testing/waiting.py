"""Wait for a condition with a deadline (tests that assert on timing poll, never just sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(
    predicate: Callable[[], object], timeout: float = 10.0, every: float = 0.01
) -> float:
    """Poll ``predicate`` until it is true; returns the seconds it took.

    Raises ``AssertionError`` when ``timeout`` passes first.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not predicate():
        if loop.time() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)
    return loop.time() - started
