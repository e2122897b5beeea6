"""Serving benchmark: Flywheel serving against the peers a team would actually pick, one run.

Every peer serves the same fitted model (the fraud example's sklearn pipeline, trained as the
serving tests train it; the skops file, or for MLServer the same object dumped with joblib),
builds the same DataFrame columns, runs ``--workers`` worker processes with one BLAS/OpenMP
thread each and answers single-record requests:

* ``fastapi``: plain FastAPI on uvicorn workers whose sockets really have ``TCP_NODELAY``
  (``bench/peers/nodelay.py``; ``uvicorn --workers`` leaves Nagle on, uvicorn #3149);
* ``fastapi-batch``: the same app with Flywheel's own ``AdaptiveBatcher`` (one executor
  thread, the same max batch size), which separates batching from platform cost;
* ``bentoml``: stock BentoML with a ``@bentoml.api(batchable=True)`` service, ``bentoml
  serve`` (``bench/peers/bento_service.py``);
* ``mlserver``: MLServer's sklearn runtime, adaptive batching, OIP v2 REST, pandas codec,
  ``predict_proba``; ``parallel_workers`` inference processes behind its one HTTP process;
* ``flywheel-json`` / ``flywheel-oip``: Flywheel serving (BentoML underneath, prediction
  log to Kafka on) on ``/v1/models/fraud/predict`` and ``/v2/models/fraud/infer``.

Method: ``oha`` (built into ``.bench/tools`` when missing), closed loop at each concurrency,
then a fixed rate (``-q``, latency correction) at 80 % of the slowest peer's best RPS measured
in this run; every round runs the peers in a rotated order; medians over rounds. Per cell:
errors and non-2xx, CPU of the server's processes (from /proc), of oha, of the broker and of
everything else, and the load average. Sanity: each peer's c=1 p50 against the same peer on
one worker (a broken multi-worker mode shows there); every peer's answers against offline
``predict_proba``; during Flywheel's cells, predictions logged = predictions served and none
dropped (its /metrics), and the prediction topic holds them all. Large requests: 1,000-row
OIP requests, rows/s, Flywheel against MLServer (JSON tensors; binary tensors for Flywheel
when it accepts them).

It measures, it does not judge: nothing here fails on a low number.

    uv run --frozen python bench/serving.py [--workers 2] [--concurrency 1,32,128]
        [--duration 10] [--rounds 3] [--peers fastapi,mlserver,...] [--bootstrap HOST:PORT]
        [--json out.json] [--quick]

Progress goes to stderr, the result tables (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "serving" / "tests"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from serving_support import Registry, fraud_spec, records, register, trained  # noqa: E402

from flywheel_devkit.kafka import pick_free_port  # noqa: E402
from flywheel_devkit.testing.kafka import acquire_broker  # noqa: E402
from flywheel_devkit.testing.procs import ServiceProcess  # noqa: E402

TOOLS = ROOT / ".bench" / "tools"
OHA = TOOLS / "bin" / "oha"
BENCH_VENV = ROOT / ".bench" / "venv"
MLSERVER = BENCH_VENV / "bin" / "mlserver"
MAX_BATCH = 128  # Flywheel's default FLYWHEEL_SERVING_MAX_BATCH_SIZE; every batching peer's too
MLSERVER_BATCH_TIME_S = 0.005
ONE_THREAD = {
    v: "1"
    for v in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    )
}
PEERS = ["fastapi", "fastapi-batch", "bentoml", "mlserver", "flywheel-json", "flywheel-oip"]
FLYWHEEL = ("flywheel-json", "flywheel-oip")
LABELS = {
    "fastapi": "FastAPI + uvicorn, TCP_NODELAY",
    "fastapi-batch": "FastAPI + Flywheel's AdaptiveBatcher",
    "bentoml": "BentoML 1.4, batchable API",
    "mlserver": "MLServer sklearn, adaptive batching (OIP)",
    "flywheel-json": "Flywheel JSON /v1 (log on)",
    "flywheel-oip": "Flywheel OIP /v2 (log on)",
}
CLK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- tools ---------------------------------------------------------------------------------


def ensure_oha() -> Path:
    """``oha``, built with cargo into ``.bench/tools`` when missing."""
    if OHA.exists():
        return OHA
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        sys.exit("oha missing and cargo not found: install Rust (rustup), then re-run")
    log = TOOLS / "oha-build.log"
    TOOLS.mkdir(parents=True, exist_ok=True)
    say(f"building oha: cargo install oha --locked --root {TOOLS} (minutes; log {log})")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            # A kept target directory: an interrupted build resumes where it stopped.
            [
                cargo,
                "install",
                "oha",
                "--locked",
                "--root",
                str(TOOLS),
                "--target-dir",
                str(TOOLS / "target"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        began = time.monotonic()
        while proc.poll() is None:
            time.sleep(15)
            last = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            say(f"  oha build {time.monotonic() - began:.0f} s: {last[0].strip()[:80]}")
    if proc.returncode != 0 or not OHA.exists():
        sys.exit(f"building oha failed, see {log}")
    return OHA


def ensure_mlserver() -> Path:
    """MLServer in its own environment (``.bench/venv``, the lock's ``bench`` group)."""
    if MLSERVER.exists():
        return MLSERVER
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    say(f"installing MLServer into {BENCH_VENV} (uv sync --group bench)")
    subprocess.run(
        [uv, "sync", "--frozen", "--no-dev", "--group", "bench", "--all-packages"],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(BENCH_VENV)},
        check=True,
    )
    return MLSERVER


