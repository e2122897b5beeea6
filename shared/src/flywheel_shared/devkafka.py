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
    <data_dir>/security/           only with security: ca.pem (clients verify with it), the
                                   broker's keystore, and secrets.json (keystore and broker
                                   passwords); mode 0700

Command line::

    python -m flywheel_shared.devkafka start [--port 9092] [--data-dir .flywheel/kafka]
    python -m flywheel_shared.devkafka start --foreground    # Ctrl-C stops the broker
    python -m flywheel_shared.devkafka start --sasl-scram alice:secret --tls   # SASL_SSL
    python -m flywheel_shared.devkafka status | stop | restart

Security (:class:`KafkaSecurity`, off by default): the client listener can require
SASL/SCRAM-SHA-512 (users created when the storage is first formatted), TLS (a certificate for
127.0.0.1/localhost from a throwaway CA generated in ``<data_dir>/security/``), or both
(``SASL_SSL``). Brokers talk to each other on that same listener as the internal SCRAM user
``devkafka-broker``; only the KRaft controller listener stays PLAINTEXT on 127.0.0.1. No
authorizer runs: every authenticated user may do everything.

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
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
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
    "SCRAM_MECHANISM",
    "KafkaSecurity",
    "KafkaStartError",
    "LocalKafka",
    "default_cache_dir",
    "default_data_dir",
    "find_pom",
    "main",
    "parse_scram_user",
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
SCRAM_MECHANISM = "SCRAM-SHA-512"
_BROKER_USER = "devkafka-broker"  # inter-broker SCRAM user; readiness probes log in as it
_SECURITY_DIR = "security"
_SECRETS_FILE = "secrets.json"
_SCRAM_NAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")
# kafka-storage splits --add-scram on commas; quotes, backslashes and blanks would need
# escaping in the JAAS config and in shells: refused rather than half supported.
_SCRAM_PASSWORD_BAD = re.compile(r'[\s,"\\]')
_TLS_DAYS = "3650"

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


class KafkaSecurity:
    """How the broker's client listener is secured; the default (nothing) is PLAINTEXT.

    ``scram_users`` (name → password): require SASL/SCRAM-SHA-512 and create these users. They
    are created when the data directory's storage is formatted, i.e. on its first start, so a
    data directory keeps the users it was first started with (another set is an error).
    ``tls``: TLS with a certificate for 127.0.0.1 and localhost, signed by a throwaway CA; both
    are generated in ``<data_dir>/security/`` on first use and kept, and clients verify the
    broker with :attr:`LocalKafka.ca_file`. Both together: ``SASL_SSL``.
    """

    def __init__(self, scram_users: Mapping[str, str] | None = None, *, tls: bool = False) -> None:
        users = dict(scram_users or {})
        for name, password in users.items():
            if not _SCRAM_NAME.fullmatch(name):
                raise ValueError(f"SCRAM user name {name!r}: use 1-128 letters, digits and . _ @ -")
            if name == _BROKER_USER:
                raise ValueError(f"SCRAM user name {name!r} is the broker's own; pick another")
            if not password or _SCRAM_PASSWORD_BAD.search(password):
                raise ValueError(
                    f"the SCRAM password of {name!r} must be non-empty, without commas, "
                    "quotes, backslashes or whitespace"
                )
        self.scram_users: dict[str, str] = users
        self.tls = bool(tls)

    @property
    def protocol(self) -> str:
        """Kafka security protocol of the client listener: PLAINTEXT, SSL, SASL_PLAINTEXT or
        SASL_SSL."""
        if self.scram_users:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL" if self.tls else "PLAINTEXT"

    @property
    def sasl(self) -> bool:
        """True when clients must log in (SCRAM)."""
        return bool(self.scram_users)

    def digest(self, salt: str) -> str:
        """A salted hash of the users and passwords (to tell whether storage has them)."""
        items = json.dumps(sorted(self.scram_users.items()))
        return hashlib.sha256(f"{salt}|{items}".encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KafkaSecurity):
            return NotImplemented
        return (self.scram_users, self.tls) == (other.scram_users, other.tls)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:  # never the passwords
        return f"KafkaSecurity(scram_users={sorted(self.scram_users)}, tls={self.tls})"


def parse_scram_user(text: str) -> tuple[str, str]:
    """``USER:PASSWORD`` → ``(user, password)`` (the password may contain colons).

    Raises ``ValueError`` with a message that never repeats the password.
    """
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        which = f" for user {name!r}" if sep and name else ""
        raise ValueError(f"expected USER:PASSWORD{which}")
    KafkaSecurity({name: password})  # validates both
    return name, password


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


