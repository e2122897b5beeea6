"""Run a local single-node Apache Kafka 4.1 broker without Docker.

The broker is the real Apache Kafka (``kafka_2.13:4.1.1``) in KRaft combined mode
(one JVM that is both broker and controller). Its jars are resolved once from Maven
Central with ``mvn`` (see ``deploy/kafka/pom.xml``) into a cache directory that is
shared by every data directory and every CI re-run.

Layout of a data directory (it survives broker restarts)::

    <data_dir>/server.properties   regenerated on every start
    <data_dir>/log4j2.properties   regenerated on every start
    <data_dir>/logs/               log.dirs: KRaft metadata + topic data (+ cluster id)
    <data_dir>/broker.log          broker stdout/stderr, appended across restarts
    <data_dir>/broker.pid          pid of the running broker
    <data_dir>/devkafka.json       ports and pid, so another process can stop/inspect it

Command line::

    python -m flywheel_shared.devkafka start [--port 9092] [--data-dir .flywheel/kafka]
    python -m flywheel_shared.devkafka start --foreground    # Ctrl-C stops the broker
    python -m flywheel_shared.devkafka status | stop | restart

Environment: ``FLYWHEEL_KAFKA_CACHE`` (jar cache, default ``~/.cache/flywheel/kafka``),
``FLYWHEEL_KAFKA_POM`` (pom to resolve, default the repo's ``deploy/kafka/pom.xml``),
``FLYWHEEL_KAFKA_JVM_OPTS`` (extra JVM flags), ``FLYWHEEL_KAFKA_CDS=0`` (disable the
class-data-sharing archive that makes warm starts ~1 s faster).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "KAFKA_VERSION",
    "KafkaStartError",
    "LocalKafka",
    "default_cache_dir",
    "default_data_dir",
    "find_pom",
    "main",
    "pick_free_port",
    "resolve_jars",
    "wait_for_kafka",
]

KAFKA_VERSION = "4.1.1"
NODE_ID = 1
_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_MARKER = ".flywheel-complete"
_STATE_FILE = "devkafka.json"
_PID_FILE = "broker.pid"
_LOG_FILE = "broker.log"
_LOG_PREFIX = "devkafka:"

_LOG4J2_BROKER = """\
# Written by flywheel_shared.devkafka on every start; edits are overwritten.
status = warn
# The JVM's own shutdown hook would race Kafka's; console output needs no flush.
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# Each config object logs every key at INFO: ~1000 lines per start. server.properties has it.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

_LOG4J2_TOOL = """\
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
"""


class KafkaStartError(RuntimeError):
    """The broker (or the jar resolution) failed; the message carries the log tail."""


