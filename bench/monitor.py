"""Monitor benchmark: throughput, drift detection delay, false alarms and alert latency.

One monitor worker (``python -m flywheel_monitor``, a faust-streaming app) per drift backend,
with a registry process, on a real Kafka broker; the label join is on. The bench plays
serving's part: it publishes prediction-log events (``PredictionsLogged``, 500 predictions
each, like serving's log batches: the fraud model's 10 features, ``{"label", "score"}`` with
the real score of the example's logistic regression, record id, event time) and late labels
(``LabelsReceived`` for 30 % of the predictions, two log batches behind). It prints, once per
backend (``backend: NAME`` first), exactly::

    throughput: <N> predictions/s
    drift detection delay p50: <N> predictions
    false alarms: <N> per 100000 predictions
    drift alert latency p50: <N> ms

plus context lines (indented). It measures, it does not judge: nothing fails on a low number.

    uv run --frozen python bench/monitor.py [--quick] [--backends permissive,alibi]
                                            [--bootstrap HOST:PORT] [--json out.json]

Set-up per backend: a fresh topic prefix, a registry process (SQLite, temp store) and one
monitor worker (``FLYWHEEL_MONITOR_DRIFT_BACKEND=permissive`` or ``alibi``). Every stream has
its own model (the example fraud spec under another name, ``drift.cooldown_s = 0``) with one
``production`` version whose reference sample is 2000 fresh rows of its own simulator seed,
scored by the model. The bench waits until the monitor calibrated every version
(``flywheel_monitor_calibrations_total``) before the first prediction, so no prediction waits
for a calibration. All events are built and serialised before anything is timed.

Method
------
* **Backlog** (throughput, false alarms, detection delay). Streams are sent one after the
  other, each as fast as one aiokafka producer can (pre-serialised bytes, configured like
  ``EventProducer``; it sends a 60k stream in < 1 s, so production does not limit), the next
  one once the monitor is done with the previous: its ``flywheel_monitor_predictions_total``
  for the model reached the stream's length, the label join
  (``flywheel_monitor_label_join_total``) received every prediction and label sent so far, and
  no agent handled a message for 1.5 s (``flywheel_monitor_event_seconds_count`` still; the
  done time is the last poll at which it moved). ``throughput`` = all backlog predictions / the
  sum of the streams' times from the first send to done, i.e. drift, estimates, repartition,
  label join, label metrics and retrain episodes included ("drift side" = the predictions
  agent alone). /metrics is polled every 0.5 s (a scrape costs the monitor ≈ 10 ms). One
  stream at a time also keeps one drift detector busy at a time, as one model's traffic would
  (alibi's sampling cap is per detector, see below). The monitor's CPU time gives a second,
  load-independent figure: predictions per monitor CPU second.
  Clean streams: ``FraudSimulator(seed)``; drift streams:
  ``FraudSimulator(seed, drift="covariate", drift_at=N)`` with N not a multiple of 50 or 500.
* **Which prediction fired.** A ``drift.detected`` event carries no row index, but its id is
  ``derived_id("drift.detected", model, version, detector, position)`` where ``position`` is
  the number of rows the detector had seen when its test ran (all rows, sampled or not). The
  bench inverts it by enumerating positions 0..stream length. Each model's detector sees only
  that model's stream from its first row (calibrated before), so ``position`` is the row count
  of the stream: exact, independent of batching, timing and machine load.
  ``detection delay = position - N`` (drifted predictions seen up to the one that fired, ≥ 1),
  first event after the onset, per drift stream; p50 over streams (nearest rank).
* **False alarms** = ``drift.detected`` events at positions ≤ N on every clean row: the clean
  backlog streams, the drift streams before their onset and the live episodes' clean part
  (fresh reference and version per seed). ``drift.cooldown_s`` is 0 in every bench spec (the
  monitor spaces alerts by it in event time), so each alarm is an event. Per 100 000.
* **Alert latency** (live episodes, after the backlog is done). On each clean model, its
  simulator continues at a steady ``--rate`` predictions/s (a 500-prediction message every
  500/rate s, labels as above) for ``--live-clean-s`` seconds, then turns to covariate drift
  at a message boundary N. Latency = wall time from handing the first drifted message to the
  producer to the arrival, on a plain aiokafka consumer of ``drift.detected``, of the first
  event of that model with position > N. p50 over episodes (nearest rank). Live episodes also
  give a detection delay at a realistic pace (context line).

alibi-detect (``--backends alibi``): BSL-1.1, optional; if ``import alibi_detect`` fails the
bench says so and skips it. Its calibration simulates streams, so it runs with
``FLYWHEEL_MONITOR_DRIFT_N_BOOTSTRAP=--alibi-n-bootstrap`` (2100: alibi needs ≥ 2040 for a
500-row window; ≈ 60 s per version alone, 2-3 min with two in parallel on a busy machine) and
fewer seeds (``--alibi-seeds``). Its specs set ``drift.binary: chi2`` (``--alibi-binary``):
with ``fet`` the ``FETDriftOnline`` calibration raised ``ValueError: p < 0, p > 1 or p is
NaN`` for the bench's references (it depends on the reference), and the monitor then waits
silently; chi2 is also what the permissive engine runs on booleans. With so few bootstraps
alibi can only calibrate ``CVMDriftOnline`` to an ERT of ~10² fed rows, and its windowed tests
are calibrated to the spec's ``ert`` (5000 rows, i.e. ~20 false alarms per 100 000 by design;
the permissive engine uses at least 2·10⁵): expect false alarms. Online detectors are fed at
most ``max_update_rate`` (50) rows/s per detector (stride from the measured arrival rate).

Without ``--bootstrap`` a broker is acquired with ``acquire_broker()``
(``FLYWHEEL_KAFKA_BOOTSTRAP``, else Docker, else a local JVM broker) and stopped at the end.
Only loopback addresses are used. Ctrl-C (or SIGTERM) stops the monitor (and its calibration
processes), the registry and the broker. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import importlib.util
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from flywheel_devkit.stack import LocalStack
from flywheel_devkit.testing.kafka import BrokerHandle, acquire_broker
from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_fraud import recipes
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.events import (
    DriftDetected,
    Label,
    LabelsReceived,
    Prediction,
    PredictionsLogged,
    derived_id,
    encode_event,
    parse_event,
)
from flywheel_shared.modelio import dump_model, load_model
from flywheel_shared.registry import Lineage, RegistryClient, VersionCreate
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "examples" / "fraud" / "flywheel.yaml"
TOKEN = "bench-token"
DATASET = "transactions"
BATCH = 500  # predictions per PredictionsLogged (serving's log batch)
LABEL_LAG = 2  # label messages follow their predictions by this many log batches
FRAUD_RATE = 0.05
SIM_RATE = 100.0  # simulated transactions per second of event time
REF_ROWS = 2000
POLL_S = 0.5  # /metrics polling (each scrape costs the monitor ~10 ms of its loop)
QUIET_S = 1.5  # no agent handled a message for this long: the monitor is done
_T0 = time.monotonic()


def say(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ CPU use

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
    values = [int(v) for v in first[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK


class CpuMeter:
    """CPU used by named processes inside ``with meter:`` blocks, as % of one core."""

    def __init__(self, pids: dict[str, list[int | None]]) -> None:
        self.pids = pids
        self.used: dict[str, float] = dict.fromkeys([*pids, "other processes"], 0.0)
        self.wall = 0.0
        self._begin: dict[str, float | None] = {}
        self._t = 0.0

    def _sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pids in self.pids.items():
            values = [cpu_seconds(p) for p in pids]
            out[name] = None if not values or None in values else sum(v or 0 for v in values)
        busy = machine_busy_seconds()
        ours = [v for v in out.values() if v is not None]
        out["other processes"] = None if busy is None else busy - sum(ours)
        return out

    def __enter__(self) -> CpuMeter:
        self._begin, self._t = self._sample(), time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._sample()
        self.wall += time.monotonic() - self._t
        for name, value in end.items():
            begin = self._begin.get(name)
            if value is not None and begin is not None:
                self.used[name] += value - begin

    def percent(self, wall: float | None = None) -> dict[str, float]:
        """CPU as % of one core over ``wall`` seconds (default: the time inside the blocks)."""
        wall = self.wall if wall is None else wall
        return {k: round(100 * v / wall, 1) if wall else 0.0 for k, v in self.used.items()}


# ------------------------------------------------------------------------------ model, data


@lru_cache(maxsize=1)
def model_bytes() -> bytes:
    """The example's logistic regression (skops), trained like the monitor tests' "good" one."""
    spec = load_spec(SPEC_PATH)
    frame = pd.DataFrame(FraudSimulator(seed=3, fraud_rate=FRAUD_RATE).batch(4000))
    params = {"label": "is_fraud", "features": list(spec.features), "seed": 42, "C": 1.0}
    return dump_model(recipes.logistic_regression(frame, params))


@lru_cache(maxsize=1)
def _model() -> Any:
    data = model_bytes()
    return load_model(data, hashlib.sha256(data).hexdigest())


FEATURES: tuple[str, ...] = tuple(load_spec(SPEC_PATH).features)


def scores(rows: list[dict[str, Any]]) -> list[float]:
    """The model's P(fraud) for ``rows`` (one batched ``predict_proba``)."""
    frame = pd.DataFrame({f: [r[f] for r in rows] for f in FEATURES})
    return [float(s) for s in _model().predict_proba(frame)[:, 1]]


