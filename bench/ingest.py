"""Ingest throughput benchmark: how close does HTTP ingest get to a raw producer sending
exactly what ingest publishes?

It measures, in one run and on the same records (``FraudSimulator(seed=0)``):

(a) the matched ceiling: a raw aiokafka producer configured like flywheel's ``EventProducer``
    (acks=all, idempotence on, the configured compression -- zstd by default --, linger 5 ms,
    1 MiB batches) sending the very ``data.validated`` envelopes ingest would publish for the
    request bodies of (b): each body's records validated, cut into events of
    ``FLYWHEEL_INGEST_CHUNK_RECORDS`` (500) records, encoded by ``encode_event``, with the
    ``type`` and ``correlation_id`` headers and the dataset as key -- all pre-encoded before
    any timing; records/s from the first send until the last ack. It runs in its own process.
    For context only it also sends the same records one Kafka message per record;
(b) ingest end to end: ``python -m flywheel_ingest`` as subprocess(es) (``--workers`` separate
    processes on their own ports sharing one topic prefix and store, requests spread
    round-robin), driven by an aiohttp client at ``--concurrency`` posting pre-serialised JSON
    array bodies of ``--batch`` records to ``POST /v1/datasets/transactions/records``;
    records/s accepted with a 202 (answered only after Kafka acknowledged), request latency
    p50/p99, and every non-202 answer or client error. Its dataset writer runs in process,
    as deployed by default.

Cores: the ceiling producer's process and the ingest process(es) are pinned
(``sched_setaffinity``) to the same ``--cores`` cores (1 by default, the last ones this process
may use); the bench process (the HTTP client) to the others. The broker is not pinned.

(a) and (b) alternate, ``--rounds`` times (a, b, a, b, ...), so that both see the same
machine: on a shared VM the CPU speed drifts (a tiny pure-Python probe timed before each
round shows by how much). Rates are medians over the rounds, the headline ratio is the median
of the per-round ratios ingest / matched ceiling, printed last as
``ingest ratio vs matched producer: <x>``. Ingest is warmed up first (``--warmup`` requests,
then until its dataset writer sealed a segment: the first seal imports pandas through pyarrow).

It measures, it does not judge: nothing here fails on a low number.

    uv run python bench/ingest.py [--records 200000] [--concurrency 32] [--batch 500]
                                  [--workers 1] [--rounds 3] [--cores 1]
                                  [--bootstrap HOST:PORT] [--json out.json]

Without ``--bootstrap`` a broker is started (``flywheel_devkit.testing.kafka.acquire_broker``:
``FLYWHEEL_KAFKA_BOOTSTRAP`` if set, else Docker if it answers, else a local JVM broker) and
stopped at the end. ``FLYWHEEL_KAFKA_*`` / ``FLYWHEEL_INGEST_*`` variables in the environment
reach both the ceiling producer and the ingest processes (e.g. ``FLYWHEEL_KAFKA_COMPRESSION``).
Progress goes to stderr, the result table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from flywheel_devkit.stack import LocalStack
from flywheel_devkit.testing.kafka import BrokerHandle, acquire_broker
from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_fraud.simulator import FraudSimulator
from flywheel_ingest.contracts import load_spec_files
from flywheel_ingest.settings import IngestSettings
from flywheel_shared.events import RecordsValidated, encode_event
from flywheel_shared.kafka.admin import ensure_topics
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.topics import TopicNamer
from flywheel_shared.validation import ContractValidator

ROOT = Path(__file__).resolve().parents[1]
DATASET = "transactions"
PATH = f"/v1/datasets/{DATASET}/records"
HEADERS = {"content-type": "application/json"}
_T0 = time.monotonic()


def say(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ CPU use


# Cores this process may use at start (the bench later pins itself to the client's cores).
_NPROC = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc; None if unknown."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine used so far (all cores), from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
    values = [int(v) for v in first[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK


class CpuMeter:
    """CPU used by named processes inside ``with meter:`` blocks, as % of one core."""

    def __init__(self, pids: dict[str, list[int | None]]) -> None:
        self.pids = pids
        self._used: dict[str, float | None] = dict.fromkeys([*pids, "other processes"], 0.0)
        self._wall = 0.0
        self._begin: dict[str, float | None] = {}
        self._t = 0.0

    def _sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pids in self.pids.items():
            values = [cpu_seconds(p) for p in pids]
            out[name] = None if not values or None in values else sum(v or 0 for v in values)
        # Everything else on the machine (other jobs on a shared box skew the numbers).
        busy = machine_busy_seconds()
        ours = [v for v in out.values() if v is not None]
        out["other processes"] = None if busy is None else busy - sum(ours)
        return out

    def __enter__(self) -> CpuMeter:
        self._begin, self._t = self._sample(), time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._sample()
        self._wall += time.monotonic() - self._t
        for name, value in end.items():
            begin, used = self._begin.get(name), self._used.get(name)
            self._used[name] = (
                None if value is None or begin is None or used is None else used + value - begin
            )

    def percent(self) -> dict[str, float | None]:
        return {
            k: None if v is None or not self._wall else round(100 * v / self._wall, 1)
            for k, v in self._used.items()
        }


def speed_probe() -> float:
    """Milliseconds for a fixed pure-Python loop: shows how the VM's CPU speed drifts."""
    began = time.perf_counter()
    x = 0
    for i in range(300_000):
        x += i % 7
    return round((time.perf_counter() - began) * 1000, 1)


