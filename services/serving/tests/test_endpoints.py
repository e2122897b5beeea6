"""The raw-ASGI prediction handlers: body limits, auth, start-up, ids, encoded slashes."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace
from typing import Any

import orjson

from flywheel_serving import ids
from flywheel_serving.endpoints import PredictionEndpoints
from flywheel_serving.fastpath import PredictionFastPath
from flywheel_serving.service import PREDICTION_ROUTES


async def call(
    app: Any, path: str, chunks: list[bytes], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST ``chunks`` as a streamed body; the status, headers and JSON answer."""
    pending = list(chunks) or [b""]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": "POST", "path": path, "headers": raw}
    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    got = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], got, orjson.loads(body)


def ready(plane: Any = None) -> Any:
    return SimpleNamespace(plane=plane)


async def test_a_streamed_body_over_the_limit_is_413_without_a_content_length() -> None:
    app = PredictionEndpoints(lambda: ready(), max_body_bytes=100)
    status, _, body = await call(app, "/v1/models/m/predict", [b"x" * 60, b"x" * 60])
    assert status == 413
    assert body["code"] == "too_large" and "100" in body["error"]


async def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    app = PredictionEndpoints(lambda: ready(), max_body_bytes=100)
    status, _, body = await call(app, "/v2/models/m/infer", [b"{}"], {"content-length": "5000"})
    assert status == 413 and "100" in body["error"]


async def test_a_starting_service_answers_503() -> None:
    app = PredictionEndpoints(lambda: None, max_body_bytes=100)
    status, _, body = await call(app, "/v1/models/m/predict", [b'{"records": []}'])
    assert status == 503 and body["code"] == "starting"


async def test_the_token_is_checked_before_anything_else() -> None:
    app = PredictionEndpoints(lambda: None, max_body_bytes=100, token="s3cret")
    status, headers, body = await call(app, "/v1/models/m/predict", [b"{}"])
    assert status == 401 and "error" in body
    assert headers.get("www-authenticate", "").lower().startswith("bearer")
    status, _, _ = await call(
        app, "/v1/models/m/predict", [b"{}"], {"authorization": "Bearer s3cret"}
    )
    assert status == 503  # past the token, into the (starting) service


async def test_not_json_and_not_records_are_400_with_a_code() -> None:
    app = PredictionEndpoints(lambda: ready(), max_body_bytes=1000)
    status, _, body = await call(app, "/v1/models/m/predict", [b"{nope"])
    assert (status, body["code"]) == (400, "invalid_json")
    status, _, body = await call(app, "/v1/models/m/predict", [b'{"rows": []}'])
    assert (status, body["code"]) == (400, "not_records")


async def test_a_version_that_is_not_an_integer_is_404() -> None:
    app = PredictionEndpoints(lambda: ready(), max_body_bytes=1000)
    status, _, body = await call(
        app, "/v1/models/m/versions/latest/predict", [b'{"records": [{"a": 1}]}']
    )
    assert (status, body["code"]) == (404, "unknown_version")


def test_an_encoded_slash_in_the_path_goes_to_bentoml() -> None:
    fast = PredictionFastPath(None, None, PREDICTION_ROUTES, 5.0)
    plain = {"type": "http", "method": "POST", "path": "/v1/models/a/predict"}
    assert fast.fast({**plain, "raw_path": b"/v1/models/a/predict"})
    encoded = {**plain, "path": "/v1/models/a/b/predict", "raw_path": b"/v1/models/a%2Fb/predict"}
    assert not fast.fast(encoded)


def test_ids_are_32_hex_digits_and_unique() -> None:
    made = [ids.new_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made)
    assert len(set(made)) == len(made)


def test_a_forked_child_draws_its_own_prefix() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        os.write(write, ids.new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = ids.new_id()
    assert len(child) == 32 and child[:16] != mine[:16]