def reference_parquet(seed: int) -> bytes:
    """What the trainer stores with a version: 2000 fresh rows, label and score."""
    rows = FraudSimulator(seed=seed, fraud_rate=FRAUD_RATE, rate_per_s=SIM_RATE).batch(REF_ROWS)
    frame = pd.DataFrame(rows)[[*FEATURES, "is_fraud"]]
    frame["_score"] = scores(rows)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def bench_spec(name: str, binary: str | None = None) -> ModelSpec:
    """The example fraud spec under another name, with no spacing between drift alerts."""
    data = load_spec(SPEC_PATH).model_dump(by_alias=True)
    data["name"] = name
    data["drift"]["cooldown_s"] = 0.0
    if binary is not None:
        data["drift"]["binary"] = binary
    return ModelSpec.model_validate(data)


@dataclass
class Msg:
    labels: bool  # a LabelsReceived (else a PredictionsLogged)
    value: bytes
    end: int = 0  # predictions: the model-stream index after its last row


@dataclass
class Stream:
    """One model's predictions (and labels), serialised, in send order."""

    name: str  # e.g. clean-1, drift-2, live-1
    model: str
    seed: int
    kind: str  # clean | drift | live
    first: int  # index of its first row in the model's stream
    rows: int
    onset: int | None  # first drifted row index (model-stream index), None if clean
    messages: list[Msg]
    n_labels: int
    onset_msg: int | None = None  # index in messages of the first drifted prediction message

    @property
    def end(self) -> int:
        return self.first + self.rows


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def build_stream(
    name: str,
    model: str,
    seed: int,
    kind: str,
    *,
    first: int,
    rows: int,
    onset: int | None,
    label_share: float,
    version: int = 1,
) -> Stream:
    """Simulate, score and serialise ``rows`` predictions of ``model`` from index ``first``."""
    sim = FraudSimulator(
        seed=seed,
        fraud_rate=FRAUD_RATE,
        rate_per_s=SIM_RATE,
        drift="covariate" if onset is not None else "none",
        drift_at=onset,
    )
    sim.emitted = first  # records depend only on (seed, index): skip the first ones
    data = sim.batch(rows)
    s = scores(data)
    rng = np.random.default_rng([seed, first, 7])
    labelled = rng.random(rows) < label_share
    msgs: list[Msg] = []
    waiting: list[bytes] = []
    n_labels = 0
    onset_msg = None
    for k in range(0, rows, BATCH):
        chunk = data[k : k + BATCH]
        preds = []
        labs = []
        for i, r in enumerate(chunk):
            at = _at(r["event_time"])
            score = s[k + i]
            tx = r["transaction_id"]
            preds.append(
                Prediction.model_construct(
                    prediction_id=f"{tx}/{version}/production",
                    request_id=tx,
                    record_id=tx,
                    version=version,
                    route="production",
                    features={f: r[f] for f in FEATURES},
                    output={"label": score >= 0.5, "score": score},
                    latency_ms=3.0,
                    at=at,
                )
            )
            if labelled[k + i]:
                labs.append(Label(record_id=tx, label=bool(r["is_fraud"]), observed_at=at))
        if onset is not None and onset_msg is None and first + k + len(chunk) > onset:
            onset_msg = len(msgs)
        ev = PredictionsLogged(model=model, predictions=preds)
        msgs.append(Msg(False, encode_event(ev), first + k + len(chunk)))
        if labs:
            n_labels += len(labs)
            waiting.append(encode_event(LabelsReceived(dataset=DATASET, labels=labs)))
        if len(waiting) > LABEL_LAG:
            msgs.append(Msg(True, waiting.pop(0)))
    msgs.extend(Msg(True, w) for w in waiting)
    return Stream(name, model, seed, kind, first, rows, onset, msgs, n_labels, onset_msg)


