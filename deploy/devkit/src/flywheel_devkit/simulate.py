"""Drive a data simulator (``flywheel.simulators`` entry point) into ingest, at a given rate.

A simulator makes labelled records; this runner paces them, holds back a share of the labels
and sends those later (late ground truth), and publishes over HTTP (ingest's API) or straight
to Kafka (``data.raw`` / ``data.labels``).
"""

from __future__ import annotations

import asyncio
import heapq
import http.client
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol

import orjson

from flywheel_shared.events import Label, LabelsReceived, RawRecords
from flywheel_shared.kafka.producer import EventProducer


class Simulator(Protocol):
    """What a simulator plugin provides."""

    dataset: ClassVar[str]
    id_field: ClassVar[str]
    label_field: ClassVar[str]
    emitted: int

    def batch(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` fully labelled records."""
        ...


def simulators() -> dict[str, Callable[..., Simulator]]:
    """Installed simulators by name."""
    return {ep.name: ep.load() for ep in entry_points(group="flywheel.simulators")}


class Sink(Protocol):
    """Where simulated records and labels go."""

    async def records(self, dataset: str, records: list[dict[str, Any]]) -> tuple[int, int]:
        """Send records; return (accepted, rejected)."""
        ...

    async def labels(self, dataset: str, labels: list[Label]) -> None:
        """Send late labels."""
        ...


class HttpSink:
    """Posts to ingest's HTTP API (retries while ingest or Kafka is unavailable)."""

    def __init__(self, base_url: str, retry_s: float = 30.0, token: str | None = None) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"ingest URL must be http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.retry_s = retry_s
        self.headers = {"content-type": "application/json", "x-flywheel-source": "simulator"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def _post(self, path: str, body: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.retry_s
        # One key for the write and all its retries: a write answered 503 (or cut off) may
        # have landed anyway, and ingest stores records sent under one key once.
        headers = {**self.headers, "idempotency-key": str(uuid.uuid4())}
        while True:
            req = urllib.request.Request(  # noqa: S310 -- base_url is http(s), checked above
                self.base_url + path,
                data=body,
                headers=headers,
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 -- http(s) only
                    result: dict[str, Any] = orjson.loads(resp.read())
                    return result
            except urllib.error.HTTPError as exc:
                if exc.code == 422:
                    result = orjson.loads(exc.read())
                    return result
                if exc.code < 500 or time.monotonic() > deadline:
                    raise RuntimeError(f"ingest answered {exc.code}: {exc.read()[:300]!r}") from exc
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    async def records(self, dataset: str, records: list[dict[str, Any]]) -> tuple[int, int]:
        """POST /v1/datasets/{dataset}/records."""
        out = await asyncio.to_thread(
            self._post, f"/v1/datasets/{dataset}/records", orjson.dumps(records)
        )
        return int(out.get("accepted", 0)), int(out.get("rejected", 0))

    async def labels(self, dataset: str, labels: list[Label]) -> None:
        """POST /v1/datasets/{dataset}/labels."""
        body = orjson.dumps([lab.model_dump(mode="json", exclude_none=True) for lab in labels])
        await asyncio.to_thread(self._post, f"/v1/datasets/{dataset}/labels", body)


class KafkaSink:
    """Publishes ``data.raw`` and ``data.labels`` events (validation happens in ingest)."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    async def records(self, dataset: str, records: list[dict[str, Any]]) -> tuple[int, int]:
        """Publish one data.raw event; acceptance is decided downstream."""
        await self.producer.publish(
            RawRecords(dataset=dataset, records=records, source="simulator")
        )
        return len(records), 0

    async def labels(self, dataset: str, labels: list[Label]) -> None:
        """Publish one data.labels event."""
        await self.producer.publish(LabelsReceived(dataset=dataset, labels=labels))


@dataclass
class Totals:
    """Running counts of a simulation."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    labels_late: int = 0
    started: float = 0.0

    @property
    def rate(self) -> float:
        """Records per second so far."""
        return self.sent / max(1e-9, time.monotonic() - self.started)


@dataclass
class Runner:
    """Paces a simulator into a sink."""

    sim: Simulator
    sink: Sink
    rate: float = 100.0
    batch: int = 100
    late_fraction: float = 0.0
    label_delay_s: float = 10.0
    seed: int = 0

    async def run(
        self, count: int | None, on_progress: Callable[[Totals], None] | None = None
    ) -> Totals:
        """Send ``count`` records (None: until cancelled), then the labels still held back."""
        rng = random.Random(self.seed)  # noqa: S311 -- reproducible simulation, not secrets
        late: list[tuple[float, str, Any]] = []
        totals = Totals(started=time.monotonic())
        sim, interval = self.sim, self.batch / self.rate
        next_at = time.monotonic()
        try:
            while count is None or totals.sent < count:
                n = self.batch if count is None else min(self.batch, count - totals.sent)
                records = sim.batch(n)
                now = time.monotonic()
                for rec in records:
                    if self.late_fraction and rng.random() < self.late_fraction:
                        label = rec[sim.label_field]
                        rec[sim.label_field] = None
                        heapq.heappush(late, (now + self.label_delay_s, rec[sim.id_field], label))
                accepted, rejected = await self.sink.records(sim.dataset, records)
                totals.sent += n
                totals.accepted += accepted
                totals.rejected += rejected
                await self._send_due(late, now, totals)
                if on_progress:
                    on_progress(totals)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            while late:
                await asyncio.sleep(max(0.0, late[0][0] - time.monotonic()))
                await self._send_due(late, time.monotonic(), totals)
                if on_progress:
                    on_progress(totals)
        except asyncio.CancelledError:
            pass
        return totals

    async def _send_due(
        self, late: list[tuple[float, str, Any]], now: float, totals: Totals
    ) -> None:
        due = []
        while late and late[0][0] <= now:
            _, rid, label = heapq.heappop(late)
            due.append(Label(record_id=rid, label=label))
        if due:
            await self.sink.labels(self.sim.dataset, due)
            totals.labels_late += len(due)