def version_of(python: Path | str, module: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({module!r}))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


# -- /proc ---------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def proc_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in cmd if w]
    return " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words[:4]))


def total_busy_ticks() -> int:
    """Non-idle CPU time of the whole machine (``/proc/stat``), in ticks."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(v) for v in parts[:8]]
    return sum(vals) - vals[3] - vals[4]  # minus idle and iowait


def listener_pid(port: int) -> int | None:
    """The process holding the listening socket on ``port`` (the broker), if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{entry}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return int(entry)
    return None


# -- peers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """One server process tree (a peer, or Flywheel with its two routes)."""

    name: str
    port: int
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path = ROOT
    ready_path: str = ""
    ready_body: bytes | None = None
    proc: subprocess.Popen[bytes] | None = None
    service: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.service is not None:
            return self.service.pid
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        if self.service is not None:
            self.service.start(wait=False)
            return
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env={**os.environ, **ONE_THREAD, **self.env},
            stdout=out,
            stderr=out,
            start_new_session=True,
        )

    def exited(self) -> bool:
        p = self.service.proc if self.service is not None else self.proc
        return p is not None and p.poll() is not None

    def ready(self) -> bool:
        if self.service is not None:
            return self.service.ready()
        try:
            status, _ = post(self.url + self.ready_path, self.ready_body or b"", timeout=5)
        except OSError:
            return False
        return status == 200

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            return
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # the session this bench started
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, n: int = 30) -> str:
        if self.service is not None:
            return self.service.tail(n)
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30):
    """(status, body) of one POST; 4xx/5xx included."""
    req = urllib.request.Request(
        url, data=body, headers=headers or {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Target:
    """One benchmarked endpoint: a server, a path and how requests and answers look."""

    name: str
    server: Server
    path: str
    oip: bool

    @property
    def url(self) -> str:
        return self.server.url + self.path

    def body(self, rows: list[dict[str, Any]]) -> bytes:
        if self.oip:
            return json.dumps(oip_request(rows)).encode()
        return json.dumps({"records": rows}).encode()

    def scores(self, answer: bytes) -> list[float]:
        doc = json.loads(answer)
        if self.name == "bentoml":
            return [float(x) for x in doc]
        if self.name == "mlserver":
            out = next(o for o in doc["outputs"] if o["name"] == "predict_proba")
            return [float(x) for x in out["data"][1::2]]
        if self.oip:
            out = next(o for o in doc["outputs"] if o["name"] == "score")
            return [float(x) for x in out["data"]]
        return [float(p["score"]) for p in doc["predictions"]]


FEATURES = list(fraud_spec().features)
OIP_TYPES = {
    "float": "FP64",
    "int": "INT64",
    "bool": "BOOL",
    "string": "BYTES",
    "category": "BYTES",
}


def _field_types() -> dict[str, str]:
    spec = fraud_spec()
    return {f: OIP_TYPES[spec.dataset.fields[f].type.value] for f in FEATURES}


def oip_request(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """OIP v2 JSON tensors, one per column, pandas codec (what MLServer's docs show)."""
    types = _field_types()
    inputs = []
    for f in FEATURES:
        tensor: dict[str, Any] = {
            "name": f,
            "shape": [len(rows)],
            "datatype": types[f],
            "data": [r[f] for r in rows],
        }
        if types[f] == "BYTES":
            tensor["parameters"] = {"content_type": "str"}
        inputs.append(tensor)
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def oip_binary_request(rows: list[dict[str, Any]]) -> tuple[bytes, int]:
    """The same tensors with the binary tensor data extension: (body, JSON header length)."""
    types = _field_types()
    inputs, blobs = [], []
    for f in FEATURES:
        vals = [r[f] for r in rows]
        dt = types[f]
        if dt == "FP64":
            blob = struct.pack(f"<{len(vals)}d", *vals)
        elif dt == "INT64":
            blob = struct.pack(f"<{len(vals)}q", *vals)
        elif dt == "BOOL":
            blob = bytes(1 if v else 0 for v in vals)
        else:
            blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in vals)
        blobs.append(blob)
        inputs.append(
            {
                "name": f,
                "shape": [len(rows)],
                "datatype": dt,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
    header = json.dumps({"inputs": inputs}).encode()
    return header + b"".join(blobs), len(header)


def make_servers(
    selected: list[str],
    workers: int,
    tmp: Path,
    registry: Registry,
    model_path: Path,
    joblib_path: Path,
) -> tuple[list[Server], list[Target]]:
    """The servers of the selected peers with ``workers`` workers each (not started)."""
    tag = f"w{workers}"
    common = {"BENCH_MODEL_PATH": str(model_path), "BENCH_FEATURES": ",".join(FEATURES)}
    one_row = records(1, seed=11)[0]
    servers: list[Server] = []
    targets: list[Target] = []

    def fastapi(name: str, app: str) -> None:
        port = pick_free_port()
        if workers == 1:  # stock single-process uvicorn: sets TCP_NODELAY itself
            argv = [sys.executable, "-m", "uvicorn", f"bench.peers.fastapi_app:{app}"]
            argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        else:
            argv = [sys.executable, "-m", "bench.peers.nodelay", f"bench.peers.fastapi_app:{app}"]
            argv += ["--port", str(port), "--workers", str(workers)]
        srv = Server(
            name,
            port,
            argv,
            {**common, "BENCH_MAX_BATCH": str(MAX_BATCH)},
            tmp / f"{name}-{tag}.log",
            ready_path="/v1/models/fraud/predict",
            ready_body=json.dumps({"records": [one_row]}).encode(),
        )
        servers.append(srv)
        targets.append(Target(name, srv, "/v1/models/fraud/predict", oip=False))

    if "fastapi" in selected:
        fastapi("fastapi", "plain")
    if "fastapi-batch" in selected:
        fastapi("fastapi-batch", "batched")
    if "bentoml" in selected:
        port = pick_free_port()
        bentoml = Path(sys.executable).with_name("bentoml")
        srv = Server(
            "bentoml",
            port,
            [str(bentoml), "serve", "bench.peers.bento_service:Fraud", "--port", str(port)],
            {
                **common,
                "BENCH_WORKERS": str(workers),
                "BENCH_MAX_BATCH": str(MAX_BATCH),
                "BENTOML_HOME": str(tmp / f"bentoml-{tag}"),
                "BENTOML_DO_NOT_TRACK": "true",
            },
            tmp / f"bentoml-{tag}.log",
            ready_path="/predict",
            ready_body=json.dumps({"records": [one_row]}).encode(),
        )
        servers.append(srv)
        targets.append(Target("bentoml", srv, "/predict", oip=False))
    if "mlserver" in selected:
        port = pick_free_port()
        root = tmp / f"mlserver-{tag}"
        (root / "fraud").mkdir(parents=True, exist_ok=True)
        shutil.copy(joblib_path, root / "fraud" / "model.joblib")
        (root / "settings.json").write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "http_port": port,
                    "grpc_port": pick_free_port(),
                    "metrics_port": pick_free_port(),
                    "parallel_workers": workers,
                }
            )
        )
        (root / "fraud" / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": "fraud",
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "max_batch_size": MAX_BATCH,
                    "max_batch_time": MLSERVER_BATCH_TIME_S,
                    "parameters": {
                        "uri": "./model.joblib",
                        "extra": {"predict_fn": "predict_proba"},
                    },
                }
            )
        )
        srv = Server(
            "mlserver",
            port,
            [str(MLSERVER), "start", str(root)],
            {},
            tmp / f"mlserver-{tag}.log",
            cwd=root,
            ready_path="/v2/models/fraud/infer",
            ready_body=json.dumps(oip_request([one_row])).encode(),
        )
        servers.append(srv)
        targets.append(Target("mlserver", srv, "/v2/models/fraud/infer", oip=True))
    if any(p in selected for p in FLYWHEEL):
        service = registry.serving(
            tmp, workers=workers, FLYWHEEL_SERVING_MAX_BATCH_SIZE=str(MAX_BATCH)
        )
        srv = Server("flywheel", service.port, [], {}, service.log_path, service=service)
        servers.append(srv)
        if "flywheel-json" in selected:
            targets.append(Target("flywheel-json", srv, "/v1/models/fraud/predict", oip=False))
        if "flywheel-oip" in selected:
            targets.append(Target("flywheel-oip", srv, "/v2/models/fraud/infer", oip=True))
    targets.sort(key=lambda t: PEERS.index(t.name))
    return servers, targets


