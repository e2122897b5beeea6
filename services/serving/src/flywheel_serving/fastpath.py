"""The prediction routes' way past BentoML's per-request middleware.

BentoML wraps every request of a service in its own Starlette app: traffic metrics,
OpenTelemetry, the request timeout, a context middleware, its router, and only then the
mounted transports' app (``api.py``), itself a second Starlette stack with its own router. For
a single-record prediction that wrapping costs more of the worker's event loop than the
prediction (a py-spy profile at c=32). :class:`PredictionFastPath` sits in front of BentoML's
app: the ``POST`` prediction and inference routes go straight to their handlers
(``endpoints.py``), past both stacks, with the same request timeout and the same ``504``
answer; everything else (health, readiness, ``/metrics``, docs, metadata, status, lifespan,
and a path with an encoded slash) goes to BentoML as before. The handlers count and time
predictions themselves (``flywheel_serving_*``), so only BentoML's generic HTTP metrics skip
them.

:func:`install` hooks it into the worker: BentoML builds a worker's ASGI app with
``Service.to_asgi``; the hook wraps what that returns for this one service.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PredictionFastPath:
    """ASGI: ``POST`` on a prediction route → ``transports``; anything else → ``fallback``."""

    def __init__(
        self,
        fallback: ASGIApp,
        transports: ASGIApp,
        routes: Sequence[str],
        timeout_s: float,
    ) -> None:
        self.fallback = fallback
        self.transports = transports
        self.timeout_s = timeout_s
        self._match = re.compile("|".join(f"(?:{r})" for r in routes)).fullmatch
        self.taken = 0  # requests that went the fast way (tests, status)

    def fast(self, scope: Scope) -> bool:
        """Does this request go straight to the transports?"""
        if scope["type"] != "http" or scope.get("method") != "POST":
            return False
        if b"%2f" in scope.get("raw_path", b"").lower():
            return False  # an encoded slash: the transports' app answers it (404)
        return self._match(scope.get("path", "")) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.fast(scope):
            await self.fallback(scope, receive, send)
            return
        self.taken += 1
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.transports(scope, receive, tracked)
        except TimeoutError:
            if started:  # part of the answer is out: the connection is all that can end it
                raise
            body = orjson.dumps(
                {
                    "error": f"not answered in {self.timeout_s:g} s",
                    "code": "timeout",
                }
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 504,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


def install(service: Any, transports: ASGIApp, routes: Sequence[str], timeout_s: float) -> None:
    """Wrap the ASGI app BentoML builds for ``service`` (and only it) in the fast path."""
    cls = type(service)
    original = cls.to_asgi
    if getattr(original, "__flywheel_fast_path__", False):
        return

    def to_asgi(self: Any, is_main: bool = True) -> Any:
        app = original(self, is_main)
        if self is not service:
            return app
        return PredictionFastPath(app, transports, routes, timeout_s)

    to_asgi.__flywheel_fast_path__ = True  # type: ignore[attr-defined]
    cls.to_asgi = to_asgi
