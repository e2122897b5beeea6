"""The closed-loop scenario: data → v1 live → drift → detection → retrain → rollout → recovery.

1. The fraud spec (with demo-sized windows) is applied; the simulator streams transactions.
   Each is scored by serving the moment it happens (once a version serves) and reaches ingest
   with its label ``label_delay_s`` later, like a chargeback; the label also goes to the
   monitor's label stream, for live accuracy.
2. The first committed rows train v1; it passes the gate and goes live.
3. After ``warmup_s`` of traffic on v1, the simulator's market and fraud pattern change.
4. The monitor detects the drift and asks for one retrain; the trainer waits for fresh rows and
   trains v2; v2 goes to shadow, the monitor's verdicts move it through the canary steps to
   production; serving swaps; accuracy recovers. Nobody presses a button.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.events import Event, ModelAliasChanged
from flywheel_shared.kafka.consumer import ConsumerConfig, Delivery, EventConsumer
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.ops import trace
from flywheel_shared.registry import RegistryClient
from flywheel_shared.spec import ModelSpec
from flywheel_shared.tasks import Supervised
from flywheel_shared.topics import TOPICS, TopicNamer

from .record import RunRecord, Sample, Served
from .stack import SERVICES, LocalStack

log = logging.getLogger(__name__)

#: Topics whose events are decisions of the loop (what the trace shows), and the warnings.
DECISIONS = [*trace.DECISION_TOPICS, "data.rejected", "deadletter"]
#: Every topic whose message count the live view shows.
COUNTED = ["data.raw", "data.validated", "data.labels", "predictions", *DECISIONS]


@dataclass(frozen=True)
class Scenario:
    """The knobs of a run (``flywheel up --help`` lists them)."""

    seed: int = 6
    rate: float = 250.0  # transactions per second
    batch: int = 5  # records per predict request
    label_delay_s: float = 2.0  # chargebacks, compressed
    warmup_s: float = 20.0  # traffic on v1 before the drift
    recover_s: float = 15.0  # traffic after the new version took all traffic
    drift: str = "both"
    fraud_rate: float = 0.05
    v1_timeout_s: float = 150.0
    loop_timeout_s: float = 150.0
    ingest_retry_s: float = 120.0  # how long a write to ingest is retried before giving up

    def scaled(self, factor: float) -> Scenario:
        """The same scenario with its phases ``factor`` times as long."""
        return Scenario(
            **{
                **self.__dict__,
                "warmup_s": self.warmup_s * factor,
                "recover_s": self.recover_s * factor,
            }
        )


def demo_spec(root: Any) -> ModelSpec:
    """The example fraud spec with windows sized for a demo of a few minutes.

    One data-triggered training (v1 after 3,000 rows; the hour of cooldown keeps new data from
    training more), then the monitor's retrain on 2,500 rows from after the drift.
    """
    data = yaml.safe_load((root / "examples" / "fraud" / "flywheel.yaml").read_text())
    data["training"].update(
        {
            "min_new_rows": 3000,
            "cooldown_s": 3600,
            "fresh_rows": 2500,
            "window": {"kind": "last_rows", "value": 2500},
        }
    )
    data["rollout"].update(
        {
            "shadow_min_requests": 300,
            "canary_steps": [
                {"weight": 0.25, "min_requests": 200, "min_duration_s": 3},
                {"weight": 0.5, "min_requests": 300, "min_duration_s": 3},
            ],
            # A shared 2-core machine: latency spikes are the machine's, not the candidate's.
            "max_latency_p99_ms": 500,
            # A retrain after a drift is meant to score differently from the drifted champion.
            "max_score_distance": 0.8,
        }
    )
    data["drift"].update({"cooldown_s": 3600})
    data["monitoring"].update(
        {
            "window_s": 20,
            "bucket_s": 2,
            "lateness_s": 2,
            "min_labels": 100,
            "min_predictions": 200,
        }
    )
    return ModelSpec.model_validate(data)


class Traffic:
    """The simulator's stream: scored by serving at once, ingested with its label later."""

    def __init__(self, sc: Scenario, stack: LocalStack, spec: ModelSpec, rec: RunRecord) -> None:
        self.sc, self.rec, self.spec = sc, rec, spec
        self.sim = FraudSimulator(
            seed=sc.seed,
            fraud_rate=sc.fraud_rate,
            drift=sc.drift,
            start=datetime.now(UTC),
            rate_per_s=sc.rate,
        )
        self.serving_url = stack.url("serving")
        self.ingest_url = stack.url("ingest")
        self.scoring = False
        self.http = httpx.AsyncClient(
            timeout=30,
            limits=httpx.Limits(
                max_connections=32,
                max_keepalive_connections=32,
                keepalive_expiry=2.0,  # below the servers' 5 s: never reuse a closing one
            ),
        )
        self._due: deque[tuple[float, dict[str, Any], bool]] = deque()  # (due, record, scored)
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(16)
        self.sent = 0
        self.ingested = 0
        self.acked: list[str] = []  # ids of the records ingest acknowledged (2xx)
        self.deferred = 0  # ingest writes answered 5xx or unreachable, then retried
        self.refused = 0  # predict requests refused at connect (nothing sent), then retried
        self.given_up = 0  # ingest writes abandoned after every retry

    @property
    def in_flight(self) -> int:
        """Predict requests sent and not yet answered."""
        return len(self._inflight)

    def start_drift(self) -> float:
        """Switch the simulator to the drifted world now; returns the onset time."""
        self.sim.start_drift()
        return time.time()

    async def run(self, stop: asyncio.Event) -> None:
        """Emit ``rate`` records per second until ``stop``; flush labels as they come due."""
        interval = self.sc.batch / self.sc.rate
        next_at = time.monotonic()
        flusher = asyncio.create_task(self._flush_loop(stop))
        try:
            while not stop.is_set():
                drifted = self.sim.drifting
                records = self.sim.batch(self.sc.batch)
                due = time.monotonic() + self.sc.label_delay_s
                scored = self.scoring
                for r in records:
                    self._due.append((due, r, scored))
                if scored:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._score(records, drifted))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                self.sent += len(records)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            await flusher

    async def _score(self, records: list[dict[str, Any]], drifted: bool) -> None:
        body = {
            "records": [
                {k: r[k] for k in (self.spec.dataset.id_field, *self.spec.features)}
                for r in records
            ]
        }
        self.rec.requests += 1
        try:
            resp = await self._predict(body)
            if resp.status_code != 200:
                self._failed(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            out = resp.json()
            at = time.time()
            for r, p in zip(records, out["predictions"], strict=True):
                self.rec.served.append(
                    Served(
                        at,
                        int(out["version"]),
                        str(out["route"]),
                        float(p["score"]),
                        bool(r[self.spec.dataset.label_field]),
                        drifted,
                    )
                )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
        finally:
            self._slots.release()

    async def _predict(self, body: dict[str, Any]) -> httpx.Response:
        """One predict request; a connection refused (serving restarting: nothing was sent) is
        tried again for up to 180 s (a restart on a busy machine), as a client behind a load
        balancer would."""
        url = f"{self.serving_url}/v1/models/{self.spec.name}/predict"
        deadline = time.monotonic() + 180
        while True:
            try:
                return await self.http.post(url, json=body)
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                self.refused += 1
                await asyncio.sleep(0.2)

    def _failed(self, why: str) -> None:
        self.rec.failed += 1
        if len(self.rec.failures) < 20:
            self.rec.failures.append(why)

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        while True:
            done = stop.is_set()
            await self.flush(everything=done)
            if done:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def flush(self, *, everything: bool = False) -> None:
        """Records whose label is known go to ingest, and scored ones' labels to the monitor."""
        now = time.monotonic()
        ready: list[dict[str, Any]] = []
        scored: list[dict[str, Any]] = []
        while self._due and (everything or self._due[0][0] <= now):
            _, r, was_scored = self._due.popleft()
            ready.append(r)
            if was_scored:
                scored.append(r)
        if not ready:
            return
        ds, id_field = self.spec.dataset.name, self.spec.dataset.id_field
        label_field = self.spec.dataset.label_field
        assert label_field is not None
        # One Idempotency-Key per write, kept across its retries: a write answered 503 (or cut
        # off) may still have landed, and its retry must not store the records twice.
        key = {"idempotency-key": str(uuid.uuid4())}
        if await self._post(f"/v1/datasets/{ds}/records", ready, key):
            self.acked += [str(r[id_field]) for r in ready]
        if scored:
            labels = [{"record_id": r[id_field], "label": r[label_field]} for r in scored]
            await self._post(f"/v1/datasets/{ds}/labels", {"labels": labels})
        self.ingested += len(ready)

    async def _post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> bool:
        """POST to ingest, retrying 5xx (e.g. 503 while Kafka is away) and unreachable for up
        to ``ingest_retry_s``; True when ingest acknowledged it."""
        deadline = time.monotonic() + self.sc.ingest_retry_s
        attempt = 0
        while True:
            try:
                resp = await self.http.post(self.ingest_url + path, json=body, headers=headers)
                if resp.status_code < 300:
                    return True
                if resp.status_code < 500:
                    log.warning("ingest refused %s: %s", path, resp.text[:300])
                    return False
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.given_up += 1
                log.warning("ingest did not take %s within %.0f s", path, self.sc.ingest_retry_s)
                return False
            self.deferred += 1
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
            attempt += 1

    async def close(self) -> None:
        await self.http.aclose()


class Observer:
    """Reads the loop's decision events into the record, and samples the monitor's gauges."""

    def __init__(
        self, stack: LocalStack, rec: RunRecord, on_event: Callable[[Event], None]
    ) -> None:
        self.stack, self.rec, self.on_event = stack, rec, on_event
        self.producer = EventProducer(stack.kafka, "flywheel-up")
        self.consumer = EventConsumer(
            stack.kafka,
            ConsumerConfig(group_id=f"flywheel-up-{stack.prefix}", topics=DECISIONS),
            self._handle,
            self.producer,
        )
        self.http = httpx.AsyncClient(timeout=5)
        self._tasks = [
            Supervised("up-sample-monitor", self.sample_monitor, every_s=1.0),
            Supervised("up-count-topics", self.count_topics, every_s=2.0),
            Supervised("up-check-health", self.check_health, every_s=2.0),
        ]
        self._offsets: AIOKafkaConsumer | None = None
        self._started = False

    async def _handle(self, event: Event, _: Delivery) -> None:
        self.rec.events.append(event)
        self.on_event(event)

    async def start(self) -> None:
        self._started = True
        await self.producer.start()
        await self.consumer.start()
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=self.stack.bootstrap, client_id="flywheel-up-counts"
        )
        await self._offsets.start()
        for task in self._tasks:
            task.start()

    async def sample_monitor(self) -> None:
        """Live metrics (realised and estimated) and the drift statistic, per version."""
        resp = await self.http.get(self.stack.url("monitor") + "/metrics")
        sample = Sample(time.time())
        for family in text_string_to_metric_families(resp.text):
            for s in family.samples:
                lab = s.labels
                if lab.get("model") != self.rec.model or math.isnan(s.value):
                    continue
                if s.name == "flywheel_monitor_metric":
                    key = f"v{lab['version']}/{lab['route']}/{lab['metric']}/{lab['kind']}"
                    sample.metrics[key] = s.value
                elif s.name == "flywheel_monitor_drift_statistic":
                    v = int(lab["version"])
                    sample.drift[v] = max(sample.drift.get(v, -math.inf), s.value)
                elif s.name == "flywheel_monitor_drift_threshold":
                    sample.threshold = s.value
        self.rec.samples.append(sample)

    async def count_topics(self) -> None:
        """Messages per topic so far (sum of the partitions' end offsets)."""
        assert self._offsets is not None
        names = TopicNamer(self.stack.prefix)
        tps = [
            (logical, TopicPartition(names(logical), p))
            for logical in COUNTED
            for p in range(TOPICS[logical].partitions)
        ]
        ends = await self._offsets.end_offsets([tp for _, tp in tps])
        counts: dict[str, int] = {}
        for logical, tp in tps:
            counts[logical] = counts.get(logical, 0) + ends[tp]
        self.rec.topic_counts = counts

    async def check_health(self) -> None:
        """Readiness of each service."""

        async def one(name: str) -> tuple[str, str]:
            try:
                resp = await self.http.get(self.stack.url(name) + "/readyz")
                return (
                    name,
                    "ready" if resp.status_code == 200 else f"not ready ({resp.status_code})",
                )
            except httpx.HTTPError:
                return name, "unreachable"

        self.rec.health = dict(await asyncio.gather(*(one(n) for n in SERVICES)))

    async def stop(self) -> None:
        await self.http.aclose()
        if not self._started:
            return
        for task in self._tasks:
            await task.stop()
        await self.consumer.stop()
        await self.producer.stop()
        if self._offsets is not None:
            await self._offsets.stop()