def start_all(servers: list[Server], timeout: float) -> None:
    """Start every server at once (startup is slow on a loaded machine) and wait for all."""
    for s in servers:
        s.start()
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    while waiting:
        for s in list(waiting):
            if s.exited():
                raise RuntimeError(f"{s.name} exited:\n{s.tail()}")
            if s.ready():
                waiting.remove(s)
                say(f"  {s.name} ready")
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(
                f"{waiting[0].name} not ready after {timeout} s:\n{waiting[0].tail()}"
            )
        time.sleep(0.5)


# -- load ----------------------------------------------------------------------------------


@dataclass
class Cell:
    """One oha run against one target, with the CPU the machine spent meanwhile."""

    peer: str
    mode: str
    concurrency: int
    rate: float | None
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    ok: int = 0
    non_2xx: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    load_avg: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def run_oha(
    target: Target,
    body_file: Path,
    concurrency: int,
    duration: float,
    *,
    rate: float | None = None,
    headers: dict[str, str] | None = None,
    broker_pid: int | None = None,
    mode: str = "closed",
) -> Cell:
    hdrs = headers or {"content-type": "application/json"}
    argv = [str(OHA), "-c", str(concurrency), "-z", f"{duration:g}s", "--no-tui"]
    argv += ["--output-format", "json", "-m", "POST", "-D", str(body_file), "-w"]
    for k, v in hdrs.items():
        argv += ["-H", f"{k}: {v}"]
    if rate is not None:
        argv += ["-q", f"{rate:g}", "--latency-correction"]
    argv.append(target.url)
    server_pids = tree(target.server.pid)
    before = {p: cpu_ticks(p) for p in server_pids}
    broker_pids = tree(broker_pid) if broker_pid else []
    broker_before = sum(cpu_ticks(p) for p in broker_pids)
    busy_before = total_busy_ticks()
    kids_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True)
    wall = time.monotonic() - t0
    kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = (total_busy_ticks() - busy_before) / CLK
    per_proc = {p: (cpu_ticks(p) - before.get(p, 0)) / CLK for p in tree(target.server.pid)}
    broker_s = (sum(cpu_ticks(p) for p in broker_pids) - broker_before) / CLK
    if out.returncode != 0:
        raise RuntimeError(f"oha failed ({out.returncode}): {out.stderr[-2000:]}")
    doc = json.loads(out.stdout)
    oha_s = (kids_after.ru_utime - kids_before.ru_utime) + (
        kids_after.ru_stime - kids_before.ru_stime
    )
    server_s = sum(per_proc.values())
    codes = {int(k): int(v) for k, v in (doc.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    lat = doc.get("latencyPercentiles") or {}
    cell = Cell(target.name, mode, concurrency, rate)
    cell.ok = ok
    cell.rps = ok / duration
    cell.p50_ms = float(lat.get("p50") or 0.0) * 1000
    cell.p99_ms = float(lat.get("p99") or 0.0) * 1000
    cell.non_2xx = sum(v for k, v in codes.items() if not 200 <= k < 300)
    cell.errors = {str(k): int(v) for k, v in (doc.get("errorDistribution") or {}).items()}
    pct = 100.0 / wall
    cell.cpu = {
        "server_pct": server_s * pct,
        "server_per_process_pct": {
            f"{p} {proc_name(p)}": s * pct for p, s in sorted(per_proc.items()) if s > 0
        },
        "oha_pct": oha_s * pct,
        "broker_pct": broker_s * pct if broker_pids else None,
        "other_pct": max(0.0, busy - server_s - oha_s - broker_s) * pct,
        "machine_pct": busy * pct,
    }
    cell.load_avg = os.getloadavg()[0]
    return cell


# -- Flywheel's prediction log --------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """Sum of every series per metric name of a Prometheus text page."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        with contextlib.suppress(ValueError):
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def log_state(url: str, settle_s: float = 15.0) -> dict[str, float]:
    """Served, sent and dropped predictions, once the log buffer is empty (or ``settle_s``)."""
    deadline = time.monotonic() + settle_s
    while True:
        m = scrape(url)
        if m.get("flywheel_serving_log_buffer_depth", 0.0) == 0 or time.monotonic() > deadline:
            return {
                "served": m.get("flywheel_serving_records_total", 0.0),
                "sent": m.get("flywheel_serving_log_sent_total", 0.0),
                "dropped": m.get("flywheel_serving_log_dropped_total", 0.0),
                "buffer": m.get("flywheel_serving_log_buffer_depth", 0.0),
            }
        time.sleep(0.2)


async def topic_predictions(bootstrap: str, topic: str) -> tuple[int, int]:
    """(events, predictions) on the prediction topic, read from the start to its end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if topic not in await consumer.topics():  # fetches the cluster's metadata
            return 0, 0
        from flywheel_shared.topics import TOPICS

        parts = consumer.partitions_for_topic(topic) or range(TOPICS["predictions"].partitions)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        events = sum(ends.values())
        preds = 0
        left = {tp: end for tp, end in ends.items() if end > 0}
        while left:
            got = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not got:
                break
            for tp, msgs in got.items():
                for msg in msgs:
                    preds += len(json.loads(msg.value).get("predictions", []))
                    if msg.offset + 1 >= left.get(tp, 0):
                        left.pop(tp, None)
        return events, preds
    finally:
        await consumer.stop()


# -- checks --------------------------------------------------------------------------------


def check_answers(targets: list[Target], model: Any, n: int) -> dict[str, dict[str, Any]]:
    """Each peer's answers for ``n`` single-record requests against offline predict_proba."""
    import pandas as pd

    rows = records(n, seed=23)
    offline = model.predict_proba(pd.DataFrame(rows, columns=FEATURES))[:, 1].tolist()
    out: dict[str, dict[str, Any]] = {}
    for t in targets:
        worst, bad = 0.0, 0
        for row, want in zip(rows, offline, strict=True):
            status, answer = post(t.url, t.body([row]))
            if status != 200:
                bad += 1
                continue
            worst = max(worst, abs(t.scores(answer)[0] - want))
        out[t.name] = {
            "rows": n,
            "failed": bad,
            "max_abs_diff": worst,
            "ok": not bad and worst < 1e-9,
        }
    return out


# -- main ----------------------------------------------------------------------------------


async def prepare(registry: Registry, data: bytes) -> None:
    async with registry.client() as reg:
        await reg.put_spec(fraud_spec())
        await register(reg, "fraud", data, alias="production")


def main() -> None:
    global OHA
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", default="1,32,128")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peers", default=",".join(PEERS), help="subset of " + ",".join(PEERS))
    ap.add_argument(
        "--large-rows", type=int, default=1000, help="rows per large request (0: skip that part)"
    )
    ap.add_argument("--startup-timeout", type=float, default=420.0)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="short cells, one round: a smoke run")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--oha", type=Path, default=None, help=f"an oha binary (default: {OHA})")
    args = ap.parse_args()
    if args.oha is not None:
        OHA = args.oha
    if args.quick:
        args.duration, args.warmup, args.rounds = 3.0, 1.0, 1
    selected = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(selected) - set(PEERS)
    if unknown:
        sys.exit(f"unknown peers: {', '.join(sorted(unknown))}; pick from {', '.join(PEERS)}")
    levels = [int(c) for c in args.concurrency.split(",")]
    ensure_oha()
    if "mlserver" in selected:
        ensure_mlserver()
    started = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-serving-"))
    live: list[Server] = []
    broker = None
    registry_proc: ServiceProcess | None = None
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            broker = acquire_broker()
            bootstrap = broker.bootstrap
        broker_pid = listener_pid(int(bootstrap.rsplit(":", 1)[1]))
        registry = Registry(bootstrap, tmp)
        registry_proc = registry.proc
        registry.proc.start(ready_timeout=180)
        model_path = tmp / "fraud.skops"
        model_path.write_bytes(trained(1.0))
        asyncio.run(prepare(registry, model_path.read_bytes()))
        import joblib

        from flywheel_shared.modelio import load_model

        data = model_path.read_bytes()
        model = load_model(data, hashlib.sha256(data).hexdigest())
        joblib_path = tmp / "fraud.joblib"
        joblib.dump(model, joblib_path)
        report["versions"] = versions(selected)
        say(f"model registered; versions: {report['versions']}")

        # Each peer on one worker, briefly: its c=1 p50 is what the multi-worker one must match.
        say("one-worker reference: starting every peer with 1 worker")
        servers, targets = make_servers(selected, 1, tmp, registry, model_path, joblib_path)
        live = servers
        start_all(servers, args.startup_timeout)
        bodies = write_bodies(targets, tmp)
        one_worker: dict[str, Cell] = {}
        for t in targets:
            run_oha(t, bodies[t.name], 1, args.warmup)
            one_worker[t.name] = run_oha(t, bodies[t.name], 1, min(args.duration, 5.0), mode="w1")
            say(f"  1 worker c=1 {t.name}: p50 {one_worker[t.name].p50_ms:.2f} ms")
        for s in servers:
            s.stop()
        live = []

        topic_name = registry.topics("predictions")
        base_preds = 0
        if any(t.name in FLYWHEEL for t in targets):  # logged by the one-worker Flywheel
            base_preds = asyncio.run(topic_predictions(bootstrap, topic_name))[1]
        say(f"starting every peer with {args.workers} workers")
        servers, targets = make_servers(
            selected, args.workers, tmp, registry, model_path, joblib_path
        )
        live = servers
        start_all(servers, args.startup_timeout)
        bodies = write_bodies(targets, tmp)
        correctness = check_answers(targets, model, 20)
        for name, res in correctness.items():
            say(f"  answers {name}: {res}")
        say("warming up")
        for t in targets:
            run_oha(t, bodies[t.name], 32, args.warmup)
        fly = next((s for s in servers if s.name == "flywheel"), None)
        log_checks: list[dict[str, Any]] = []

        def cell(t: Target, c: int, rate: float | None = None, mode: str = "closed") -> Cell:
            before = log_state(fly.url) if fly is not None and t.name in FLYWHEEL else None
            res = run_oha(
                t, bodies[t.name], c, args.duration, rate=rate, broker_pid=broker_pid, mode=mode
            )
            if before is not None and fly is not None:
                after = log_state(fly.url)
                check = {
                    "peer": t.name,
                    "mode": mode,
                    "concurrency": c,
                    "served": after["served"] - before["served"],
                    "sent": after["sent"] - before["sent"],
                    "dropped": after["dropped"] - before["dropped"],
                }
                check["ok"] = check["served"] == check["sent"] and check["dropped"] == 0
                res.extra["log"] = check
                log_checks.append(check)
            say(
                f"  {mode} c={c}{f' q={rate:.0f}' if rate else ''} {t.name}: {res.rps:.0f} RPS, "
                f"p50 {res.p50_ms:.1f} ms, p99 {res.p99_ms:.1f} ms, non-2xx {res.non_2xx}, "
                f"errors {sum(res.errors.values())}, server CPU {res.cpu['server_pct']:.0f} %"
            )
            return res

        closed: list[Cell] = []
        for r in range(args.rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            say(f"round {r + 1}/{args.rounds}: {', '.join(t.name for t in order)}")
            for c in levels:
                for t in order:
                    closed.append(cell(t, c))

        best = {t.name: max(med(closed, t.name, c, "rps") for c in levels) for t in targets}
        slowest = min(best, key=lambda k: best[k])
        rate = round(0.8 * best[slowest])
        say(f"fixed rate {rate} RPS (80 % of {slowest}'s best, {best[slowest]:.0f} RPS)")
        fixed: list[Cell] = []
        fixed_c = max(levels)
        for r in range(args.rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for t in order:
                fixed.append(cell(t, fixed_c, rate=rate, mode="fixed"))

        large = large_requests(targets, tmp, args, model, broker_pid) if args.large_rows else []

        topic: dict[str, Any] = {}
        if fly is not None:
            state = log_state(fly.url, settle_s=30)
            events, preds = asyncio.run(topic_predictions(bootstrap, topic_name))
            preds -= base_preds
            topic = {
                **state,
                "topic_events": events,
                "topic_predictions": preds,
                "topic_predictions_before": base_preds,
                "ok": state["served"] == state["sent"] == preds and state["dropped"] == 0,
            }
            say(f"prediction log over the run: {topic}")

        sanity = {}
        for t in targets:
            w1 = one_worker[t.name].p50_ms
            wn = med(closed, t.name, 1, "p50_ms") if 1 in levels else None
            sanity[t.name] = {
                "p50_1_worker_ms": w1,
                f"p50_{args.workers}_workers_ms": wn,
                "ok": wn is None or abs(wn - w1) <= max(3.0, 0.5 * w1),
            }
            if not sanity[t.name]["ok"]:
                say(
                    f"  BROKEN PEER? {t.name}: c=1 p50 {wn:.1f} ms on {args.workers} workers, "
                    f"{w1:.1f} ms on 1 worker"
                )
        report.update(
            {
                "closed": [vars(c) for c in closed],
                "fixed": [vars(c) for c in fixed],
                "fixed_rate": rate,
                "fixed_rate_basis": {"peer": slowest, "best_rps": best[slowest]},
                "one_worker": {k: vars(v) for k, v in one_worker.items()},
                "sanity": sanity,
                "correctness": correctness,
                "log_checks": log_checks,
                "prediction_log": topic,
                "large": large,
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        text, ratios = tables(report, targets, levels, args)
        report["ratios"] = ratios
        print(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2, default=str))
    finally:
        for s in reversed(live):
            with contextlib.suppress(Exception):
                s.stop()
        if registry_proc is not None:
            registry_proc.stop()
        if broker is not None:
            broker.close()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"kept {tmp}")


def versions(selected: list[str]) -> dict[str, str]:
    out = {
        "python": platform.python_version(),
        "flywheel-serving": version_of(sys.executable, "flywheel-serving"),
        "bentoml": version_of(sys.executable, "bentoml"),
        "fastapi": version_of(sys.executable, "fastapi"),
        "uvicorn": version_of(sys.executable, "uvicorn"),
        "scikit-learn": version_of(sys.executable, "scikit-learn"),
        "oha": subprocess.run([str(OHA), "--version"], capture_output=True, text=True)
        .stdout.strip()
        .removeprefix("oha "),
    }
    if "mlserver" in selected:
        py = BENCH_VENV / "bin" / "python"
        out["mlserver"] = version_of(py, "mlserver")
        out["mlserver-sklearn"] = version_of(py, "mlserver-sklearn")
        out["scikit-learn (mlserver env)"] = version_of(py, "scikit-learn")
    return out


def write_bodies(targets: list[Target], tmp: Path) -> dict[str, Path]:
    row = records(1)[0]
    out = {}
    for t in targets:
        path = tmp / f"body-{t.name}.json"
        path.write_bytes(t.body([row]))
        out[t.name] = path
    return out


def large_requests(
    targets: list[Target], tmp: Path, args: argparse.Namespace, model: Any, broker_pid: int | None
) -> list[dict[str, Any]]:
    """1,000-row OIP requests, rows/s: Flywheel (JSON, then binary tensors) and MLServer."""
    import pandas as pd

    rows = records(args.large_rows, seed=31)
    want = model.predict_proba(pd.DataFrame(rows, columns=FEATURES))[:, 1]
    out: list[dict[str, Any]] = []
    conc = 2 * args.workers
    for t in targets:
        if t.name not in ("mlserver", "flywheel-oip"):
            continue
        variants: list[tuple[str, bytes, dict[str, str]]] = [
            ("JSON tensors", t.body(rows), {"content-type": "application/json"})
        ]
        if t.name == "flywheel-oip":
            body, hlen = oip_binary_request(rows)
            variants.append(
                (
                    "binary tensors",
                    body,
                    {
                        "content-type": "application/octet-stream",
                        "inference-header-content-length": str(hlen),
                    },
                )
            )
        for label, body, headers in variants:
            entry: dict[str, Any] = {"peer": t.name, "encoding": label, "rows": len(rows)}
            status, answer = post(t.url, body, headers, timeout=60)
            if status != 200:
                entry["skipped"] = f"HTTP {status}: {answer[:160].decode(errors='replace')}"
                say(f"  large {t.name} {label}: skipped ({entry['skipped']})")
                out.append(entry)
                continue
            try:
                got = t.scores(answer)
                entry["max_abs_diff"] = float(
                    max(abs(a - b) for a, b in zip(got, want, strict=True))
                )
            except (KeyError, ValueError, StopIteration) as exc:
                entry["max_abs_diff"] = None
                entry["answer_error"] = repr(exc)
            path = tmp / f"large-{t.name}-{label.split()[0]}.bin"
            path.write_bytes(body)
            run_oha(t, path, conc, args.warmup, headers=headers)
            cells = [
                run_oha(
                    t,
                    path,
                    conc,
                    args.duration,
                    headers=headers,
                    broker_pid=broker_pid,
                    mode="large",
                )
                for _ in range(args.rounds)
            ]
            entry.update(
                {
                    "concurrency": conc,
                    "body_bytes": len(body),
                    "rows_per_s": statistics.median(c.rps for c in cells) * len(rows),
                    "p50_ms": statistics.median(c.p50_ms for c in cells),
                    "p99_ms": statistics.median(c.p99_ms for c in cells),
                    "non_2xx": sum(c.non_2xx for c in cells),
                    "errors": sum(sum(c.errors.values()) for c in cells),
                    "server_cpu_pct": statistics.median(c.cpu["server_pct"] for c in cells),
                }
            )
            say(f"  large {t.name} {label}: {entry['rows_per_s']:,.0f} rows/s")
            out.append(entry)
    return out


def med(cells: list[Cell], peer: str, c: int, key: str) -> float:
    vals = [getattr(x, key) for x in cells if x.peer == peer and x.concurrency == c]
    return statistics.median(vals) if vals else float("nan")


def tables(
    report: dict[str, Any], targets: list[Target], levels: list[int], args: argparse.Namespace
) -> tuple[str, dict[str, Any]]:
    closed = [Cell(**c) for c in report["closed"]]
    fixed = [Cell(**c) for c in report["fixed"]]
    sanity = report["sanity"]
    names = [t.name for t in targets]

    def cpu_med(cells: list[Cell], peer: str, c: int, key: str) -> float | None:
        vals = [x.cpu[key] for x in cells if x.peer == peer and x.concurrency == c]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def per_proc(cells: list[Cell], peer: str, c: int) -> str:
        last = [x for x in cells if x.peer == peer and x.concurrency == c][-1]
        vals = sorted(last.cpu["server_per_process_pct"].values(), reverse=True)
        return "/".join(f"{v:.0f}" for v in vals if v >= 1) or "0"

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.0f}"

    lines = [
        f"Single-record requests, {args.workers} worker processes per peer, 1 BLAS thread "
        f"per worker, oha, {args.duration:g} s per cell, median of {args.rounds} round(s) "
        f"(peers rotated per round). Started {report['started']}, {report['machine']}, "
        f"{report['cpus']} CPUs.",
        "",
        "| c | peer | RPS | p50 ms | p99 ms | non-2xx | errors | server CPU % (per process, "
        "last round) | oha CPU % | broker CPU % | other CPU % | load avg | flag |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in levels:
        for n in names:
            cells = [x for x in closed if x.peer == n and x.concurrency == c]
            flag = "" if sanity[n]["ok"] or c != 1 else "BROKEN: c=1 p50 ≠ 1-worker p50"
            if any(x.extra.get("log", {}).get("ok") is False for x in cells):
                flag = (flag + " log mismatch").strip()
            lines.append(
                f"| {c} | {LABELS[n]} | {med(closed, n, c, 'rps'):,.0f} "
                f"| {med(closed, n, c, 'p50_ms'):.1f} | {med(closed, n, c, 'p99_ms'):.1f} "
                f"| {sum(x.non_2xx for x in cells)} | {sum(sum(x.errors.values()) for x in cells)} "
                f"| {fmt(cpu_med(closed, n, c, 'server_pct'))} ({per_proc(closed, n, c)}) "
                f"| {fmt(cpu_med(closed, n, c, 'oha_pct'))} "
                f"| {fmt(cpu_med(closed, n, c, 'broker_pct'))} "
                f"| {fmt(cpu_med(closed, n, c, 'other_pct'))} "
                f"| {statistics.median(x.load_avg for x in cells):.1f} | {flag} |"
            )
    rate = report["fixed_rate"]
    basis = report["fixed_rate_basis"]
    fc = fixed[0].concurrency if fixed else 0
    lines += [
        "",
        f"Fixed rate: {rate} RPS to every peer (80 % of the slowest peer's best closed-loop RPS, "
        f"{basis['peer']} {basis['best_rps']:.0f}), oha -q with latency correction, "
        f"{fc} connections.",
        "",
        "| peer | achieved RPS | p50 ms | p99 ms | non-2xx | errors | server CPU % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in names:
        cells = [x for x in fixed if x.peer == n]
        lines.append(
            f"| {LABELS[n]} | {med(fixed, n, fc, 'rps'):,.0f} | {med(fixed, n, fc, 'p50_ms'):.1f} "
            f"| {med(fixed, n, fc, 'p99_ms'):.1f} | {sum(x.non_2xx for x in cells)} "
            f"| {sum(sum(x.errors.values()) for x in cells)} "
            f"| {fmt(cpu_med(fixed, n, fc, 'server_pct'))} |"
        )
    lines += [
        "",
        "Sanity: c=1 p50 on one worker against the multi-worker peer, and answers against "
        "offline predict_proba (20 single-record requests).",
        "",
        f"| peer | c=1 p50 ms, 1 worker | c=1 p50 ms, {args.workers} workers | c=1 ok "
        "| answers max abs diff | answers ok |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    for n in names:
        s, a = sanity[n], report["correctness"][n]
        wn = s[f"p50_{args.workers}_workers_ms"]
        lines.append(
            f"| {LABELS[n]} | {s['p50_1_worker_ms']:.2f} | "
            f"{'n/a' if wn is None else f'{wn:.2f}'} | {'yes' if s['ok'] else 'NO: broken'} "
            f"| {a['max_abs_diff']:.1e} | {'yes' if a['ok'] else 'NO'} |"
        )
    topic = report["prediction_log"]
    if topic:
        checks = report["log_checks"]
        bad = [c for c in checks if not c["ok"]]
        lines += [
            "",
            f"Prediction log (Flywheel's /metrics and the prediction topic): per Flywheel cell, "
            f"logged = served and dropped = 0 in {len(checks) - len(bad)} of {len(checks)} cells; "
            f"over the whole run served {topic['served']:.0f}, sent {topic['sent']:.0f}, dropped "
            f"{topic['dropped']:.0f}, topic holds {topic['topic_predictions']} predictions in "
            f"{topic['topic_events']} events: {'OK' if topic['ok'] else 'MISMATCH'}.",
        ]
    if report["large"]:
        lines += [
            "",
            f"Large requests: {args.large_rows:,}-row OIP requests, "
            f"{2 * args.workers} connections, median of {args.rounds} round(s).",
            "",
            "| peer | tensors | rows/s | p50 ms | p99 ms | non-2xx | errors | max abs diff |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for e in report["large"]:
            if "skipped" in e:
                lines.append(
                    f"| {LABELS[e['peer']]} | {e['encoding']} | skipped: {e['skipped']} | | | | | |"
                )
                continue
            diff = e.get("max_abs_diff")
            lines.append(
                f"| {LABELS[e['peer']]} | {e['encoding']} | {e['rows_per_s']:,.0f} "
                f"| {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | {e['non_2xx']} | {e['errors']} "
                f"| {'n/a' if diff is None else f'{diff:.1e}'} |"
            )
    ratios: dict[str, Any] = {}
    peers = [n for n in names if n not in FLYWHEEL]
    flys = [n for n in names if n in FLYWHEEL]
    lines.append("")
    if 32 in levels and peers and flys:
        bp = max(peers, key=lambda n: med(closed, n, 32, "rps"))
        bf = max(flys, key=lambda n: med(closed, n, 32, "rps"))
        x = med(closed, bf, 32, "rps") / med(closed, bp, 32, "rps")
        ratios["c32"] = {"ratio": x, "flywheel_route": bf, "best_peer": bp}
        lines.append(f"serving ratio c=32 vs best peer: {x:.2f}")
        lines.append(
            f"  (Flywheel's best route {bf}, {med(closed, bf, 32, 'rps'):,.0f} RPS / best peer "
            f"{bp}, {med(closed, bp, 32, 'rps'):,.0f} RPS)"
        )
    if fixed and peers and flys:
        bp = min(peers, key=lambda n: med(fixed, n, fc, "p99_ms"))
        bf = min(flys, key=lambda n: med(fixed, n, fc, "p99_ms"))
        x = med(fixed, bf, fc, "p99_ms") / med(fixed, bp, fc, "p99_ms")
        ratios["p99_fixed"] = {"ratio": x, "flywheel_route": bf, "best_peer": bp, "rate": rate}
        lines.append(f"serving p99 ratio at equal load vs best peer: {x:.2f}")
        lines.append(
            f"  (Flywheel's best route {bf}, p99 {med(fixed, bf, fc, 'p99_ms'):.1f} ms / best peer "
            f"{bp}, p99 {med(fixed, bp, fc, 'p99_ms'):.1f} ms, at {rate} RPS)"
        )
    return "\n".join(lines), ratios


if __name__ == "__main__":
    main()