# ------------------------------------------------------------------------------ results


@dataclass
class CeilingResult:
    records: int  # per round
    messages: int  # per round
    records_per_s: float  # median over the rounds
    records_per_s_rounds: list[float]
    mib_per_s: float  # median
    cpu_percent: dict[str, float | None] = field(default_factory=dict)  # over all rounds


@dataclass
class IngestResult:
    workers: int
    concurrency: int
    batch: int
    requests: int  # all rounds
    records_sent: int  # all rounds
    records_accepted: int  # all rounds, summed from the 202 bodies
    seconds: float  # all rounds
    records_per_s: float  # median over the rounds
    records_per_s_rounds: list[float]
    requests_per_s: float  # all rounds
    mib_per_s: float  # all rounds
    p50_ms: float  # over every request of every round
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_202: int
    non_202_by_status: dict[str, int]
    cpu_percent: dict[str, float | None] = field(default_factory=dict)  # over all rounds


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# ------------------------------------------------------------------------------ (a) ceiling


async def _ticker(label: str, total: int, done: list[int], every: float = 2.0) -> None:
    start = time.perf_counter()
    while True:
        await asyncio.sleep(every)
        n = done[0]
        elapsed = time.perf_counter() - start
        say(f"{label}: {n:,}/{total:,} records sent ({n / elapsed:,.0f} rec/s so far)")


Message = tuple[bytes, list[tuple[str, bytes]] | None]  # value, headers


class Ceiling:
    """A raw producer configured like ``EventProducer``, on its own ``data.validated`` topic."""

    def __init__(self, bootstrap: str) -> None:
        # KafkaSettings reads FLYWHEEL_KAFKA_*, so compression/linger follow the service's.
        self.settings = KafkaSettings(
            bootstrap=bootstrap, topic_prefix=f"benchceil{uuid.uuid4().hex[:8]}"
        )
        self.topic = TopicNamer(self.settings.topic_prefix)("data.validated")
        self.key = DATASET.encode()  # ingest keys data.validated by dataset
        self.producer: AIOKafkaProducer | None = None

    async def start(self, warm: list[Message]) -> None:
        s = self.settings
        await ensure_topics(s, ["data.validated"])
        self.producer = AIOKafkaProducer(
            **s.client_kwargs(),  # type: ignore[arg-type]
            client_id="flywheel-bench",
            acks="all",
            enable_idempotence=True,
            linger_ms=s.linger_ms,
            compression_type=None if s.compression == "none" else s.compression,
            max_request_size=s.max_request_bytes,
            max_batch_size=1024 * 1024,
            request_timeout_ms=30_000,
        )
        await self.producer.start()
        say(f"ceiling: warming up the producer on {self.topic}")
        await self.send(warm, 1, None)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send(self, messages: list[Message], per_message: int, label: str | None) -> float:
        """Send every message without waiting, then wait for all acks; returns seconds."""
        assert self.producer is not None
        producer, topic, key = self.producer, self.topic, self.key
        done = [0]
        ticker = (
            asyncio.create_task(_ticker(label, len(messages) * per_message, done))
            if label
            else None
        )
        try:
            started = time.perf_counter()
            futures = []
            for value, headers in messages:
                futures.append(await producer.send(topic, value, key=key, headers=headers))
                done[0] += per_message
            await asyncio.gather(*futures)
            return time.perf_counter() - started
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker


def _ceiling_child(
    conn: Connection,
    bootstrap: str,
    cores: list[int] | None,
    sets: dict[str, tuple[list[Message], int]],
) -> None:
    """The ceiling producer's own process (pinned like ingest): runs one send per command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    if cores:
        os.sched_setaffinity(0, cores)

    async def run() -> None:
        ceiling = Ceiling(bootstrap)
        try:
            await ceiling.start(sets["per_record"][0][:5000])
            conn.send("ready")
            while True:
                command = await asyncio.to_thread(conn.recv)
                if command is None:
                    break
                name, label = command
                messages, per_message = sets[name]
                conn.send(await ceiling.send(messages, per_message, label))
        finally:
            await ceiling.stop()

    asyncio.run(run())


class CeilingProcess:
    """Drives :func:`_ceiling_child` from the bench's event loop."""

    def __init__(
        self, bootstrap: str, cores: list[int] | None, sets: dict[str, tuple[list[Message], int]]
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_ceiling_child, args=(child, bootstrap, cores, sets), daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> None:
        self.proc.start()
        if not self.conn.poll(timeout) or self.conn.recv() != "ready":
            raise RuntimeError("the ceiling producer did not start")

    async def send(self, name: str, label: str | None) -> float:
        self.conn.send((name, label))
        seconds: float = await asyncio.to_thread(self.conn.recv)
        return seconds

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(None)
        self.proc.join(20)
        if self.proc.is_alive():
            self.proc.kill()


# ------------------------------------------------------------------------------ (b) ingest


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the bench process exits."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Ingests:
    """N ingest processes sharing a topic prefix and a store, each on its own port."""

    def __init__(
        self, bootstrap: str, workdir: Path, workers: int, specs: str, cores: list[int] | None
    ) -> None:
        self.cores = cores
        # The local stack's launcher, ingest only: contracts from the spec files, the
        # service's own segment and session defaults (no demo pacing).
        launcher = LocalStack(
            run_dir=workdir, bootstrap=bootstrap, prefix=f"bench{uuid.uuid4().hex[:8]}", services=()
        )
        self.prefix = launcher.prefix
        own: dict[str, str | None] = {
            "FLYWHEEL_INGEST_SPECS": specs,
            "FLYWHEEL_INGEST_HOST": "127.0.0.1",
            "FLYWHEEL_INGEST_REGISTRY_URL": None,
            "FLYWHEEL_INGEST_SEGMENT_SECONDS": None,
            "FLYWHEEL_KAFKA_SESSION_TIMEOUT_MS": None,
        }
        self.procs: list[ServiceProcess] = [
            launcher.process("ingest", own, label=f"ingest-{i}") for i in range(workers)
        ]

    @property
    def urls(self) -> list[str]:
        return [p.url + PATH for p in self.procs]

    @property
    def pids(self) -> list[int | None]:
        return [p.proc.pid if p.proc else None for p in self.procs]

    def _preexec(self) -> None:
        _die_with_parent()
        if self.cores:  # before exec: every thread of the service inherits it
            os.sched_setaffinity(0, self.cores)

    def start(self, timeout: float = 90.0) -> None:
        """Spawn every process at once, then wait until each answers /readyz with 200."""
        for sp in self.procs:
            with sp.log_path.open("ab") as log:
                sp.proc = subprocess.Popen(
                    [sys.executable, "-m", sp.module],
                    env=sp.env,
                    stdout=log,
                    stderr=log,
                    # Own session: a terminal Ctrl-C reaches only the bench, which then stops
                    # them in order; and they get SIGTERM if the bench dies without cleanup.
                    start_new_session=True,
                    preexec_fn=self._preexec,
                )
        for sp in self.procs:
            sp.wait_ready(timeout)

    def stop(self) -> None:
        for sp in self.procs:  # SIGTERM all first, so that they shut down in parallel
            if sp.proc is not None and sp.proc.poll() is None:
                sp.proc.send_signal(signal.SIGTERM)
        for sp in self.procs:
            with contextlib.suppress(Exception):
                sp.stop(timeout=20)  # waits, then SIGKILL


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    sent: int = 0
    bytes: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


async def _drive(
    session: aiohttp.ClientSession,
    urls: list[str],
    bodies: list[tuple[int, bytes]],
    concurrency: int,
    tally: _Tally,
    label: str | None,
) -> None:
    """Post every body, ``concurrency`` at a time, round-robin over ``urls``."""
    work = iter(enumerate(bodies))
    total = sum(n for n, _ in bodies)
    base = tally.accepted

    async def worker() -> None:
        for i, (n, body) in work:
            url = urls[i % len(urls)]
            began = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=HEADERS) as resp:
                    payload = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.statuses[f"error:{type(exc).__name__}"] += 1
                continue
            tally.latencies.append(time.perf_counter() - began)
            tally.sent += n
            tally.bytes += len(body)
            if status == 202:
                tally.accepted += orjson.loads(payload)["accepted"]
            else:
                tally.statuses[str(status)] += 1

    async def tick() -> None:
        start = time.perf_counter()
        while True:
            await asyncio.sleep(2.0)
            elapsed = time.perf_counter() - start
            done = tally.accepted - base
            say(
                f"{label}: {done:,}/{total:,} records accepted ({done / elapsed:,.0f} rec/s "
                f"so far, {sum(tally.statuses.values())} non-202 in all)"
            )

    ticker = asyncio.create_task(tick()) if label else None
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker


async def _wait_first_segment(
    session: aiohttp.ClientSession, url: str, timeout: float = 30
) -> None:
    """Let the in-process writer seal a segment before timing (its first seal is slow)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            async with session.get(url) as resp:
                if resp.status == 200 and orjson.loads(await resp.read()).get("segments", 0) >= 1:
                    waited = time.monotonic() - began
                    say(f"ingest: first segment sealed {waited:.1f} s after warm-up")
                    return
        except aiohttp.ClientError:
            pass  # a busy server: ask again
        await asyncio.sleep(0.2)
    say(f"ingest: no segment sealed {timeout:.0f} s after warm-up; timing anyway")


# ------------------------------------------------------------------------------ the run


@dataclass
class Workload:
    per_record: list[Message]  # (a) context: one message per record (its JSON bytes)
    matched: list[Message]  # (a): the data.validated envelopes ingest publishes for `bodies`
    matched_records: int
    chunk_records: int
    bodies: list[tuple[int, bytes]]  # (b): (records, JSON array body)
    warm_bodies: list[tuple[int, bytes]]
    batch: int


async def measure(
    ceiling: CeilingProcess,
    urls: list[str],
    work: Workload,
    concurrency: int,
    rounds: int,
    pids: dict[str, list[int | None]],
) -> dict[str, Any]:
    """Warm up ingest, then alternate (a) and (b) ``rounds`` times."""
    # Idle connections are closed by the client before uvicorn's 5 s keep-alive timeout
    # (between rounds), so that no request races the server closing its connection.
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, keepalive_timeout=2)
    timeout = aiohttp.ClientTimeout(total=120)
    loop = asyncio.get_running_loop()
    client_loop = f"{type(loop).__module__.split('.')[0]} ({type(loop).__name__})"
    n_records = len(work.per_record)
    cm_rates: list[float] = []
    cm_mib: list[float] = []
    c1_rates: list[float] = []
    c1_mib: list[float] = []
    in_rates: list[float] = []
    probes: list[float] = []
    meters = {"matched": CpuMeter(pids), "per_record": CpuMeter(pids), "ingest": CpuMeter(pids)}
    tally = _Tally()
    in_seconds = 0.0
    matched_bytes = sum(len(v) for v, _ in work.matched)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        say(f"ingest: warming up with {len(work.warm_bodies)} requests")
        warm = _Tally()
        await _drive(session, urls, work.warm_bodies, concurrency, warm, None)
        if warm.statuses:
            say(f"ingest: warm-up answers other than 202: {dict(warm.statuses)}")
        await _wait_first_segment(session, urls[0].removesuffix("/records"))

        for r in range(1, rounds + 1):
            probes.append(speed_probe())
            tag = f"round {r}/{rounds}"
            say(f"{tag}: (a) matched ceiling, {len(work.matched):,} data.validated envelopes")
            with meters["matched"]:
                s = await ceiling.send("matched", f"{tag} (a) matched")
            cm_rates.append(round(work.matched_records / s, 1))
            cm_mib.append(matched_bytes / s / 2**20)
            say(f"{tag}: (a) matched ceiling {cm_rates[-1]:,.0f} rec/s ({s:.2f} s)")

            say(f"{tag}: (b) ingest, {n_records:,} records in {len(work.bodies)} requests")
            before = tally.accepted
            with meters["ingest"]:
                began = time.perf_counter()
                await _drive(session, urls, work.bodies, concurrency, tally, f"{tag} (b)")
                s = time.perf_counter() - began
            in_seconds += s
            in_rates.append(round((tally.accepted - before) / s, 1))
            say(
                f"{tag}: (b) ingest {in_rates[-1]:,.0f} rec/s ({s:.2f} s); "
                f"ratio vs matched {in_rates[-1] / cm_rates[-1]:.3f}"
            )

            with meters["per_record"]:  # context only, after the pair
                s = await ceiling.send("per_record", None)
            c1_rates.append(round(n_records / s, 1))
            c1_mib.append(sum(len(v) for v, _ in work.per_record) / s / 2**20)
            say(f"{tag}: (a) context, 1 rec/msg: {c1_rates[-1]:,.0f} rec/s ({s:.2f} s)")

    ms = sorted(v * 1000 for v in tally.latencies)
    requests = len(work.bodies) * rounds
    ingest = IngestResult(
        workers=len(urls),
        concurrency=concurrency,
        batch=work.batch,
        requests=requests,
        records_sent=tally.sent,
        records_accepted=tally.accepted,
        seconds=round(in_seconds, 3),
        records_per_s=round(statistics.median(in_rates), 1),
        records_per_s_rounds=in_rates,
        requests_per_s=round(requests / in_seconds, 1),
        mib_per_s=round(tally.bytes / in_seconds / 2**20, 2),
        p50_ms=round(percentile(ms, 50), 2),
        p90_ms=round(percentile(ms, 90), 2),
        p99_ms=round(percentile(ms, 99), 2),
        max_ms=round(ms[-1] if ms else 0.0, 2),
        non_202=sum(tally.statuses.values()),
        non_202_by_status=dict(tally.statuses),
        cpu_percent=meters["ingest"].percent(),
    )
    ceilings = {
        "matched": CeilingResult(
            records=work.matched_records,
            messages=len(work.matched),
            records_per_s=round(statistics.median(cm_rates), 1),
            records_per_s_rounds=cm_rates,
            mib_per_s=round(statistics.median(cm_mib), 2),
            cpu_percent=meters["matched"].percent(),
        ),
        "per_record": CeilingResult(
            records=n_records,
            messages=len(work.per_record),
            records_per_s=round(statistics.median(c1_rates), 1),
            records_per_s_rounds=c1_rates,
            mib_per_s=round(statistics.median(c1_mib), 2),
            cpu_percent=meters["per_record"].percent(),
        ),
    }
    ratios = [i / c for i, c in zip(in_rates, cm_rates, strict=True)]
    ratios_1 = [i / c for i, c in zip(in_rates, c1_rates, strict=True)]
    return {
        "client_loop": client_loop,
        "speed_probe_ms": probes,
        "ceiling": {k: asdict(v) for k, v in ceilings.items()},
        "ingest": asdict(ingest),
        "ratio": round(statistics.median(ratios), 4),
        "ratio_rounds": [round(x, 4) for x in ratios],
        "ratio_per_record": round(statistics.median(ratios_1), 4),
    }


# ------------------------------------------------------------------------------ report


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "nproc": _NPROC,
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        # flywheel_ingest.app.main runs uvicorn with loop="asyncio" and http="auto"
        # (httptools if installed, else the pure-Python h11).
        "service_loop": "asyncio",
        "service_http_parser": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "pythondontwritebytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": {
            d: version(d)
            for d in ("aiokafka", "aiohttp", "fastapi", "starlette", "uvicorn", "pydantic")
        },
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def _rounds(values: list[float]) -> str:
    return " / ".join(f"{v / 1000:,.1f}k" for v in values)


def render(report: dict[str, Any]) -> str:
    """The human-readable table."""
    m, cfg = report["machine"], report["config"]
    matched, ceil_1 = report["ceiling"]["matched"], report["ceiling"]["per_record"]
    ing = report["ingest"]
    ratios = " / ".join(f"{x:.3f}" for x in report["ratio_rounds"])

    def rate(res: dict[str, Any]) -> str:
        return f"{res['records_per_s']:>10,.0f} rec/s"

    rows: list[tuple[str, str, Any]] = [
        (
            f"(a) ceiling: raw producer, ingest's envelopes ({cfg['chunk_records']} rec/msg)",
            rate(matched),
            matched,
        ),
        ("(b) ingest over HTTP, 202s only", rate(ing), ing),
        ("ratio ingest / matched ceiling", f"{report['ratio']:>10.3f}", f"   rounds: {ratios}"),
        ("context: raw producer, 1 rec/msg", rate(ceil_1), ceil_1),
        ("context: ratio ingest / 1 rec/msg", f"{report['ratio_per_record']:>10.3f}", None),
        ("request latency p50", f"{ing['p50_ms']:>10.1f} ms", None),
        ("request latency p99", f"{ing['p99_ms']:>10.1f} ms", None),
        ("non-202 answers + client errors", f"{ing['non_202']:>10d}", None),
        ("requests/s", f"{ing['requests_per_s']:>10,.1f}", None),
        ("request bodies MiB/s", f"{ing['mib_per_s']:>10,.1f}", None),
    ]
    width = max(len(a) for a, _, _ in rows)
    pin = cfg["pinning"]
    lines = [
        "",
        f"Flywheel ingest benchmark  {report['date']}",
        f"machine: nproc={m['nproc']} ({m['cpu_model'] or 'cpu ?'}), "
        f"{m['implementation']} {m['python']}; loop: {report['client_loop']} in the client, "
        f"{m['service_loop']} in the service (uvicorn http={m['service_http_parser']})",
        f"kafka: {report['kafka']['kind']} broker at {report['kafka']['bootstrap']}; producer "
        f"compression={cfg['compression']} linger={cfg['linger_ms']}ms acks=all idempotent",
        f"run: {cfg['records']:,} records x {cfg['rounds']} round(s), batch={cfg['batch']}, "
        f"concurrency={cfg['concurrency']}, ingest workers={cfg['workers']}; "
        "rec/s = median of the rounds",
        (
            f"cores: the ceiling producer and ingest each pinned to {len(pin['measured'])} "
            f"core(s) {pin['measured']} (all ingest workers share them), the HTTP client to "
            f"{pin['client']}, the broker unpinned"
            if pin["measured"]
            else "cores: nothing pinned (--cores 0)"
        ),
        "-" * (width + 44),
    ]
    for a, v, extra in rows:
        if isinstance(extra, dict):
            extra = f"   rounds: {_rounds(extra['records_per_s_rounds'])}"
        lines.append(f"{a:<{width}}  {v}{extra or ''}")
    lines.append("-" * (width + 44))
    if ing["non_202_by_status"]:
        lines.append(f"non-202 by status: {ing['non_202_by_status']}")
    for title, cpu in (
        ("CPU during (b) (100% = one core)", ing["cpu_percent"]),
        ("CPU during (a) matched", matched["cpu_percent"]),
        ("CPU during (a) 1 rec/msg", ceil_1["cpu_percent"]),
    ):
        lines.append(f"{title}: " + ", ".join(f"{k} {_pct(v)}" for k, v in cpu.items()))
    load = [m.get("loadavg_at_start"), m.get("loadavg_at_end")]
    if all(load):
        lines.append(f"load average (1 min) at start / end: {load[0][0]:.2f} / {load[1][0]:.2f}")
    lines.append(
        "speed probe before each round (ms, lower = faster CPU): "
        + " / ".join(f"{p:.0f}" for p in report["speed_probe_ms"])
    )
    lines.append(f"ingest ratio vs matched producer: {report['ratio']:.3f}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Measure ingest throughput against a raw Kafka producer ceiling."
    )
    p.add_argument("--records", type=int, default=200_000, help="records per round (200000)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    p.add_argument("--batch", type=int, default=500, help="records per request body (500)")
    p.add_argument(
        "--workers", type=int, default=1, help="separate ingest processes, round-robin (1)"
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="alternate (a) and (b) this many times (3)"
    )
    p.add_argument("--bootstrap", help="use this broker (default: start one, stop it after)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument(
        "--warmup", type=int, default=None, help="warm-up requests (default: 2 x concurrency)"
    )
    p.add_argument("--seed", type=int, default=0, help="FraudSimulator seed (0)")
    p.add_argument(
        "--specs",
        default=str(ROOT / "examples" / "*" / "flywheel.yaml"),
        help="model spec glob for the ingest service",
    )
    p.add_argument(
        "--cores",
        type=int,
        default=1,
        help="pin the ceiling producer and ingest each to this many cores, the same ones "
        "(the client gets the others); 0 = no pinning (1)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, store)")
    args = p.parse_args(argv)
    for name in ("records", "concurrency", "batch", "workers", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.warmup is None:
        args.warmup = 2 * args.concurrency
    return args


def _on_sigterm(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def matched_envelopes(
    records: list[dict[str, Any]], batch: int, chunk: int, specs: str
) -> list[Message]:
    """The ``data.validated`` messages ingest publishes for these request bodies: each body's
    valid (normalised) records in ``chunk``-record events, one correlation id per body,
    encoded by ``encode_event`` with the headers ``EventProducer`` sets."""
    contract = load_spec_files(specs).get(DATASET)
    if contract is None:
        raise SystemExit(f"no contract for dataset '{DATASET}' in {specs}")
    validator = ContractValidator(contract)
    out: list[Message] = []
    for i in range(0, len(records), batch):
        valid = validator.validate(records[i : i + batch]).valid
        cid = uuid.uuid4()
        headers = [("type", b"data.validated"), ("correlation_id", str(cid).encode())]
        for j in range(0, len(valid), chunk):
            event = RecordsValidated.model_construct(
                event_id=uuid.uuid4(),
                occurred_at=datetime.now(UTC),
                correlation_id=cid,
                schema_version=1,
                type="data.validated",
                dataset=DATASET,
                records=valid[j : j + chunk],
                source=None,
            )
            out.append((encode_event(event), headers))
    return out


def build_workload(args: argparse.Namespace) -> Workload:
    """Generate and serialise everything up front, outside every timed region."""
    n_warm = args.warmup * args.batch
    say(f"generating {args.records:,} records (+ {n_warm:,} for the warm-up)")
    records = FraudSimulator(seed=args.seed).batch(args.records + n_warm)
    warm, records = records[args.records :], records[: args.records]

    def chunks(rs: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
        return [
            (len(rs[i : i + args.batch]), orjson.dumps(rs[i : i + args.batch]))
            for i in range(0, len(rs), args.batch)
        ]

    bodies = chunks(records)
    chunk = IngestSettings().chunk_records  # FLYWHEEL_INGEST_CHUNK_RECORDS, as ingest reads it
    matched = matched_envelopes(records, args.batch, chunk, args.specs)
    work = Workload(
        per_record=[(orjson.dumps(r), None) for r in records],
        matched=matched,
        matched_records=sum(len(orjson.loads(v)["records"]) for v, _ in matched),
        chunk_records=chunk,
        bodies=bodies,
        warm_bodies=chunks(warm),
        batch=args.batch,
    )
    if work.matched_records != len(records):
        say(f"warning: only {work.matched_records:,} of {len(records):,} records are valid")
    say(
        f"serialised: {len(bodies):,} bodies of up to {args.batch} records "
        f"(~{len(bodies[0][1]) / 1024:.0f} KiB each), {len(matched):,} data.validated "
        f"envelopes of up to {chunk} records (~{len(matched[0][0]) / 1024:.0f} KiB each)"
    )
    return work


def pick_cores(n: int) -> tuple[list[int], list[int]]:
    """(cores for the ceiling producer and for ingest, cores for the HTTP client): the last
    ``n`` cores this process may use, and the others (all of them when none is left)."""
    avail = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if n <= 0 or not avail:
        return [], avail
    measured = avail[-n:]
    return measured, [c for c in avail if c not in measured] or avail


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load_at_start and load_at_start[0] > 0.5 * (os.cpu_count() or 1):
        say(
            f"warning: load average {load_at_start[0]:.2f} before starting: other jobs share "
            "this machine and will skew the numbers (see 'other processes' CPU in the table)"
        )
    work = build_workload(args)

    workdir = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    broker: BrokerHandle | None = None
    ingests: Ingests | None = None
    failed = True
    try:
        if args.bootstrap:
            broker = BrokerHandle(args.bootstrap, "external")
        else:
            say("starting a Kafka broker (pass --bootstrap to use a running one)")
            broker = acquire_broker()
        broker_pid = broker.local.pid if broker.local is not None else None

        measured_cores, client_cores = pick_cores(args.cores)
        say(f"starting {args.workers} ingest process(es)")
        ingests = Ingests(broker.bootstrap, workdir, args.workers, args.specs, measured_cores)
        began = time.monotonic()
        ingests.start()
        say(f"ingest ready in {time.monotonic() - began:.1f} s: {', '.join(ingests.urls)}")
        say("starting the ceiling producer process")
        ceiling = CeilingProcess(
            broker.bootstrap,
            measured_cores,
            {"matched": (work.matched, work.chunk_records), "per_record": (work.per_record, 1)},
        )
        ceiling.start()
        if measured_cores:
            say(f"pinned: ceiling and ingest to cores {measured_cores}, client to {client_cores}")
            os.sched_setaffinity(0, client_cores)
        try:
            measured = asyncio.run(
                measure(
                    ceiling,
                    ingests.urls,
                    work,
                    args.concurrency,
                    args.rounds,
                    {
                        "ingest": ingests.pids,
                        "ceiling": [ceiling.pid],
                        "bench": [os.getpid()],
                        "broker": [broker_pid],
                    },
                )
            )
        finally:
            ceiling.stop()
        settings = KafkaSettings()
        report: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {**machine_info(), "loadavg_at_start": load_at_start},
            "kafka": {"kind": broker.kind, "bootstrap": broker.bootstrap},
            "config": {
                "records": args.records,
                "rounds": args.rounds,
                "concurrency": args.concurrency,
                "batch": args.batch,
                "workers": args.workers,
                "warmup_requests": len(work.warm_bodies),
                "seed": args.seed,
                "compression": settings.compression,
                "linger_ms": settings.linger_ms,
                "chunk_records": work.chunk_records,
                "pinning": {"measured": measured_cores, "client": client_cores},
            },
            **measured,
        }
        print(render(report), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            say(f"wrote {args.json}")
        failed = False
        return 0
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        failed = False  # nothing to debug: no log tails, no kept temp dir
        return 130
    finally:
        # A second Ctrl-C (or uv forwarding the first one) must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ingests is not None:
            if failed:
                for sp in ingests.procs:
                    tail = sp.tail(15)
                    if tail:
                        say(f"last lines of {sp.log_path}:\n{tail}")
            say("stopping ingest")
            ingests.stop()
        if broker is not None and broker.kind != "external":
            say("stopping the broker")
            broker.close()
        if args.keep_tmp or failed:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