def check_wire_format(stream: Stream) -> None:
    """The monitor must read what the bench built: parse one message of each kind."""
    for m in stream.messages[:5]:
        ev = parse_event(m.value)
        assert isinstance(ev, LabelsReceived if m.labels else PredictionsLogged), type(ev)


# ------------------------------------------------------------------------------ processes


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the bench process exits."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _is_ours(pid: int) -> bool:
    """Still a (non-zombie) Python multiprocessing/flywheel process?"""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and (b"multiprocessing" in cmd or b"flywheel" in cmd)


class Service:
    """A service subprocess in its own session (Ctrl-C reaches only the bench)."""

    def __init__(self, sp: ServiceProcess) -> None:
        self.sp = sp
        self._kids: set[int] = set()
        self.left_behind: list[int] = []

    @property
    def url(self) -> str:
        return self.sp.url

    @property
    def pid(self) -> int | None:
        return self.sp.proc.pid if self.sp.proc else None

    def spawn(self) -> None:
        with self.sp.log_path.open("ab") as log:
            self.sp.proc = subprocess.Popen(
                [sys.executable, "-m", self.sp.module],
                env=self.sp.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def alive(self) -> bool:
        return self.sp.proc is not None and self.sp.proc.poll() is None

    def note_children(self) -> list[int]:
        """Remember the current child processes (the monitor's calibration pool)."""
        if self.pid is not None and self.alive():
            self._kids.update(_children(self.pid))
        return sorted(self._kids)

    def stop(self, timeout: float = 30.0) -> None:
        if self.sp.proc is None:
            return
        self.note_children()
        with contextlib.suppress(Exception):
            self.sp.stop(timeout=timeout)  # SIGTERM, wait, then SIGKILL
        # Children the service left behind (its calibration pool after SIGTERM or SIGKILL).
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(_is_ours(k) for k in self._kids):
            time.sleep(0.1)
        for kid in sorted(self._kids):
            if _is_ours(kid):
                say(f"child {kid} of {self.sp.module} still alive after it exited: killing it")
                self.left_behind.append(kid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, signal.SIGKILL)
        self._kids.clear()


class Stack:
    """Registry + one monitor worker on a fresh topic prefix."""

    def __init__(self, bootstrap: str, workdir: Path, backend: str, args: argparse.Namespace):
        self.backend = backend
        self.bootstrap = bootstrap
        self.dir = workdir / backend
        self.dir.mkdir(parents=True, exist_ok=True)
        # The local stack's launcher with its registry; the monitor runs with its own
        # defaults (no demo pacing), the backend under test and the calibration pool.
        launcher = LocalStack(
            run_dir=self.dir,
            bootstrap=bootstrap,
            prefix=f"mbench{uuid.uuid4().hex[:8]}",
            token=TOKEN,
            services=("registry",),
            service_env={
                "registry": {
                    "FLYWHEEL_REGISTRY_HOST": "127.0.0.1",
                    "FLYWHEEL_REGISTRY_RELAY_POLL_S": "0.1",
                }
            },
        )
        self.prefix = launcher.prefix
        self.topics = launcher.topics
        self.registry_url = launcher.registry_url
        self.registry = Service(launcher.procs["registry"])
        self.monitor = Service(
            launcher.process(
                "monitor",
                {
                    "FLYWHEEL_MONITOR_HOST": "127.0.0.1",
                    "FLYWHEEL_MONITOR_REGISTRY_TOKEN": None,
                    "FLYWHEEL_MONITOR_REGISTRY_REFRESH_S": None,
                    "FLYWHEEL_MONITOR_WORKER_NAME": "bench-1",
                    "FLYWHEEL_MONITOR_APP_ID": "monitor",
                    "FLYWHEEL_MONITOR_DRIFT_BACKEND": backend,
                    "FLYWHEEL_MONITOR_CALIBRATION_WORKERS": str(args.calibration_workers),
                    "FLYWHEEL_MONITOR_VERDICT_HOLD_INTERVAL_S": None,
                    "FLYWHEEL_MONITOR_DRIFT_N_BOOTSTRAP": (
                        str(args.alibi_n_bootstrap) if backend == "alibi" else None
                    ),
                },
                label="monitor",
            )
        )

    def client(self) -> RegistryClient:
        return RegistryClient(self.registry_url, TOKEN)

    def start(self) -> None:
        began = time.monotonic()
        self.registry.spawn()
        self.registry.sp.wait_ready(90)
        say(f"{self.backend}: registry ready ({time.monotonic() - began:.1f} s)")
        began = time.monotonic()
        self.monitor.spawn()
        self.monitor.sp.wait_ready(180)
        took = time.monotonic() - began
        say(f"{self.backend}: monitor ready ({took:.1f} s), pid {self.monitor.pid}")

    def stop(self) -> None:
        self.monitor.stop()
        self.registry.stop()

    def tails(self) -> str:
        return "\n".join(
            f"last lines of {s.sp.log_path}:\n{s.sp.tail(15)}"
            for s in (self.monitor, self.registry)
        )


async def register(reg: RegistryClient, spec: ModelSpec, reference: bytes, art_sha: str) -> int:
    """Register a production version of ``spec``'s model with a reference sample."""
    await reg.put_spec(spec)
    ref = await reg.upload_artifact(reference)
    body = VersionCreate(
        run_id=uuid.uuid4().hex,
        status="candidate",
        artifact_sha256=art_sha,
        reference_sha256=ref.sha256,
        lineage=Lineage(
            dataset=DATASET,
            snapshot_id="0" * 64,
            snapshot_rows=4000,
            code_version="bench",
            recipe=spec.recipe.entrypoint,
            recipe_sha256=hashlib.sha256(b"recipe").hexdigest(),
            seed=42,
        ),
        training_seconds=1.0,
        correlation_id=str(uuid.uuid4()),
    )
    version = (await reg.register_version(spec.name, body)).version
    await reg.move_alias(spec.name, "production", version)
    return version


# ------------------------------------------------------------------------------ metrics


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of a Prometheus metric: label text → value."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name) :]] = float(value)
    return out


def metric_sum(text: str, name: str, **labels: str) -> float:
    return sum(
        v
        for k, v in metric_values(text, name).items()
        if all(f'{a}="{b}"' in k for a, b in labels.items())
    )


class Probe:
    """Reads the monitor's /metrics (aiohttp: the event loop also times drift alerts)."""

    def __init__(self, session: aiohttp.ClientSession, stack: Stack) -> None:
        self.session = session
        self.stack = stack

    async def text(self) -> str:
        if not self.stack.monitor.alive():
            raise RuntimeError(f"the monitor exited:\n{self.stack.monitor.sp.tail(30)}")
        async with self.session.get(self.stack.monitor.url + "/metrics") as resp:
            return await resp.text()


# ------------------------------------------------------------------------------ drift alerts


@dataclass
class Alert:
    arrived: float  # time.monotonic() when the bench's consumer got it
    event: DriftDetected


class AlertLog:
    """A plain aiokafka consumer of ``drift.detected``, from the beginning, in the background."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.alerts: list[Alert] = []
        self.by_model: dict[str, list[Alert]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[tuple[str, int, str], tuple[int, int, dict[uuid.UUID, int]]] = {}

    async def start(self) -> None:
        c = AIOKafkaConsumer(
            **KafkaSettings(bootstrap=self.bootstrap).client_kwargs(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="flywheel-bench-alerts",
        )
        await c.start()
        self._consumer = c
        # No group: subscribing assigns every partition of the topic (from the beginning).
        c.subscribe([self.topic])
        self._task = asyncio.create_task(self._run())
        deadline = time.monotonic() + 30
        while not c.assignment():
            if time.monotonic() > deadline or self._task.done():
                raise RuntimeError(f"no partitions of {self.topic} assigned")
            await asyncio.sleep(0.1)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            now = time.monotonic()
            for records in batch.values():
                for rec in records:
                    with contextlib.suppress(ValueError):
                        ev = parse_event(rec.value or b"")
                        if isinstance(ev, DriftDetected):
                            a = Alert(now, ev)
                            self.alerts.append(a)
                            self.by_model[ev.model].append(a)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def position(self, ev: DriftDetected, lo: int, hi: int) -> int | None:
        """The row count of the test that fired ``ev``, searched in ``lo..hi``.

        Inverts the event's derived id (``derived_id`` over model, version, detector and
        position); ~10 µs per candidate, so ranges are cached per (model, version, detector).
        """
        key = (ev.model, ev.version, ev.detector)
        have = self._positions.get(key)
        if have is None or not (have[0] <= lo and hi <= have[1]):
            if have is not None:
                lo, hi = min(lo, have[0]), max(hi, have[1])
            table = {
                derived_id("drift.detected", ev.model, ev.version, ev.detector, p): p
                for p in range(lo, hi + 1)
            }
            have = (lo, hi, table)
            self._positions[key] = have
        return have[2].get(ev.event_id)


# ------------------------------------------------------------------------------ producing


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    """Configured like flywheel's EventProducer (acks=all, idempotent, zstd by default)."""
    s = KafkaSettings(bootstrap=bootstrap)
    return AIOKafkaProducer(
        **s.client_kwargs(),
        client_id="flywheel-bench-monitor",
        acks="all",
        enable_idempotence=True,
        linger_ms=s.linger_ms,
        compression_type=None if s.compression == "none" else s.compression,
        max_request_size=s.max_request_bytes,
        max_batch_size=1024 * 1024,
        request_timeout_ms=30_000,
    )