def _say(msg: str) -> None:
    print(f"{_LOG_PREFIX} {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- paths


def default_cache_dir() -> Path:
    """Jar cache: ``$FLYWHEEL_KAFKA_CACHE`` or ``~/.cache/flywheel/kafka``."""
    env = os.environ.get("FLYWHEEL_KAFKA_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "flywheel" / "kafka"


def default_data_dir() -> Path:
    """Default broker data directory: ``.flywheel/kafka`` under the current directory."""
    return (Path.cwd() / ".flywheel" / "kafka").resolve()


def find_pom() -> Path:
    """Locate ``deploy/kafka/pom.xml`` (``$FLYWHEEL_KAFKA_POM`` overrides).

    The module lives at ``shared/src/flywheel_shared/devkafka.py`` in the repo (the
    workspace installs it editable), so the pom is found relative to this file; the
    current directory and its parents are searched as a fallback.
    """
    env = os.environ.get("FLYWHEEL_KAFKA_POM")
    if env:
        pom = Path(env).expanduser().resolve()
        if not pom.is_file():
            raise KafkaStartError(f"FLYWHEEL_KAFKA_POM={env} does not exist")
        return pom
    here = Path(__file__).resolve()
    cwd = Path.cwd().resolve()
    for base in (*here.parents, cwd, *cwd.parents):
        pom = base / "deploy" / "kafka" / "pom.xml"
        if pom.is_file():
            return pom
    raise KafkaStartError(
        "cannot find deploy/kafka/pom.xml; run from the Flywheel repo or set FLYWHEEL_KAFKA_POM"
    )


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaStartError("`java` not found: Kafka 4.1 needs a Java 17+ runtime on PATH")
    return java


# ---------------------------------------------------------------------- jar resolve


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so parallel test workers resolve the jars only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _pom_hash(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:16]


def _libs_complete(libs: Path, digest: str) -> bool:
    marker = libs / _MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def resolve_jars(cache_dir: Path | None = None, *, pom: Path | None = None) -> Path:
    """Return ``<cache_dir>/libs`` holding the broker's runtime jars, fetching them if needed.

    Runs ``mvn dependency:copy-dependencies`` once; the directory is then marked with
    the pom's hash and reused until the pom changes. Safe to call from concurrent
    processes (file lock + atomic rename).
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    pom = (pom or find_pom()).resolve()
    digest = _pom_hash(pom)
    libs = cache_dir / "libs"
    if _libs_complete(libs, digest):
        return libs

    with _file_lock(cache_dir / ".resolve.lock"):
        if _libs_complete(libs, digest):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaStartError(
                "`mvn` not found: Apache Maven is needed once to fetch the Kafka jars"
            )
        _say(f"resolving Kafka {KAFKA_VERSION} from Maven Central… (first run only)")
        started = time.monotonic()
        tmp = cache_dir / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            output = (proc.stdout + proc.stderr).strip().splitlines()[-40:]
            raise KafkaStartError(
                f"maven failed ({proc.returncode}): {shlex.join(cmd)}\n" + "\n".join(output)
            )
        jars = sorted(tmp.glob("*.jar"))
        if not any(j.name.startswith(f"kafka_2.13-{KAFKA_VERSION}") for j in jars):
            shutil.rmtree(tmp, ignore_errors=True)
            raise KafkaStartError(f"maven succeeded but {tmp} has no kafka_2.13 jar")
        (tmp / _MARKER).write_text(digest + "\n")
        # Swap in the new directory; stale jars of another version on the classpath
        # would break the broker, so the old one is removed, not merged.
        old = cache_dir / f"libs.old-{os.getpid()}"
        if libs.exists():
            libs.rename(old)
        tmp.rename(libs)
        shutil.rmtree(old, ignore_errors=True)
        for stale in cache_dir.glob("*.jsa"):
            stale.unlink(missing_ok=True)
        _say(f"resolved {len(jars)} jars in {time.monotonic() - started:.1f}s into {libs}")
    return libs


# ------------------------------------------------------------------------ helpers


def pick_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (racy, but fine locally)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Java sets SO_REUSEADDR too, so a TIME_WAIT left by a stopped broker is no conflict.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _new_cluster_id() -> str:
    # Same encoding as org.apache.kafka.common.Uuid: url-safe base64, no padding;
    # Kafka also avoids a leading '-' because the CLI would read it as an option.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _split_bootstrap(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _metadata_probe(bootstrap: str, budget_s: float) -> bool:
    from aiokafka import AIOKafkaClient  # imported lazily: only needed when probing

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        client_id="flywheel-devkafka-probe",
        request_timeout_ms=max(1000, int(budget_s * 1000)),
    )
    try:
        async with asyncio.timeout(budget_s):
            await client.bootstrap()
        # A broker only appears in Metadata once it is unfenced, i.e. able to host partitions.
        return bool(client.cluster.brokers()) and client.cluster.controller is not None
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def _probe_in_thread(bootstrap: str, timeout: float) -> bool:
    """Run the async probe on a private loop, so callers may already be inside a loop."""
    result: list[bool] = [False]

    def run() -> None:
        result[0] = asyncio.run(_metadata_probe(bootstrap, timeout))

    t = threading.Thread(target=run, name="devkafka-probe", daemon=True)
    t.start()
    t.join(timeout + 5)
    return result[0]


def wait_for_kafka(
    bootstrap: str,
    timeout: float = 60.0,
    *,
    is_alive: Callable[[], bool] | None = None,
    describe_failure: Callable[[], str] | None = None,
) -> None:
    """Block until ``bootstrap`` answers a Kafka Metadata request listing a live broker.

    ``is_alive`` lets the caller abort early when the broker process died;
    ``describe_failure`` supplies extra text (e.g. a log tail) for the error.
    Raises :class:`KafkaStartError` on timeout or early death.
    """
    host, port = _split_bootstrap(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        if is_alive is not None and not is_alive():
            extra = describe_failure() if describe_failure else ""
            raise KafkaStartError(f"Kafka at {bootstrap} exited during startup\n{extra}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            extra = describe_failure() if describe_failure else ""
            raise KafkaStartError(f"Kafka at {bootstrap} not ready after {timeout:.0f}s\n{extra}")
        if _tcp_open(host, port, timeout=min(0.5, remaining)) and _probe_in_thread(
            bootstrap, timeout=min(10.0, max(1.0, remaining))
        ):
            return
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def _pid_cmdline(pid: int) -> str | None:
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            # Field 3 (after the parenthesised comm) is the state; Z = zombie = gone.
            if stat.rpartition(")")[2].split()[0] == "Z":
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            return None
    try:
        out = subprocess.run(
            ["ps", "-ww", "-o", "stat=,command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return None
    if not out or out.startswith("Z"):
        return None
    return out.split(None, 1)[1] if " " in out else ""


# ------------------------------------------------------------------------- broker


class LocalKafka:
    """A single-node KRaft Kafka broker running as a child JVM on 127.0.0.1.

    The data directory holds everything (cluster id, topics, offsets, pid), so a
    broker started by one process can be inspected, restarted or stopped from
    another one by constructing ``LocalKafka(data_dir)`` there (ports are read back
    from the data directory when not given).
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        cache_dir: Path | str | None = None,
        *,
        heap_max: str = "512m",
        heap_min: str = "256m",
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        """Describe a broker; nothing starts until :meth:`start`.

        ``port=None`` reuses the port recorded in the data directory, else 9092;
        ``port=0`` picks a free port at first start (kept across restarts).
        ``controller_port=None`` picks a free port at each start.
        """
        self.data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
        self.cache_dir = Path(cache_dir or default_cache_dir()).expanduser().resolve()
        state = self._read_state()
        if port is None:
            port = int(state.get("port", 9092))
        self.port: int = port
        self._requested_controller_port = controller_port
        self.controller_port: int | None = controller_port or state.get("controller_port")
        self.heap_max = heap_max
        self.heap_min = heap_min
        self.extra_properties = dict(extra_properties or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # ---- paths & state -------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        """Kafka ``log.dirs`` (topic data and KRaft metadata)."""
        return self.data_dir / "logs"

    @property
    def broker_log(self) -> Path:
        """The broker's combined stdout/stderr log file."""
        return self.data_dir / _LOG_FILE

    @property
    def pid_file(self) -> Path:
        """File holding the running broker's pid."""
        return self.data_dir / _PID_FILE

    @property
    def properties_file(self) -> Path:
        """The generated ``server.properties``."""
        return self.data_dir / "server.properties"

    @property
    def cluster_id(self) -> str | None:
        """Cluster id from ``meta.properties`` once storage is formatted."""
        meta = self.log_dir / "meta.properties"
        if not meta.is_file():
            return None
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return None

    @property
    def pid(self) -> int | None:
        """Pid of the running broker, or ``None``."""
        pid = self._recorded_pid()
        return pid if pid is not None and self._is_our_broker(pid) else None

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / _STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, **values: Any) -> None:
        state = self._read_state()
        state.update(values)
        tmp = self.data_dir / f".{_STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.data_dir / _STATE_FILE)

    def _recorded_pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        cmdline = _pid_cmdline(pid)
        # Guards against a recycled pid: it must be kafka.Kafka on *our* properties file.
        return (
            cmdline is not None and _MAIN_CLASS in cmdline and str(self.properties_file) in cmdline
        )

    def is_running(self) -> bool:
        """True if this data directory's broker process is alive (ready or not)."""
        return self.pid is not None

    def is_ready(self, timeout: float = 5.0) -> bool:
        """True if the broker is alive and answers a Metadata request."""
        return (
            self.is_running()
            and _tcp_open("127.0.0.1", self.port)
            and _probe_in_thread(self.bootstrap, timeout)
        )

    def log_tail(self, lines: int = 60, *, since_start: bool = True) -> str:
        """Last ``lines`` lines of ``broker.log`` (by default only from the latest start)."""
        try:
            with self.broker_log.open("rb") as fh:
                if since_start:
                    fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return "(no broker.log)"
        text = data.decode(errors="replace").splitlines()[-lines:]
        return f"--- tail of {self.broker_log} ---\n" + "\n".join(text)

    # ---- config --------------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        assert self.controller_port is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            # Static voter set (kraft.version 0): unlike the dynamic quorum that
            # `format --standalone` creates, it does not pin the controller endpoint
            # into the metadata log, so the controller port may change per start.
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Both default to 50 partitions, created on the first group / transaction:
            # needless on one node, and it slows first use and every restart.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "num.network.threads": "2",
            "num.io.threads": "4",
            # Default is 128 MiB allocated on the heap at startup; too much for -Xmx512m.
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        }
        props.update(self.extra_properties)
        return props

    def _write_config(self) -> None:
        lines = [f"# Written by flywheel_shared.devkafka on {time.strftime('%Y-%m-%d %H:%M:%S')}"]
        lines += [f"{k}={v}" for k, v in self._properties().items()]
        self.properties_file.write_text("\n".join(lines) + "\n")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2_BROKER)
        (self.data_dir / "log4j2-tools.properties").write_text(_LOG4J2_TOOL)

    def _format_storage(self, java: str, libs: Path) -> None:
        if (self.log_dir / "meta.properties").is_file():
            return  # already formatted: keep the cluster id and all data
        cluster_id = _new_cluster_id()
        cds, _ = self._cds_flags(java, libs, dump_if_missing=False)
        cmd = [
            java,
            "-Xmx256m",
            *cds,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2-tools.properties'}",
            "-cp",
            f"{libs}{os.sep}*",
            _STORAGE_TOOL,
            "format",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_file),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise KafkaStartError(
                f"kafka-storage format failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )

    def _cds_flags(
        self, java: str, libs: Path, *, dump_if_missing: bool = True
    ) -> tuple[list[str], Path | None]:
        """AppCDS archive flags: dump on the first clean exit, reuse it afterwards.

        Loading Kafka's ~45 jars dominates startup; a dynamic class-data-sharing
        archive cuts a warm start from ~3 s to ~1.7 s. The archive is keyed on the
        jar set and the JVM binary; a mismatching or corrupt archive is ignored by
        the JVM (``-Xshare:auto``), so this can only make things faster.
        """
        if os.environ.get("FLYWHEEL_KAFKA_CDS", "1") == "0":
            return [], None
        marker = (libs / _MARKER).read_text().strip() if (libs / _MARKER).is_file() else ""
        real_java = os.path.realpath(java)
        key = hashlib.sha256(f"{marker}|{real_java}".encode()).hexdigest()[:16]
        archive = self.cache_dir / f"kafka-{key}.jsa"
        # The dump run prints ~60 harmless "[cds] skipping class" warnings otherwise.
        quiet = ["-Xshare:auto", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
        if archive.is_file() and archive.stat().st_size > 0:
            return [*quiet, f"-XX:SharedArchiveFile={archive}"], None
        if not dump_if_missing:
            return [], None
        dump = self.cache_dir / f"kafka-{key}.jsa.tmp-{uuid.uuid4().hex[:8]}"
        return [*quiet, f"-XX:ArchiveClassesAtExit={dump}"], dump

    def _finish_cds_dump(self, *, keep: bool) -> None:
        """Promote the archive a cleanly stopped broker dumped; drop any other leftover."""
        dump = self._read_state().get("cds_dump")
        if not dump:
            return
        tmp = Path(dump)
        final = tmp.with_name(tmp.name.split(".tmp-")[0])
        # Only a JVM that exited normally wrote a complete archive.
        if keep and tmp.is_file() and tmp.stat().st_size > 0 and not final.exists():
            tmp.replace(final)
        tmp.unlink(missing_ok=True)
        self._write_state(cds_dump=None)

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalKafka:
        """Start the broker (formatting storage on first use) and wait until it answers.

        Idempotent: if this data directory's broker already runs (maybe started by
        another process), adopts its ports and only waits for it to answer.
        Raises :class:`KafkaStartError` with the tail of ``broker.log`` on failure.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".start.lock"):
            if self.is_running():
                state = self._read_state()
                self.port = int(state.get("port", self.port))
                self.controller_port = state.get("controller_port", self.controller_port)
                wait_for_kafka(self.bootstrap, timeout, is_alive=self.is_running)
                return self
            return self._launch(timeout)

    def _launch(self, timeout: float) -> LocalKafka:
        if self.port == 0:
            self.port = pick_free_port()
        if self._requested_controller_port is None:
            self.controller_port = pick_free_port()
            while self.controller_port == self.port:
                self.controller_port = pick_free_port()
        for name, p in (("port", self.port), ("controller port", self.controller_port)):
            if p is None or not _port_free(p):
                raise KafkaStartError(
                    f"{name} {p} on 127.0.0.1 is already in use (another Kafka running?); "
                    "choose another with --port or stop the other broker"
                )

        libs = resolve_jars(self.cache_dir)
        java = _java()
        self._write_config()
        self._format_storage(java, libs)
        self._finish_cds_dump(keep=False)  # a broker that died unstopped may have left one
        cds, dump = self._cds_flags(java, libs)

        cmd = [
            java,
            f"-Xmx{self.heap_max}",
            f"-Xms{self.heap_min}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            *cds,
            *shlex.split(os.environ.get("FLYWHEEL_KAFKA_JVM_OPTS", "")),
            "-cp",
            f"{libs}{os.sep}*",
            _MAIN_CLASS,
            str(self.properties_file),
        ]
        with self.broker_log.open("ab") as log:
            self._log_offset = log.tell()
            log.write(
                f"===== devkafka start {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                f"{shlex.join(cmd)}\n".encode()
            )
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C aimed at the launching shell must not kill it.
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        self._write_state(
            pid=self._proc.pid,
            port=self.port,
            controller_port=self.controller_port,
            bootstrap=self.bootstrap,
            cluster_id=self.cluster_id,
            cds_dump=str(dump) if dump else None,
        )
        try:
            wait_for_kafka(
                self.bootstrap,
                timeout,
                is_alive=self.is_running,
                describe_failure=self.log_tail,
            )
        except BaseException:
            # Don't leave a half-started JVM behind (the error already carries the log tail).
            with contextlib.suppress(Exception):
                self.stop(timeout=10)
            raise
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker: SIGTERM (clean shutdown), then SIGKILL after ``timeout``.

        Works from any process via the pid file. Returns True if a broker was running.
        """
        pid = self._recorded_pid()
        if pid is None or not self._is_our_broker(pid):
            self._cleanup_after_exit(clean=False)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        clean = self._wait_gone(pid, timeout)
        if not clean:
            _say(f"broker pid {pid} ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise KafkaStartError(f"broker pid {pid} survived SIGKILL")
        self._cleanup_after_exit(clean=clean)
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)  # reaps the child, so no zombie is left
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._is_our_broker(pid):
                return True
            time.sleep(0.05)
        return not self._is_our_broker(pid)

    def _cleanup_after_exit(self, *, clean: bool) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None:
            self.pid_file.unlink(missing_ok=True)
            if self.data_dir.is_dir():
                self._finish_cds_dump(keep=clean)
                self._write_state(pid=None)

    def restart(self, timeout: float = 60.0) -> LocalKafka:
        """Stop (if running) and start again on the same port and data directory."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafka(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"


# ---------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="broker data directory (default: ./.flywheel/kafka); survives restarts",
    )
    common.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="jar cache (default: $FLYWHEEL_KAFKA_CACHE or ~/.cache/flywheel/kafka)",
    )
    starting = argparse.ArgumentParser(add_help=False)
    starting.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port on 127.0.0.1 (default: last used for this data dir, else 9092; "
        "0 = any free port)",
    )
    starting.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="KRaft controller port (default: any free port)",
    )
    starting.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for readiness (default 90)"
    )
    starting.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached; Ctrl-C / SIGTERM stops the broker",
    )

    parser = argparse.ArgumentParser(
        prog="python -m flywheel_shared.devkafka",
        description=(
            f"Local single-node Apache Kafka {KAFKA_VERSION} (KRaft) for development and "
            "tests, without Docker. Needs Java 17+; the first start fetches the jars "
            "with Maven. `start` prints the bootstrap address on stdout when ready."
        ),
        epilog=(
            "examples:\n"
            "  python -m flywheel_shared.devkafka start              # 127.0.0.1:9092, detached\n"
            "  python -m flywheel_shared.devkafka start --foreground # Ctrl-C stops it\n"
            "  export KAFKA=$(python -m flywheel_shared.devkafka start --port 0)\n"
            "  python -m flywheel_shared.devkafka status; python -m flywheel_shared.devkafka stop\n"
            "data (topics, offsets, cluster id) lives in --data-dir and survives restarts;\n"
            "the broker log is <data-dir>/broker.log."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "start", parents=[common, starting], help="start the broker and wait until it is ready"
    )
    sub.add_parser("stop", parents=[common], help="stop the broker of the data dir")
    sub.add_parser(
        "status",
        parents=[common],
        help="print whether the broker runs (exit 0 ready, 1 starting/unready, 3 stopped)",
    )
    sub.add_parser("restart", parents=[common, starting], help="stop, then start")
    return parser


def _run_foreground(kafka: LocalKafka) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    _say(f"broker running (pid {kafka.pid}); Ctrl-C to stop. Log: {kafka.broker_log}")
    try:
        while not stop.wait(0.5):
            if not kafka.is_running():
                _say("broker exited unexpectedly")
                print(kafka.log_tail(), file=sys.stderr)
                return 1
    finally:
        if kafka.is_running():
            _say("stopping broker…")
            kafka.stop()
            _say("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m flywheel_shared.devkafka``."""
    args = _build_parser().parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    port = getattr(args, "port", None)
    kafka = LocalKafka(
        data_dir,
        port=port,
        controller_port=getattr(args, "controller_port", None),
        cache_dir=args.cache_dir,
    )
    try:
        if args.command == "status":
            if not kafka.is_running():
                print(f"stopped (data dir {kafka.data_dir})")
                return 3
            ready = kafka.is_ready()
            print(
                f"{'ready' if ready else 'running, not answering'}: bootstrap={kafka.bootstrap} "
                f"pid={kafka.pid} data_dir={kafka.data_dir}"
            )
            return 0 if ready else 1
        if args.command == "stop":
            if kafka.stop():
                _say(f"stopped broker of {kafka.data_dir}")
            else:
                _say(f"no broker running for {kafka.data_dir}")
            return 0

        if args.command == "restart":
            kafka.stop()
        elif kafka.is_running():
            _say(f"already running (pid {kafka.pid})")
        began = time.monotonic()
        kafka.start(timeout=args.timeout)
        _say(
            f"Kafka {KAFKA_VERSION} ready at {kafka.bootstrap} in "
            f"{time.monotonic() - began:.1f}s (data {kafka.data_dir})"
        )
        print(kafka.bootstrap, flush=True)
        if args.foreground:
            return _run_foreground(kafka)
        return 0
    except KafkaStartError as exc:
        _say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
