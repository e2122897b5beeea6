"""Clients that retry writes to ingest keep one Idempotency-Key per write across its retries.

A write answered 503 (Kafka slow to acknowledge) or cut off mid-request may have landed anyway;
ingest stores the records sent under one key once, so the retry must carry the same key. The
fault suite found the duplicates a keyless retry makes (705 rows after a 20 s broker outage).
Here a small HTTP server of our own answers 503 first, then 202, and records the headers.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flywheel_devkit.simulate import HttpSink
from flywheel_ingest.cli import _Client


class _Flaky(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        # Every write fails once, then succeeds: 503, 202, 503, 202, …
        status = 503 if len(self.seen) % 2 else 202
        body = json.dumps({"accepted": 1, "rejected": 0, "rejections": []}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, list[dict[str, str]]]]:
    _Flaky.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Flaky.seen
    finally:
        server.shutdown()
        server.server_close()


def _keys(seen: list[dict[str, str]]) -> list[str]:
    assert all("idempotency-key" in h for h in seen), seen
    return [h["idempotency-key"] for h in seen]


async def test_the_simulator_retries_a_write_under_the_same_key(
    flaky: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = flaky
    sink = HttpSink(url, retry_s=10)
    await sink.records("transactions", [{"transaction_id": "a"}])
    await sink.records("transactions", [{"transaction_id": "b"}])
    first, retry, second, retry2 = _keys(seen)
    assert first == retry and second == retry2 and first != second


def test_the_ingest_cli_retries_a_batch_under_the_same_key(
    flaky: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = flaky
    monkeypatch.setattr("flywheel_ingest.cli.time.sleep", lambda _s: None)
    client = _Client(url)
    assert client.post("/v1/datasets/transactions/records", b"[{}]")[0] == 202
    assert client.post("/v1/datasets/transactions/records", b"[{}]")[0] == 202
    first, retry, second, retry2 = _keys(seen)
    assert first == retry and second == retry2 and first != second