async def send_all(producer: AIOKafkaProducer, stack: Stack, stream: Stream) -> float:
    """Send a stream's messages without waiting, then wait for every ack; returns seconds."""
    preds, labels = stack.topics("predictions"), stack.topics("data.labels")
    key, lkey = stream.model.encode(), DATASET.encode()
    began = time.monotonic()
    futures = []
    for m in stream.messages:
        if m.labels:
            futures.append(await producer.send(labels, m.value, key=lkey))
        else:
            futures.append(await producer.send(preds, m.value, key=key))
    await asyncio.gather(*futures)
    return time.monotonic() - began


# ------------------------------------------------------------------------------ the run


@dataclass
class Totals:
    """Cumulative counts the monitor must reach (the label join is shared by all models)."""

    preds: int = 0
    labels: int = 0


@dataclass
class StreamResult:
    name: str
    kind: str
    rows: int
    seconds: float | None  # first send → done (None: not done before the timeout)
    send_seconds: float
    drift_side_seconds: float | None  # first send → predictions_total reached
    processed: int


@dataclass
class BackendResult:
    backend: str
    available: bool = True
    note: str = ""
    streams: list[StreamResult] = field(default_factory=list)
    throughput: float | None = None
    backlog_cpu: dict[str, float] = field(default_factory=dict)
    delays: dict[str, int | None] = field(default_factory=dict)  # drift stream → delay
    live_delays: dict[str, int | None] = field(default_factory=dict)
    latencies_ms: dict[str, float | None] = field(default_factory=dict)
    false_alarms: int = 0
    clean_rows: int = 0
    alarms_by_stream: dict[str, int] = field(default_factory=dict)
    detectors_first: dict[str, str] = field(default_factory=dict)
    calibration_s: float = 0.0
    versions: int = 0
    sampling: dict[str, float] = field(default_factory=dict)
    drift_events: int = 0
    unmatched_events: int = 0
    partial: bool = False
    left_behind: list[int] = field(default_factory=list)
    alarm_details: list[str] = field(default_factory=list)  # stream@position:detector
    per_cpu_second: float | None = None  # backlog predictions per monitor CPU second
    live_drain_s: dict[str, float] = field(default_factory=dict)


