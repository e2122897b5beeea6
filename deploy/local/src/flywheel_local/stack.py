"""The local stack: Kafka and the five services as separate processes on this machine.

Kafka is ``$FLYWHEEL_KAFKA_BOOTSTRAP`` if set, else a container where a Docker engine answers,
else a local Apache Kafka broker (jars from Maven Central, data under the state directory).
Each service gets a free port, SQLite for the registry, a local artifact directory and its own
log file; a fresh topic prefix per run keeps runs apart on a broker that persists.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flywheel_devkit.kafka import pick_free_port
from flywheel_devkit.testing.kafka import BrokerHandle, acquire_broker
from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_shared.settings import KafkaSettings

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
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per service, last
    procs: dict[str, ServiceProcess] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        ports = {name: pick_free_port() for name in SERVICES}
        registry_url = f"http://127.0.0.1:{ports['registry']}"
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
                "FLYWHEEL_INGEST_REGISTRY_URL": registry_url,
                "FLYWHEEL_INGEST_SEGMENT_SECONDS": "1",
            },
            "trainer": {
                "FLYWHEEL_TRAINER_REGISTRY_URL": registry_url,
                "FLYWHEEL_TRAINER_REGISTRY_TOKEN": self.token,
                "FLYWHEEL_TRAINER_SPEC_REFRESH_S": "2",
                "FLYWHEEL_TRAINER_RETRY_S": "2",
            },
            "serving": {
                "FLYWHEEL_SERVING_REGISTRY_URL": registry_url,
                "FLYWHEEL_SERVING_MODELS": "fraud",
                "FLYWHEEL_SERVING_WORKERS": str(self.serving_workers),
            },
            "monitor": {
                "FLYWHEEL_MONITOR_REGISTRY_URL": registry_url,
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
        for name in self.services:
            self.procs[name] = ServiceProcess(
                f"flywheel_{name}",
                {
                    **common,
                    f"FLYWHEEL_{name.upper()}_PORT": str(ports[name]),
                    **own[name],
                    **self.service_env.get(name, {}),
                },
                ports[name],
                self.run_dir / "logs" / f"{name}.log",
            )

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


def broker(state_dir: Path) -> BrokerHandle:
    """The broker of the local stack (see the module docstring)."""
    return acquire_broker(data_dir=state_dir / "kafka")