async def bring_up(stack: LocalStack, spec: ModelSpec, say: Callable[[str], None]) -> None:
    """The registry, the spec, then the other four services (in parallel)."""
    await stack.start_registry()
    async with RegistryClient(stack.url("registry"), stack.token, actor="flywheel-up") as reg:
        await reg.put_spec(spec)
    say(f"registry {stack.url('registry')}: spec '{spec.name}' applied")
    await stack.start_rest(lambda name: say(f"{name} ready at {stack.url(name)}"))


class LoopFailed(RuntimeError):
    """The scenario did not reach its next step in time."""


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise LoopFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def run(
    sc: Scenario,
    stack: LocalStack,
    spec: ModelSpec,
    rec: RunRecord,
    say: Callable[[str], None],
    steady: Callable[[Traffic], Awaitable[None]] | None = None,
) -> RunRecord:
    """Drive the scenario on a stack that :func:`bring_up` started; ``rec`` fills as it goes
    (also on failure). ``steady`` runs after the warm-up, before the drift, with the traffic
    still flowing (the fault suite injects its faults there)."""
    say(f"streaming {sc.rate:.0f} transactions/s")
    traffic = Traffic(sc, stack, spec, rec)
    stop = asyncio.Event()
    stream = asyncio.create_task(traffic.run(stop))
    try:
        rec.phase = "training v1 on the first rows"
        await wait_until(
            lambda: rec.production() is not None or stream.done(),
            sc.v1_timeout_s,
            "a first version in production",
        )
        _alive(stream)
        v1 = rec.production()
        rec.phase = f"waiting for serving to answer with v{v1}"
        await wait_serving(traffic, spec, v1, sc.v1_timeout_s)
        traffic.scoring = True
        rec.scoring_from = time.time()
        say(f"v{v1} serves; the load generator scores every transaction")
        rec.phase = f"the monitor calibrates its drift detectors for v{v1}"
        await wait_calibrated(traffic.http, stack.url("monitor"), spec.name, v1, sc.v1_timeout_s)
        rec.phase = f"v{v1} live and watched; steady traffic for {sc.warmup_s:.0f} s"
        say(f"the monitor watches v{v1}; {sc.warmup_s:.0f} s of steady traffic")
        await asyncio.sleep(sc.warmup_s)
        if steady is not None:
            await steady(traffic)
            _alive(stream)
        rec.onset = traffic.start_drift()
        rec.phase = "drift injected: market and fraud pattern changed"
        say(f"drift injected ({sc.drift}): new market, new fraud pattern")

        def swapped() -> bool:
            prod = rec.production()
            if prod is None or prod == v1:
                return False
            tail = rec.served[-50:]
            return len(tail) == 50 and all(s.version == prod for s in tail)

        await wait_until(
            lambda: swapped() or stream.done(),
            sc.loop_timeout_s,
            "a retrained version serving all traffic",
        )
        _alive(stream)
        rec.phase = f"v{rec.production()} serves all traffic; recovery for {sc.recover_s:.0f} s"
        say(f"v{rec.production()} serves all traffic")
        await asyncio.sleep(sc.recover_s)
        rec.phase = "done"
    finally:
        stop.set()
        await asyncio.gather(stream, return_exceptions=True)
        await traffic.close()
        rec.ended = time.time()
    if stream.done() and stream.exception() is not None:
        raise LoopFailed(f"the traffic generator failed: {stream.exception()!r}")
    return rec


