"""The prediction routes' fast path: which requests it takes, its timeout, and the hook."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from flywheel_serving import fastpath
from flywheel_serving.fastpath import PredictionFastPath
from flywheel_serving.service import PREDICTION_ROUTES


class Recorder:
    """A tiny ASGI app that answers 200 with its name (after ``delay`` seconds)."""

    def __init__(self, name: str, delay: float = 0.0, partial: bool = False) -> None:
        self.name = name
        self.delay = delay
        self.partial = partial
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope.get("path", scope["type"]))
        if scope["type"] != "http":
            return
        if self.partial:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(self.delay)
        if not self.partial:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": self.name.encode()})


async def call(app: Any, method: str, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    await app(scope, receive, send)
    return sent


def make(delay: float = 0.0, timeout_s: float = 5.0, partial: bool = False) -> tuple[Any, ...]:
    bento, transports = Recorder("bento"), Recorder("transports", delay, partial)
    return PredictionFastPath(bento, transports, PREDICTION_ROUTES, timeout_s), bento, transports


async def test_prediction_posts_go_straight_to_the_transports() -> None:
    app, bento, transports = make()
    fast = [
        "/v1/models/fraud/predict",
        "/v1/models/fraud/versions/3/predict",
        "/v2/models/fraud/infer",
        "/v2/models/fraud/versions/3/infer",
    ]
    for path in fast:
        sent = await call(app, "POST", path)
        assert sent[-1]["body"] == b"transports"
    assert transports.paths == fast
    assert app.taken == len(fast)
    assert bento.paths == []


async def test_everything_else_goes_to_bentoml() -> None:
    app, bento, transports = make()
    slow = [
        ("GET", "/v1/models/fraud/predict"),  # not a POST
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/v2/models/fraud/infer/extra"),  # the route must match whole
        ("POST", "/v2/models/fraud"),
        ("GET", "/v1/status"),
    ]
    for method, path in slow:
        sent = await call(app, method, path)
        assert sent[-1]["body"] == b"bento"
    assert [p for _, p in slow] == bento.paths
    assert transports.paths == []
    await app({"type": "lifespan"}, None, None)  # lifespan is BentoML's too
    assert bento.paths[-1] == "lifespan"


async def test_a_slow_prediction_gets_504_with_a_json_reason() -> None:
    app, _, _ = make(delay=1.0, timeout_s=0.05)
    sent = await call(app, "POST", "/v1/models/fraud/predict")
    assert sent[0]["status"] == 504
    body = orjson.loads(sent[1]["body"])
    assert body["code"] == "timeout"
    assert "0.05 s" in body["error"]


async def test_a_timeout_after_the_answer_started_is_not_answered_twice() -> None:
    app, _, _ = make(delay=1.0, timeout_s=0.05, partial=True)
    try:
        await call(app, "POST", "/v1/models/fraud/predict")
    except TimeoutError:
        pass
    else:
        raise AssertionError("the half-sent answer should end the connection")


def test_install_wraps_only_its_own_service() -> None:
    class FakeService:
        def to_asgi(self, is_main: bool = True) -> Any:
            return Recorder(f"bento-{is_main}")

    ours, other = FakeService(), FakeService()
    transports = Recorder("transports")
    fastpath.install(ours, transports, PREDICTION_ROUTES, 3.0)
    fastpath.install(ours, transports, PREDICTION_ROUTES, 3.0)  # twice: wrapped once
    wrapped = ours.to_asgi(True)
    assert isinstance(wrapped, PredictionFastPath)
    assert isinstance(wrapped.fallback, Recorder)
    assert wrapped.fallback.name == "bento-True"
    assert wrapped.timeout_s == 3.0
    assert isinstance(other.to_asgi(), Recorder)


def test_the_serving_service_is_hooked_by_default() -> None:
    from flywheel_serving.service import SETTINGS, FlywheelServing

    assert SETTINGS.fast_path
    assert getattr(type(FlywheelServing).to_asgi, "__flywheel_fast_path__", False)