async def _metadata_probe(
    bootstrap: str, budget_s: float, options: Mapping[str, Any] | None = None
) -> bool:
    from aiokafka import AIOKafkaClient  # imported lazily: only needed when probing

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        client_id="flywheel-devkafka-probe",
        request_timeout_ms=max(1000, int(budget_s * 1000)),
        **(options or {}),
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


def _probe_in_thread(
    bootstrap: str, timeout: float, options: Mapping[str, Any] | None = None
) -> bool:
    """Run the async probe on a private loop, so callers may already be inside a loop."""
    result: list[bool] = [False]

    def run() -> None:
        result[0] = asyncio.run(_metadata_probe(bootstrap, timeout, options))

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
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Block until ``bootstrap`` answers a Kafka Metadata request listing a live broker.

    ``is_alive`` lets the caller abort early when the broker process died;
    ``describe_failure`` supplies extra text (e.g. a log tail) for the error;
    ``client_options`` are extra aiokafka client arguments (security, credentials).
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
            bootstrap, min(10.0, max(1.0, remaining)), client_options
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


def _security_options(
    protocol: str, ca_file: Path | None, user: str | None, password: str | None
) -> dict[str, Any]:
    """aiokafka connection arguments for ``protocol`` (empty for PLAINTEXT)."""
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(ca_file) if ca_file else None
        )
    if protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=SCRAM_MECHANISM, sasl_plain_username=user, sasl_plain_password=password
        )
    return options


def _keytool(java: str) -> str:
    for candidate in (Path(java).parent, Path(os.path.realpath(java)).parent):
        if (candidate / "keytool").is_file():
            return str(candidate / "keytool")
    found = shutil.which("keytool")
    if found is None:
        raise KafkaStartError("`keytool` not found: TLS needs the JDK's keytool next to java")
    return found