def _alive(stream: asyncio.Task[None]) -> None:
    """Stop waiting at once when the traffic generator died."""
    if stream.done():
        exc = None if stream.cancelled() else stream.exception()
        raise LoopFailed(f"the traffic generator stopped: {exc!r}")


async def wait_calibrated(
    http: httpx.AsyncClient, monitor_url: str, model: str, version: int | None, timeout: float
) -> None:
    """Poll the monitor's status until its drift detectors for ``version`` are calibrated."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            status = (await http.get(f"{monitor_url}/v1/status")).json()
            if status["models"][model]["versions"][str(version)]["calibrated"]:
                return
        if time.monotonic() > deadline:
            raise LoopFailed(f"the monitor did not calibrate v{version} within {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def wait_serving(
    traffic: Traffic, spec: ModelSpec, version: int | None, timeout: float
) -> None:
    """Poll serving (not counted as client traffic) until it answers with ``version``."""
    probe = FraudSimulator(seed=10_000 + traffic.sc.seed).batch(1)
    body = {"records": [{k: r[k] for k in spec.features} for r in probe]}
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = await traffic.http.post(
                f"{traffic.serving_url}/v1/models/{spec.name}/predict", json=body
            )
            if resp.status_code == 200 and resp.json().get("version") == version:
                return
        if time.monotonic() > deadline:
            raise LoopFailed(f"serving did not answer with v{version} within {timeout:.0f} s")
        await asyncio.sleep(0.3)


def alias_moves(rec: RunRecord) -> list[ModelAliasChanged]:
    """Alias changes of the run's model, oldest first."""
    return rec.of(ModelAliasChanged)
