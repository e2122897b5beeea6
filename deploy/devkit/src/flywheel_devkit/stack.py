"""The one launcher of a local stack: Kafka and the five services as separate processes on
this machine, used by the demo (``flywheel up``), the end-to-end and service tests and the
benchmarks.

Each service gets a free port, SQLite for the registry, a local artifact directory and its own
log file; a fresh topic prefix per run keeps runs apart on a broker that persists. The wiring
(who finds whom, which token, which directories) is written here and nowhere else; a caller
adds only what its run is about, through ``service_env`` or :meth:`LocalStack.process`.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flywheel_devkit.kafka import pick_free_port
from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_shared.registry import RegistryClient
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.topics import TopicNamer

SERVICES = ("registry", "ingest", "trainer", "serving", "monitor")


@dataclass
class LocalStack:
    """Five service processes on one broker, one topic prefix and one state directory."""

    run_dir: Path
    bootstrap: str
    prefix: str = field(default_factory=lambda: f"demo{int(time.time())}")
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    serving_workers: int = 1
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every service
    services: tuple[str, ...] = SERVICES  # the ones to run (in start order), e.g. a test's subset
    database_url: str | None = None  # the registry's; SQLite in the run directory when None
    service_env: dict[str, dict[str, str | None]] = field(default_factory=dict)  # per service, last
    procs: dict[str, ServiceProcess] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.ports = {name: pick_free_port() for name in SERVICES}
        self.registry_url = f"http://127.0.0.1:{self.ports['registry']}"
        self.topics = TopicNamer(self.prefix)
        for name in self.services:
            self.procs[name] = self._process(
                name, self.ports[name], self.run_dir / "logs" / f"{name}.log", {}
            )

    def wiring(self, name: str) -> dict[str, str]:
        """The environment of service ``name`` in this stack, before ``service_env``."""
        common = {
            "FLYWHEEL_KAFKA_BOOTSTRAP": self.bootstrap,
            "FLYWHEEL_KAFKA_TOPIC_PREFIX": self.prefix,
            "FLYWHEEL_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "FLYWHEEL_STORAGE_URI": str(self.run_dir / "store"),
            "BENTOML_DO_NOT_TRACK": "true",
            "BENTOML_HOME": str(self.run_dir / "bentoml"),
            **self.env,
        }
        own = {
            "registry": {
                "FLYWHEEL_REGISTRY_TOKEN": self.token,
                "FLYWHEEL_REGISTRY_DATABASE_URL": self.database_url
                or f"sqlite:///{self.run_dir / 'registry.db'}",
                "FLYWHEEL_REGISTRY_RELAY_POLL_S": "0.2",
            },
            "ingest": {
                "FLYWHEEL_INGEST_REGISTRY_URL": self.registry_url,
                "FLYWHEEL_INGEST_SEGMENT_SECONDS": "1",
            },
            "trainer": {
                "FLYWHEEL_TRAINER_REGISTRY_URL": self.registry_url,
                "FLYWHEEL_TRAINER_REGISTRY_TOKEN": self.token,
                "FLYWHEEL_TRAINER_SPEC_REFRESH_S": "2",
                "FLYWHEEL_TRAINER_RETRY_S": "2",
            },
            "serving": {
                "FLYWHEEL_SERVING_REGISTRY_URL": self.registry_url,
                "FLYWHEEL_SERVING_MODELS": "fraud",
                "FLYWHEEL_SERVING_WORKERS": str(self.serving_workers),
            },
            "monitor": {
                "FLYWHEEL_MONITOR_REGISTRY_URL": self.registry_url,
                "FLYWHEEL_MONITOR_REGISTRY_TOKEN": self.token,
                "FLYWHEEL_MONITOR_REGISTRY_REFRESH_S": "2",
                "FLYWHEEL_MONITOR_DATA_DIR": str(self.run_dir / "monitor"),
                "FLYWHEEL_MONITOR_APP_ID": f"monitor-{self.prefix}",
                "FLYWHEEL_MONITOR_DRIFT_BACKEND": "permissive",
                "FLYWHEEL_MONITOR_VERDICT_HOLD_INTERVAL_S": "1",
                # 2·10^4 bootstrap draws instead of 10^5: a calibration in seconds, not a
                # minute, on a busy laptop (the thresholds' tail fit needs far fewer).
                "FLYWHEEL_MONITOR_DRIFT_N_BOOTSTRAP": "20000",
            },
        }
        return {**common, **own[name]}

    def process(
        self, name: str, env: Mapping[str, str | None] | None = None, *, label: str | None = None
    ) -> ServiceProcess:
        """One more process of service ``name`` in this stack (not started, not in ``procs``;
        the caller stops it): its own free port, the stack's wiring and ``service_env``, then
        ``env`` (a None value removes a variable of the wiring). Its log is
        ``logs/<label>.log`` (``label`` defaults to the service name and the port)."""
        port = pick_free_port()
        log = self.run_dir / "logs" / f"{label or f'{name}-{port}'}.log"
        return self._process(name, port, log, env or {})

    def _process(
        self, name: str, port: int, log: Path, env: Mapping[str, str | None]
    ) -> ServiceProcess:
        full: dict[str, str | None] = {
            **self.wiring(name),
            f"FLYWHEEL_{name.upper()}_PORT": str(port),
            **self.service_env.get(name, {}),
            **env,
        }
        values = {k: v for k, v in full.items() if v is not None}
        return ServiceProcess(f"flywheel_{name}", values, port, log)

    def client(self) -> RegistryClient:
        """A registry client with this stack's (write) token."""
        return RegistryClient(self.registry_url, self.token)

    @property
    def kafka(self) -> KafkaSettings:
        """Kafka settings of this stack (its broker and topic prefix)."""
        return KafkaSettings(bootstrap=self.bootstrap, topic_prefix=self.prefix)

    def url(self, name: str) -> str:
        """Base URL of a service."""
        return self.procs[name].url

    async def start_registry(self) -> None:
        """The registry first: every other service reads specs from it."""
        await asyncio.to_thread(self.procs["registry"].start)

    async def start_rest(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Ingest, trainer, serving and the monitor, in parallel."""

        async def one(name: str) -> None:
            await asyncio.to_thread(self.procs[name].start, 180 if name == "serving" else 90)
            if on_ready:
                on_ready(name)

        await asyncio.gather(*(one(n) for n in self.services if n != "registry"))

    def stop(self) -> None:
        """SIGTERM every process started here, the registry last."""
        for name in reversed(self.services):
            self.procs[name].stop()

    def cli_env(self) -> dict[str, str]:
        """The environment the ``flywheel`` commands read to find this stack."""
        out = {f"FLYWHEEL_{name.upper()}_URL": self.procs[name].url for name in self.services}
        out.update(
            {
                "FLYWHEEL_KAFKA_BOOTSTRAP": self.bootstrap,
                "FLYWHEEL_KAFKA_TOPIC_PREFIX": self.prefix,
                "FLYWHEEL_REGISTRY_TOKEN": self.token,
                "BENTOML_DO_NOT_TRACK": "true",
            }
        )
        return out

    def write_env_file(self, path: Path) -> Path:
        """``export`` lines for :meth:`cli_env`, to ``source`` in a shell."""
        path.write_text(
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(self.cli_env().items()))
        )
        return path


class RegistryStack(LocalStack):
    """A service test's stack: the registry process (not started) on a topic prefix of its
    own (``prefix_letter`` + 8 hex digits), the run's files under ``tmp``; the test adds the
    service it is about with :meth:`LocalStack.process`."""

    def __init__(self, bootstrap: str, tmp: Path, token: str, *, prefix_letter: str) -> None:
        super().__init__(
            run_dir=tmp,
            bootstrap=bootstrap,
            prefix=f"{prefix_letter}{uuid.uuid4().hex[:8]}",
            token=token,
            services=("registry",),
            service_env={"registry": {"FLYWHEEL_REGISTRY_RELAY_POLL_S": "0.1"}},
        )
        self.tmp = tmp
        self.registry = self.procs["registry"]