def _run_tools(*commands: tuple[str, list[str]]) -> None:
    """Run ``(label, argv)`` commands in parallel (short-lived JVMs); raise if any fails.

    The error names the label, never the command line (it carries the keystore password).
    """
    procs = [
        (label, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for label, cmd in commands
    ]
    failures = []
    for label, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            text = out.decode(errors="replace").strip()
            failures.append(f"keytool {label} failed ({proc.returncode}): {text}")
    if failures:
        raise KafkaStartError("generating the TLS certificate failed:\n" + "\n".join(failures))


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
        security: KafkaSecurity | None = None,
    ) -> None:
        """Describe a broker; nothing starts until :meth:`start`.

        ``port=None`` reuses the port recorded in the data directory, else 9092;
        ``port=0`` picks a free port at first start (kept across restarts).
        ``controller_port=None`` picks a free port at each start.
        ``security``: SASL/SCRAM and/or TLS on the client listener (see
        :class:`KafkaSecurity`); None is PLAINTEXT. It applies to each start and is not
        remembered, but a broker that already runs is adopted with whatever it runs.
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
        self.security = (
            security if security is not None and security.protocol != "PLAINTEXT" else None
        )
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
    def security_dir(self) -> Path:
        """Certificates and secrets of a secured broker (mode 0700)."""
        return self.data_dir / _SECURITY_DIR

    @property
    def security_protocol(self) -> str:
        """The client listener's protocol: the requested one, else the running broker's."""
        if self.security is not None:
            return self.security.protocol
        recorded = self._read_state().get("security_protocol")
        return str(recorded) if recorded and self.is_running() else "PLAINTEXT"

    @property
    def ca_file(self) -> Path | None:
        """PEM file of the CA that signed the broker's certificate (with TLS), for clients."""
        if self.security_protocol in ("SSL", "SASL_SSL"):
            return self.security_dir / "ca.pem"
        return None

    def client_options(self, user: str | None = None) -> dict[str, Any]:
        """aiokafka client arguments to reach this broker as ``user`` (SCRAM).

        ``user`` defaults to the first of :attr:`security`'s users, else the broker's own.
        """
        name, password = self._credentials(user)
        return {
            "bootstrap_servers": self.bootstrap,
            **_security_options(self.security_protocol, self.ca_file, name, password),
        }

    def client_env(self, user: str | None = None) -> dict[str, str]:
        """The ``FLYWHEEL_KAFKA_*`` variables that point a Flywheel service at this broker as
        ``user`` (password included)."""
        protocol = self.security_protocol
        env = {"FLYWHEEL_KAFKA_BOOTSTRAP": self.bootstrap}
        if protocol == "PLAINTEXT":
            return env
        env["FLYWHEEL_KAFKA_SECURITY_PROTOCOL"] = protocol
        if protocol.startswith("SASL_"):
            name, password = self._credentials(user)
            env.update(
                FLYWHEEL_KAFKA_SASL_MECHANISM=SCRAM_MECHANISM,
                FLYWHEEL_KAFKA_SASL_USERNAME=name or "",
                FLYWHEEL_KAFKA_SASL_PASSWORD=password or "",
            )
        if self.ca_file is not None:
            env["FLYWHEEL_KAFKA_SSL_CAFILE"] = str(self.ca_file)
        return env

    def _credentials(self, user: str | None) -> tuple[str | None, str | None]:
        users = self.security.scram_users if self.security is not None else {}
        if user is None and users:
            user = next(iter(users))
        if user is None or user == _BROKER_USER:
            return _BROKER_USER, self._secrets(create=False).get("broker_password")
        if user not in users:
            raise KeyError(f"no SCRAM user {user!r} in this broker's security settings")
        return user, users[user]

    def _probe_options(self) -> dict[str, Any]:
        """How readiness probes reach the running broker: as recorded when it started, logged
        in as the broker's own user."""
        protocol = str(self._read_state().get("security_protocol") or "PLAINTEXT")
        ca = self.security_dir / "ca.pem"
        ca_file = ca if ca.is_file() else None  # gone: the probe then fails rather than raises
        password = self._secrets(create=False).get("broker_password")
        return _security_options(protocol, ca_file, _BROKER_USER, password)

    def _secrets(self, *, create: bool = True) -> dict[str, Any]:
        """``security/secrets.json``: generated passwords (created on first use)."""
        path = self.security_dir / _SECRETS_FILE
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
        if not create:
            return {}
        data = {
            "salt": secrets.token_hex(8),
            "broker_password": secrets.token_urlsafe(24),
            "keystore_password": secrets.token_urlsafe(24),
        }
        self._write_secrets(data)
        return data

    def _write_secrets(self, data: Mapping[str, Any]) -> None:
        self.security_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.security_dir, 0o700)
        tmp = self.security_dir / f".{_SECRETS_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
        tmp.replace(self.security_dir / _SECRETS_FILE)

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
            and _probe_in_thread(self.bootstrap, timeout, self._probe_options())
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
        if self.security is not None:
            props.update(self._security_properties(self.security))
        props.update(self.extra_properties)
        return props

    def _security_properties(self, security: KafkaSecurity) -> dict[str, str]:
        """The client listener (named after its protocol) secured; brokers use it too."""
        protocol = listener = security.protocol
        props = {
            "listeners": (
                f"{listener}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"{listener}://127.0.0.1:{self.port}",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"{listener}:{protocol},CONTROLLER:PLAINTEXT",
        }
        secret = self._secrets()
        prefix = f"listener.name.{listener.lower()}"
        if security.sasl:
            props.update(
                {
                    "sasl.enabled.mechanisms": SCRAM_MECHANISM,
                    "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
                    f"{prefix}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required "
                        f'username="{_BROKER_USER}" password="{secret["broker_password"]}";'
                    ),
                }
            )
        if security.tls:
            props.update(
                {
                    "ssl.keystore.type": "PKCS12",
                    "ssl.keystore.location": str(self.security_dir / "broker.p12"),
                    "ssl.keystore.password": secret["keystore_password"],
                    "ssl.key.password": secret["keystore_password"],
                    # The broker connects to itself too (transaction markers): it trusts the CA.
                    "ssl.truststore.type": "PEM",
                    "ssl.truststore.location": str(self.security_dir / "ca.pem"),
                    "ssl.client.auth": "none",
                }
            )
        return props

    def _ensure_tls(self, java: str) -> None:
        """A CA and a broker certificate for 127.0.0.1/localhost, made once per data dir.

        The CA's key is thrown away once the broker certificate is signed: nothing else can
        be signed with it. Four rounds of keytool JVMs (about 2-3 s), on the first start only.
        """
        ca_pem, keystore = self.security_dir / "ca.pem", self.security_dir / "broker.p12"
        secret = self._secrets()
        if ca_pem.is_file() and keystore.is_file():
            return
        keytool = _keytool(java)
        tmp = self.security_dir / f"tls.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        pw = secret["keystore_password"]
        fast = ["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC", "-J-Xshare:auto"]

        def kt(*args: str, keystore: str) -> list[str]:
            return [keytool, *fast, *args, "-keystore", keystore, "-storetype", "PKCS12",
                    "-storepass", pw]  # fmt: skip

        gen = ("-genkeypair", "-keyalg", "EC", "-groupname", "secp256r1", "-validity", _TLS_DAYS,
               "-keypass", pw)  # fmt: skip
        ca_ks, broker_ks = str(tmp / "ca.p12"), str(tmp / "broker.p12")
        csr, cert, ca_out, chain = (str(tmp / f) for f in ("csr", "cert.pem", "ca.pem", "chain"))
        ca_ext = ("-ext", "bc:c", "-ext", "KU:c=keyCertSign,cRLSign")
        leaf_ext = ("-ext", "SAN=dns:localhost,ip:127.0.0.1", "-ext", "KU:c=digitalSignature",
                    "-ext", "EKU=serverAuth,clientAuth")  # fmt: skip
        started = time.monotonic()
        _run_tools(
            ("-genkeypair (CA)", kt(*gen, "-alias", "ca", "-dname", "CN=Flywheel devkafka CA",
                                    *ca_ext, keystore=ca_ks)),
            ("-genkeypair (broker)", kt(*gen, "-alias", "broker", "-dname", "CN=localhost",
                                        keystore=broker_ks)),
        )  # fmt: skip
        _run_tools(
            ("-certreq", kt("-certreq", "-alias", "broker", "-file", csr, keystore=broker_ks)),
            ("-exportcert", kt("-exportcert", "-rfc", "-alias", "ca", "-file", ca_out,
                               keystore=ca_ks)),
        )  # fmt: skip
        _run_tools(
            ("-gencert", kt("-gencert", "-rfc", "-alias", "ca", "-infile", csr, "-outfile", cert,
                            "-validity", _TLS_DAYS, *leaf_ext, keystore=ca_ks)),
        )  # fmt: skip
        Path(chain).write_text(Path(cert).read_text() + Path(ca_out).read_text())
        _run_tools(
            ("-importcert", kt("-importcert", "-noprompt", "-alias", "broker", "-file", chain,
                               keystore=broker_ks)),
        )  # fmt: skip
        Path(broker_ks).replace(keystore)
        Path(ca_out).replace(ca_pem)  # last: both present means complete
        shutil.rmtree(tmp, ignore_errors=True)
        _say(
            "generated a throwaway CA and a broker certificate in "
            f"{time.monotonic() - started:.1f}s: clients verify with {ca_pem}"
        )

    def _write_config(self) -> None:
        lines = [f"# Written by flywheel_shared.devkafka on {time.strftime('%Y-%m-%d %H:%M:%S')}"]
        lines += [f"{k}={v}" for k, v in self._properties().items()]
        if self.security is not None:  # it holds the keystore and broker passwords
            self.properties_file.touch(mode=0o600)
            os.chmod(self.properties_file, 0o600)
        self.properties_file.write_text("\n".join(lines) + "\n")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2_BROKER)
        (self.data_dir / "log4j2-tools.properties").write_text(_LOG4J2_TOOL)

    def _format_storage(self, java: str, libs: Path) -> None:
        security = self.security if self.security is not None and self.security.sasl else None
        formatted = (self.log_dir / "meta.properties").is_file()
        scram: list[str] = []
        digest = None
        if security is not None:
            secret = self._secrets()
            digest = security.digest(secret["salt"])
            if formatted:
                self._check_scram_users(security, secret, digest)
                return
            users = {_BROKER_USER: secret["broker_password"], **security.scram_users}
            for name, password in users.items():
                scram += ["--add-scram", f'{SCRAM_MECHANISM}=[name="{name}",password="{password}"]']
        if formatted:
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
            *scram,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise KafkaStartError(
                f"kafka-storage format failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        if security is not None:
            self._write_secrets(
                {
                    **self._secrets(),
                    "scram_users": digest,
                    "scram_names": sorted(security.scram_users),
                }
            )

    def _check_scram_users(
        self, security: KafkaSecurity, secret: Mapping[str, Any], digest: str
    ) -> None:
        """SCRAM users exist only if the storage was formatted with them: say so if not."""
        if secret.get("scram_users") == digest:
            return
        names = secret.get("scram_names")
        had = (
            f"with other SCRAM users or passwords ({', '.join(names) or 'none'})"
            if names is not None
            else "without SCRAM users"
        )
        raise KafkaStartError(
            f"the data dir {self.data_dir} was first started {had}, and SCRAM users are "
            "created only when the storage is formatted: ask for that same set, or use a new "
            f"--data-dir (or delete this one) for {', '.join(sorted(security.scram_users))}"
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
                running = state.get("security_protocol") or "PLAINTEXT"
                if self.security is not None and running != self.security.protocol:
                    raise KafkaStartError(
                        f"the broker of {self.data_dir} already runs with {running}, not "
                        f"{self.security.protocol}; stop it first"
                    )
                self.port = int(state.get("port", self.port))
                self.controller_port = state.get("controller_port", self.controller_port)
                wait_for_kafka(
                    self.bootstrap,
                    timeout,
                    is_alive=self.is_running,
                    client_options=self._probe_options(),
                )
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
        if self.security is not None and self.security.tls:
            self._ensure_tls(java)
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
            security_protocol=self.security.protocol if self.security is not None else None,
        )
        try:
            wait_for_kafka(
                self.bootstrap,
                timeout,
                is_alive=self.is_running,
                describe_failure=self.log_tail,
                client_options=self._probe_options(),
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
    secure = starting.add_argument_group(
        "security (default: PLAINTEXT; applies to this start only, repeat it on restart)"
    )
    secure.add_argument(
        "--sasl-scram",
        action="append",
        type=_scram_arg,
        default=[],
        metavar="USER:PASSWORD",
        help=f"require SASL/{SCRAM_MECHANISM} on the client listener and create this user "
        "(repeatable). Users are created when the data dir is first started: a data dir "
        "keeps its first set. Passwords: no commas, quotes, backslashes or blanks",
    )
    secure.add_argument(
        "--tls",
        action="store_true",
        help="TLS on the client listener, with a certificate for 127.0.0.1/localhost from a "
        "throwaway CA generated in <data-dir>/security/ (kept across restarts); clients "
        "verify with <data-dir>/security/ca.pem. With --sasl-scram: SASL_SSL",
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
            "  python -m flywheel_shared.devkafka start --sasl-scram alice:s3cret --tls\n"
            "      # SASL_SSL; it prints the FLYWHEEL_KAFKA_* variables services need\n"
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


def _scram_arg(text: str) -> tuple[str, str]:
    try:
        return parse_scram_user(text)
    except ValueError as exc:  # argparse would print the value, password included
        raise argparse.ArgumentTypeError(str(exc)) from None


def _security_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> KafkaSecurity | None:
    users: dict[str, str] = {}
    for name, password in getattr(args, "sasl_scram", None) or []:
        if name in users:
            parser.error(f"argument --sasl-scram: user {name!r} given twice")
        users[name] = password
    tls = bool(getattr(args, "tls", False))
    return KafkaSecurity(users, tls=tls) if users or tls else None


def _say_security(kafka: LocalKafka) -> None:
    env = kafka.client_env()
    if "FLYWHEEL_KAFKA_SASL_PASSWORD" in env:
        env["FLYWHEEL_KAFKA_SASL_PASSWORD"] = f"<password of {env['FLYWHEEL_KAFKA_SASL_USERNAME']}>"
    users = sorted(kafka.security.scram_users) if kafka.security is not None else []
    _say(
        f"client listener: {kafka.security_protocol}"
        + (f" ({SCRAM_MECHANISM}; users: {', '.join(users)})" if users else "")
        + (f"; CA: {kafka.ca_file}" if kafka.ca_file else "")
    )
    _say("services take: " + " ".join(f"{k}={v}" for k, v in env.items()))


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
    parser = _build_parser()
    args = parser.parse_args(argv)
    security = _security_from_args(parser, args)
    data_dir = args.data_dir or default_data_dir()
    port = getattr(args, "port", None)
    kafka = LocalKafka(
        data_dir,
        port=port,
        controller_port=getattr(args, "controller_port", None),
        cache_dir=args.cache_dir,
        security=security,
    )
    try:
        if args.command == "status":
            if not kafka.is_running():
                print(f"stopped (data dir {kafka.data_dir})")
                return 3
            ready = kafka.is_ready()
            protocol = kafka.security_protocol
            print(
                f"{'ready' if ready else 'running, not answering'}: bootstrap={kafka.bootstrap} "
                f"pid={kafka.pid} data_dir={kafka.data_dir}"
                + (f" security={protocol} ca={kafka.ca_file}" if protocol != "PLAINTEXT" else "")
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
        if kafka.security_protocol != "PLAINTEXT":
            _say_security(kafka)
        print(kafka.bootstrap, flush=True)
        if args.foreground:
            return _run_foreground(kafka)
        return 0
    except KafkaStartError as exc:
        _say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