async def wait_done(
    probe: Probe, stream: Stream, totals: Totals, timeout: float, began: float
) -> tuple[float | None, float | None, int]:
    """Poll /metrics until the monitor handled ``stream``; (done, drift side done, processed).

    Done = the drift side read the stream, the label join received every prediction and label
    sent so far, and no agent handled a message for ``QUIET_S`` (the signals agent, which holds
    the label metrics and episodes, has no count to wait for); the time is that of the last
    poll at which an agent's ``flywheel_monitor_event_seconds_count`` still moved.
    """
    drift_done: float | None = None
    processed = 0
    deadline = began + timeout
    last_events = -1.0
    last_change = began
    while True:
        text = await probe.text()
        now = time.monotonic()
        processed = int(metric_sum(text, "flywheel_monitor_predictions_total", model=stream.model))
        if drift_done is None and processed >= stream.end:
            drift_done = now - began
        events = metric_sum(text, "flywheel_monitor_event_seconds_count")
        if events != last_events:
            last_events, last_change = events, now
        join = metric_values(text, "flywheel_monitor_label_join_total")
        jp = sum(v for k, v in join.items() if 'side="prediction"' in k)
        jl = sum(v for k, v in join.items() if 'side="label"' in k)
        joined = jp >= totals.preds and jl >= totals.labels
        if drift_done is not None and joined and now - last_change >= QUIET_S:
            return last_change - began, drift_done, processed
        if now > deadline:
            return None, drift_done, processed
        await asyncio.sleep(POLL_S)


def start_py_spy(pid: int | None, profile: Path, backend: str) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` (raw, non-blocking) on the monitor until SIGINT; None without py-spy."""
    if pid is None or shutil.which("py-spy") is None:
        say("py-spy not found: no profile")
        return None
    profile.mkdir(parents=True, exist_ok=True)
    out = profile / f"monitor-{backend}.txt"
    cmd = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "50"]
    spy = subprocess.Popen(
        [*cmd, "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    say(f"py-spy recording the monitor into {out}")
    return spy


async def run_backlog(
    stack: Stack,
    probe: Probe,
    alerts: AlertLog,
    streams: list[Stream],
    res: BackendResult,
    totals: Totals,
    pids: dict[str, list[int | None]],
    min_rate: float,
    profile: Path | None,
) -> None:
    meter = CpuMeter(pids)
    producer = make_producer(stack.bootstrap)
    await producer.start()
    spy = start_py_spy(stack.monitor.pid, profile, stack.backend) if profile else None
    try:
        for st in streams:
            totals.preds += st.rows
            totals.labels += st.n_labels
            timeout = 60 + st.rows / min_rate
            say(
                f"{stack.backend}: backlog {st.name}: {st.rows:,} predictions, "
                f"{st.n_labels:,} labels"
            )
            with meter:
                began = time.monotonic()
                send_s = await send_all(producer, stack, st)
                done, drift_done, processed = await wait_done(probe, st, totals, timeout, began)
            res.streams.append(
                StreamResult(
                    st.name, st.kind, st.rows, done, send_s, drift_done, processed - st.first
                )
            )
            if done is None:
                say(
                    f"{stack.backend}: {st.name} not done after {timeout:.0f} s "
                    f"({processed - st.first:,}/{st.rows:,} predictions read): stopping the backlog"
                )
                res.partial = True
                break
            say(
                f"{stack.backend}: {st.name} done in {done:.2f} s "
                f"({st.rows / done:,.0f} predictions/s; sent in {send_s:.2f} s; "
                f"drift side {drift_done:.2f} s); drift alerts so far "
                f"{len(alerts.by_model.get(st.model, []))}"
            )
    finally:
        await producer.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(Exception):
                spy.wait(30)
    done_streams = [s for s in res.streams if s.seconds]
    # Over the streams' busy time (first send → done), not the quiet wait after each one.
    busy = sum(s.seconds or 0 for s in done_streams)
    res.backlog_cpu = meter.percent(busy or None)
    if done_streams:
        rows = sum(s.rows for s in done_streams)
        res.throughput = rows / busy
        if meter.used.get("monitor"):
            res.per_cpu_second = rows / meter.used["monitor"]


async def run_live(
    stack: Stack,
    probe: Probe,
    alerts: AlertLog,
    episodes: list[Stream],
    res: BackendResult,
    rate: float,
) -> dict[str, float]:
    """Paced episodes; returns stream name → wall time the first drifted message was sent."""
    producer = make_producer(stack.bootstrap)
    await producer.start()
    sent_at: dict[str, float] = {}
    preds_t, labels_t = stack.topics("predictions"), stack.topics("data.labels")
    interval = BATCH / rate
    try:
        for ep in episodes:
            assert ep.onset is not None and ep.onset_msg is not None
            say(
                f"{stack.backend}: live {ep.name} at {rate:,.0f} predictions/s, drift after "
                f"{(ep.onset - ep.first) / rate:.1f} s"
            )
            key, lkey = ep.model.encode(), DATASET.encode()
            before = len(alerts.by_model.get(ep.model, []))
            t0 = time.monotonic()
            n_pred = 0
            t_drift: float | None = None
            futures = []
            stop_at: float | None = None
            for i, m in enumerate(ep.messages):
                if m.labels:
                    futures.append(await producer.send(labels_t, m.value, key=lkey))
                    continue
                target = t0 + n_pred * interval
                delay = target - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if i == ep.onset_msg:
                    t_drift = time.monotonic()
                    sent_at[ep.name] = t_drift
                futures.append(await producer.send(preds_t, m.value, key=key))
                n_pred += 1
                # Positions are checked afterwards (inverting ids would block the loop that
                # timestamps the alerts); after the first alert a little more traffic, then stop.
                if (
                    t_drift is not None
                    and stop_at is None
                    and any(a.arrived >= t_drift for a in alerts.by_model[ep.model][before:])
                ):
                    stop_at = time.monotonic() + 1.5
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
            await asyncio.gather(*futures)
            last_sent = time.monotonic()
            sent_rows = n_pred * BATCH
            # Let the monitor finish this model before the next episode; how long it takes
            # after the last send shows whether it kept up with the rate.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = await probe.text()
                got = metric_sum(text, "flywheel_monitor_predictions_total", model=ep.model)
                if got >= ep.first + sent_rows:
                    res.live_drain_s[ep.name] = time.monotonic() - last_sent
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            ep.rows = sent_rows  # what was actually sent (the episode stops after the alert)
    finally:
        await producer.stop()
    return sent_at


def analyse(
    res: BackendResult,
    alerts: AlertLog,
    backlog: list[Stream],
    live: list[Stream],
    sent_at: dict[str, float],
) -> None:
    """Positions of every alert → false alarms, detection delays, latencies."""
    fa = 0
    clean = 0
    done_names = {s.name for s in res.streams if s.seconds is not None}
    ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for st in [*backlog, *live]:
        ranges[st.model].append((st.first, st.end))
    per_model: dict[str, list[tuple[int, Alert]]] = defaultdict(list)
    for model, items in alerts.by_model.items():
        for a in items:
            pos = None
            for lo, hi in sorted(ranges.get(model, []), key=lambda r: -r[0]):
                if pos is None:
                    pos = alerts.position(a.event, lo, hi)
            if pos is None:
                res.unmatched_events += 1
                continue
            per_model[model].append((pos, a))
    res.drift_events = sum(len(v) for v in alerts.by_model.values())
    for st in backlog:
        if st.name not in done_names:
            continue
        events = sorted(
            ((p, a) for p, a in per_model.get(st.model, []) if st.first < p <= st.end),
            key=lambda x: x[0],
        )
        cut = st.onset if st.onset is not None else st.end
        n_fa = sum(1 for p, _ in events if p <= cut)
        res.alarm_details += [f"{st.name}@{p}:{a.event.detector}" for p, a in events if p <= cut]
        fa += n_fa
        clean += cut - st.first
        res.alarms_by_stream[st.name] = n_fa
        if st.onset is not None:
            after = [(p, a) for p, a in events if p > st.onset]
            res.delays[st.name] = (after[0][0] - st.onset) if after else None
            if after:
                res.detectors_first[st.name] = after[0][1].event.detector
    for ep in live:
        if ep.name not in sent_at or ep.onset is None:
            continue
        events = sorted(
            ((p, a) for p, a in per_model.get(ep.model, []) if ep.first < p <= ep.end),
            key=lambda x: x[0],
        )
        n_fa = sum(1 for p, _ in events if p <= ep.onset)
        res.alarm_details += [
            f"{ep.name}@{p}:{a.event.detector}" for p, a in events if p <= ep.onset
        ]
        fa += n_fa
        clean += ep.onset - ep.first
        res.alarms_by_stream[ep.name] = n_fa
        after = [(p, a) for p, a in events if p > ep.onset]
        if after:
            first_arrival = min(a.arrived for p, a in after)
            res.live_delays[ep.name] = after[0][0] - ep.onset
            res.latencies_ms[ep.name] = (first_arrival - sent_at[ep.name]) * 1000
            res.detectors_first[ep.name] = after[0][1].event.detector
        else:
            res.live_delays[ep.name] = None
            res.latencies_ms[ep.name] = None
    res.false_alarms = fa
    res.clean_rows = clean


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (None for an empty list)."""
    if not values:
        return None
    v = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(v)))
    return v[min(rank, len(v)) - 1]


# ------------------------------------------------------------------------------ workload


@dataclass
class Plan:
    clean: list[Stream]
    drift: list[Stream]
    live: list[Stream]


def build_plan(args: argparse.Namespace) -> Plan:
    """Every stream of the run, serialised (shared by the backends: each has its own topics)."""
    clean, drift, live = [], [], []
    began = time.monotonic()
    for k in range(args.clean_seeds):
        seed = 100 + k
        clean.append(
            build_stream(
                f"clean-{k}",
                f"clean-{k}",
                seed,
                "clean",
                first=0,
                rows=args.clean_rows,
                onset=None,
                label_share=args.label_share,
            )
        )
        # The live episode continues the same model's stream, then drifts.
        n_clean = int(args.live_clean_s * args.rate) // BATCH * BATCH
        n_drift = int(args.live_drift_s * args.rate) // BATCH * BATCH
        live.append(
            build_stream(
                f"live-{k}",
                f"clean-{k}",
                seed,
                "live",
                first=args.clean_rows,
                rows=n_clean + n_drift,
                onset=args.clean_rows + n_clean,
                label_share=args.label_share,
            )
        )
    for k in range(args.drift_seeds):
        seed = 200 + k
        onset = args.drift_onset + (137 * k + 23) % 500  # never on a test or batch boundary
        drift.append(
            build_stream(
                f"drift-{k}",
                f"drift-{k}",
                seed,
                "drift",
                first=0,
                rows=onset + args.drift_rows,
                onset=onset,
                label_share=args.label_share,
            )
        )
    check_wire_format(clean[0])
    n = sum(s.rows for s in clean + drift + live)
    mib = sum(len(m.value) for s in clean + drift + live for m in s.messages) / 2**20
    say(f"built {n:,} predictions in {time.monotonic() - began:.1f} s ({mib:,.0f} MiB of JSON)")
    return Plan(clean, drift, live)


def alibi_importable() -> tuple[bool, str]:
    if importlib.util.find_spec("alibi_detect") is None:
        return (
            False,
            "alibi-detect is not installed (uv sync --frozen --all-packages --extra alibi)",
        )
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import alibi_detect; print(alibi_detect.__version__)"],
            capture_output=True,
            text=True,
            env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        return False, "import alibi_detect took more than 180 s"
    if probe.returncode != 0:
        return False, f"import alibi_detect failed: {probe.stderr.strip().splitlines()[-1:]}"
    return True, f"alibi-detect {probe.stdout.strip()}"


async def run_backend(
    backend: str,
    stack: Stack,
    plan: Plan,
    args: argparse.Namespace,
    broker_pid: int | None,
) -> BackendResult:
    res = BackendResult(backend)
    if backend == "alibi":
        k = args.alibi_seeds
        clean, drift, live = plan.clean[:k], plan.drift[:k], plan.live[:k]
        res.note = (
            f"n_bootstrap={args.alibi_n_bootstrap} (FLYWHEEL_MONITOR_DRIFT_N_BOOTSTRAP), "
            f"drift.binary={args.alibi_binary}, {len(clean)} clean + {len(drift)} drift seeds"
        )
    else:
        clean, drift, live = plan.clean, plan.drift, plan.live
        res.note = "n_bootstrap = backend default"
    # Fresh copies of the live streams: run_live trims rows to what it sent.
    live = [
        Stream(
            e.name,
            e.model,
            e.seed,
            e.kind,
            e.first,
            e.rows,
            e.onset,
            e.messages,
            e.n_labels,
            e.onset_msg,
        )
        for e in live
    ]
    stack.start()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        probe = Probe(session, stack)
        alerts = AlertLog(stack.bootstrap, stack.topics("drift.detected"))
        try:
            await alerts.start()
            async with stack.client() as reg:
                art = await reg.upload_artifact(model_bytes())
                began = time.monotonic()
                models = [s for s in clean + drift]
                binary = args.alibi_binary if backend == "alibi" else None
                for st in models:
                    spec = bench_spec(st.model, binary)
                    ref = reference_parquet(10_000 + st.seed)
                    await register(reg, spec, ref, art.sha256)
            res.versions = len(models)
            say(f"{backend}: registered {len(models)} versions; waiting for their calibrations")
            per = 15.0 if backend == "permissive" else 400.0  # generous, on a busy 2-core box
            rounds = math.ceil(len(models) / max(1, args.calibration_workers))
            deadline = time.monotonic() + 120 + per * rounds
            last = -1.0
            busy, busy_at = 0.0, time.monotonic()
            while True:
                n = metric_sum(await probe.text(), "flywheel_monitor_calibrations_total")
                kids = stack.monitor.note_children()
                if n != last:
                    say(
                        f"{backend}: {n:.0f}/{len(models)} calibrated "
                        f"({time.monotonic() - began:.0f} s)"
                    )
                    last = n
                if n >= len(models):
                    break
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"{backend}: calibrations not done: {n}/{len(models)}")
                # A failed calibration is only logged when its version is next used: notice
                # the calibration processes idling with versions still missing.
                spent = sum(cpu_seconds(k) or 0.0 for k in kids)
                if spent > busy + 0.5:
                    busy, busy_at = spent, now
                elif kids and now - busy_at > 30:
                    raise RuntimeError(
                        f"{backend}: only {n:.0f}/{len(models)} versions calibrated and the "
                        "calibration processes have been idle for 30 s: a calibration failed "
                        "(the monitor logs it only when the version is next used)"
                    )
                await asyncio.sleep(1.0)
            res.calibration_s = time.monotonic() - began
            await asyncio.sleep(1.0)  # the counter moves just before the job's result is set
            totals = Totals()
            pids: dict[str, list[int | None]] = {
                "monitor": [stack.monitor.pid],
                "bench": [os.getpid()],
                "broker": [broker_pid],
            }
            backlog = clean + drift
            await run_backlog(
                stack, probe, alerts, backlog, res, totals, pids, args.min_rate, args.profile
            )
            sent_at: dict[str, float] = {}
            if not res.partial:
                live_eps = [
                    e
                    for e, c in zip(live, clean, strict=True)
                    if c.name in {s.name for s in res.streams if s.seconds}
                ]
                sent_at = await run_live(stack, probe, alerts, live_eps, res, args.rate)
            await asyncio.sleep(2.0)  # late alerts of the last episode
            text = await probe.text()
            for k, v in metric_values(text, "flywheel_monitor_drift_sampling_rate").items():
                res.sampling[k] = v
            analyse(res, alerts, backlog, live, sent_at)
        finally:
            await alerts.stop()
    return res


# ------------------------------------------------------------------------------ report


def _fmt_int(v: float | None) -> str:
    return "nan" if v is None else f"{v:.0f}"


def render(res: BackendResult, args: argparse.Namespace) -> str:
    lines = [f"backend: {res.backend}"]
    if not res.available:
        lines.append(f"  not run: {res.note}")
        return "\n".join(lines)
    delays = [d for d in res.delays.values() if d is not None]
    lats = [v for v in res.latencies_ms.values() if v is not None]
    fa100k = res.false_alarms / res.clean_rows * 1e5 if res.clean_rows else None
    d50 = percentile([float(d) for d in delays], 50)
    l50 = percentile(lats, 50)
    lines += [
        f"throughput: {_fmt_int(res.throughput)} predictions/s",
        f"drift detection delay p50: {_fmt_int(d50)} predictions",
        f"false alarms: {'nan' if fa100k is None else f'{fa100k:.2f}'} per 100000 predictions",
        f"drift alert latency p50: {_fmt_int(l50)} ms",
    ]

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    ctx = [
        f"setup: {res.note}; {res.versions} versions calibrated in {res.calibration_s:.0f} s"
        + ("; BACKLOG INCOMPLETE (timeout)" if res.partial else ""),
        "targets: throughput >= 20000 "
        f"{verdict(None if res.throughput is None else res.throughput >= 20_000)}, "
        f"delay <= 500 {verdict(None if d50 is None else d50 <= 500)}, "
        f"false alarms <= 1 {verdict(None if fa100k is None else fa100k <= 1)}, "
        f"latency <= 2000 ms {verdict(None if l50 is None else l50 <= 2000)}",
        "backlog streams (predictions/s, first send -> monitor done incl. label join; "
        "sent in; drift side done): "
        + ", ".join(
            f"{s.name} {s.rows / s.seconds:,.0f}/s ({s.send_seconds:.1f} s; "
            f"{(s.drift_side_seconds or 0):.1f} s)"
            if s.seconds
            else f"{s.name} not done ({s.processed:,}/{s.rows:,})"
            for s in res.streams
        ),
        "CPU while the backlog streams ran (100% = one core): "
        + ", ".join(f"{k} {v:.0f}%" for k, v in res.backlog_cpu.items())
        + (
            f"; {res.per_cpu_second:,.0f} predictions per monitor CPU second"
            if res.per_cpu_second
            else ""
        ),
        "detection delay per drift stream (backlog speed): "
        + ", ".join(f"{k} {v if v is not None else 'missed'}" for k, v in res.delays.items())
        + f"; first detectors: {sorted(set(res.detectors_first.values()))}",
        f"detection delay per live episode ({args.rate:,.0f}/s): "
        + ", ".join(f"{k} {v if v is not None else 'missed'}" for k, v in res.live_delays.items()),
        "alert latency per episode (ms): "
        + ", ".join(
            f"{k} {'missed' if v is None else f'{v:.0f}'}" for k, v in res.latencies_ms.items()
        )
        + "; monitor done after the last send: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in res.live_drain_s.items()),
        f"false alarms: {res.false_alarms} in {res.clean_rows:,} clean predictions ("
        + ", ".join(f"{k} {v}" for k, v in res.alarms_by_stream.items())
        + "); drift.cooldown_s = 0 in the bench specs"
        + (f"; at {', '.join(res.alarm_details[:12])}" if res.alarm_details else ""),
        f"drift.detected events read: {res.drift_events} ({res.unmatched_events} with no position "
        "found)",
    ]
    if res.left_behind:
        ctx.append(
            f"the monitor exited on SIGTERM but left {len(res.left_behind)} calibration "
            f"process(es) running (pids {res.left_behind}; the bench killed them)"
        )
    if res.sampling:
        rates = sorted(set(round(v, 4) for v in res.sampling.values()))
        ctx.append(f"drift sampling rate at the end (per version): {rates}")
    lines += [f"  {c}" for c in ctx]
    return "\n".join(lines)


def machine_line() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return (
        f"machine: nproc={len(os.sched_getaffinity(0))} ({model or 'cpu ?'}), "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"load average now {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Measure one monitor worker on a real broker.")
    p.add_argument(
        "--quick", action="store_true", help="a smaller run (≈ 7 min on a busy 2-core machine)"
    )
    p.add_argument("--backends", default="permissive,alibi", help="permissive,alibi")
    p.add_argument("--bootstrap", help="use this broker (default: acquire one, stop it after)")
    p.add_argument("--clean-seeds", type=int, help="clean streams (5; quick 2)")
    p.add_argument(
        "--clean-rows", type=int, help="predictions per clean stream (60000; quick 20000)"
    )
    p.add_argument("--drift-seeds", type=int, help="covariate-drift streams (5; quick 2)")
    p.add_argument(
        "--drift-onset", type=int, default=4000, help="onset = this + (137k + 23) %% 500 (4000)"
    )
    p.add_argument(
        "--drift-rows", type=int, default=6000, help="predictions after the onset (6000)"
    )
    p.add_argument("--rate", type=float, default=2500.0, help="live episodes' predictions/s (2500)")
    p.add_argument("--live-clean-s", type=float, default=4.0, help="live clean part, s (4)")
    p.add_argument("--live-drift-s", type=float, default=8.0, help="live drift part at most, s (8)")
    p.add_argument("--label-share", type=float, default=0.3, help="predictions labelled (0.3)")
    p.add_argument("--alibi-seeds", type=int, help="clean and drift seeds for alibi (2; quick 1)")
    p.add_argument("--alibi-n-bootstrap", type=int, default=2100, help="alibi bootstraps (2100)")
    p.add_argument(
        "--alibi-binary",
        default="chi2",
        choices=["fet", "chi2"],
        help="drift.binary of the alibi run's specs (chi2: FETDriftOnline's calibration fails)",
    )
    p.add_argument(
        "--calibration-workers", type=int, default=2, help="monitor calibration procs (2)"
    )
    p.add_argument(
        "--min-rate",
        type=float,
        default=500.0,
        help="give up on a backlog stream slower than this (predictions/s, 500)",
    )
    p.add_argument("--profile", type=Path, help="py-spy the monitor during the backlog into DIR")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, stores)")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "clean_seeds": 2 if quick else 5,
        "clean_rows": 20_000 if quick else 60_000,
        "drift_seeds": 2 if quick else 5,
        "alibi_seeds": 1 if quick else 2,
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.clean_rows = max(BATCH, args.clean_rows // BATCH * BATCH)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in args.backends:
        if b not in ("permissive", "alibi"):
            p.error(f"unknown backend {b!r}")
    if args.clean_seeds < 1 or args.drift_seeds < 1 or args.alibi_seeds < 1:
        p.error("seeds must be at least 1")
    return args


def _on_sigterm(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    load = os.getloadavg()
    if load[0] > 0.5 * (os.cpu_count() or 1):
        say(f"warning: load average {load[0]:.2f} before starting: other jobs share this machine")
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-mbench-"))
    broker: BrokerHandle | None = None
    stack: Stack | None = None
    failed = True
    results: list[BackendResult] = []
    started = datetime.now(UTC)
    try:
        say("building the workload (simulate, score, serialise)")
        plan = build_plan(args)
        if args.bootstrap:
            broker = BrokerHandle(args.bootstrap, "external")
        else:
            say("acquiring a Kafka broker (pass --bootstrap to use a running one)")
            broker = acquire_broker()
        broker_pid = broker.local.pid if broker.local is not None else None
        print(f"Flywheel monitor benchmark  {started.isoformat(timespec='seconds')}", flush=True)
        print(machine_line(), flush=True)
        print(
            f"kafka: {broker.kind} at {broker.bootstrap}; {BATCH} predictions per message, "
            f"{args.label_share:.0%} labelled; live episodes at {args.rate:,.0f} predictions/s",
            flush=True,
        )
        for backend in args.backends:
            if backend == "alibi":
                ok, why = alibi_importable()
                if not ok:
                    res = BackendResult(backend, available=False, note=why)
                    results.append(res)
                    print(render(res, args), flush=True)
                    continue
                say(f"alibi: {why}")
            stack = Stack(broker.bootstrap, workdir, backend, args)
            try:
                res = asyncio.run(run_backend(backend, stack, plan, args, broker_pid))
            except (TimeoutError, RuntimeError) as exc:
                say(f"{backend}: failed: {exc}\n{stack.tails()}")
                res = BackendResult(backend, available=False, note=f"failed: {exc}")
            finally:
                say(f"{backend}: stopping the monitor and the registry")
                stack.stop()
                left = stack.monitor.left_behind
                stack = None
            res.left_behind = left
            results.append(res)
            print(render(res, args), flush=True)
        print(machine_line(), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {
                        "date": started.isoformat(timespec="seconds"),
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "results": [
                            r.__dict__ | {"streams": [s.__dict__ for s in r.streams]}
                            for r in results
                        ],
                    },
                    indent=2,
                    default=str,
                )
                + "\n"
            )
            say(f"wrote {args.json}")
        failed = False
        return 0
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        failed = False
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            if failed:
                say(stack.tails())
            say("stopping the monitor and the registry")
            stack.stop()
        if broker is not None and broker.kind != "external":
            say("stopping the broker")
            broker.close()
        if args.keep_tmp or failed:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
