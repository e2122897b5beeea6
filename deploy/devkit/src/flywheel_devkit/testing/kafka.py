"""Pick a Kafka broker for tests and ``make up``.

Order of preference (first that works wins):

1. ``FLYWHEEL_KAFKA_BOOTSTRAP`` set: use that external broker as-is (never stopped).
2. A Docker engine answers a ping within 2 s: an ``apache/kafka:4.1.1`` container (KRaft).
   When that container cannot be pulled or started (an offline laptop, no registry mirror,
   an engine error), one line says why and step 3 is taken instead.
3. Otherwise: :class:`~flywheel_devkit.kafka.LocalKafka`, a JVM broker on a free port
   in a temporary data directory (jars are fetched once with Maven and cached).

``FLYWHEEL_KAFKA_BACKEND=local|container`` skips the auto-detection of step 2/3 (with
``container``, a container that cannot start is an error, not a fallback).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from flywheel_devkit.kafka import (
    KafkaSecurity,
    KafkaStartError,
    LocalKafka,
    pick_free_port,
    wait_for_kafka,
)
from flywheel_shared.ops.trace import describe_error

__all__ = [
    "KAFKA_IMAGE",
    "BrokerHandle",
    "BrokerKind",
    "acquire_broker",
    "docker_available",
    "kafka_bootstrap_choice",
    "start_local_broker",
]

KAFKA_IMAGE = "apache/kafka:4.1.1"
BrokerKind = Literal["external", "container", "local"]


@dataclass
class BrokerHandle:
    """A Kafka broker to talk to, plus how to release it.

    ``local`` is set for a :class:`LocalKafka` (tests may ``restart()`` it);
    ``close()`` is idempotent and a no-op for an external broker.
    """

    bootstrap: str
    kind: BrokerKind
    local: LocalKafka | None = None
    _closer: Callable[[], None] | None = field(default=None, repr=False)

    def close(self) -> None:
        """Stop the broker if this handle started it (safe to call twice)."""
        closer, self._closer = self._closer, None
        if closer is not None:
            closer()

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def docker_available(timeout: float = 2.0) -> bool:
    """True if a Docker engine answers a ping within ``timeout`` seconds."""
    try:
        import docker

        client = docker.from_env(timeout=max(1, int(timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no daemon, no socket, bad DOCKER_HOST, missing package: all "no"
        return False


def _start_container(timeout: float) -> BrokerHandle:
    # testcontainers' KafkaContainer only knows Confluent images (its start script
    # edits /etc/confluent/...), so apache/kafka is run as a plain container whose
    # env vars become server.properties. A fixed host port lets the advertised
    # listener be known before the container starts.
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient

    host = DockerClient().host()
    host_port = pick_free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{host_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_NUM_PARTITIONS": "1",
    }
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, host_port)
    for key, value in env.items():
        container.with_env(key, value)
    container.start()
    bootstrap = f"{host}:{host_port}"
    try:
        wait_for_kafka(bootstrap, timeout)
    except BaseException:
        container.stop()
        raise
    return BrokerHandle(bootstrap, "container", None, container.stop)


def start_local_broker(
    timeout: float = 120.0,
    data_dir: Path | None = None,
    *,
    security: KafkaSecurity | None = None,
) -> BrokerHandle:
    """A :class:`LocalKafka` of the caller's own (``.local`` set), whatever the session uses:
    for tests that stop and start their broker, or that need ``security`` (SASL/SCRAM, TLS).
    ``close()`` stops it (and deletes a temp dir)."""
    return _start_local(timeout, data_dir, security)


def _start_local(
    timeout: float, data_dir: Path | None, security: KafkaSecurity | None = None
) -> BrokerHandle:
    owns_dir = data_dir is None
    path = Path(tempfile.mkdtemp(prefix="flywheel-kafka-")) if data_dir is None else data_dir
    kafka = LocalKafka(path, port=pick_free_port(), security=security)
    try:
        kafka.start(timeout=timeout)
    except BaseException:
        if owns_dir:
            shutil.rmtree(path, ignore_errors=True)
        raise

    def close() -> None:
        atexit.unregister(close)
        try:
            kafka.stop()
        finally:
            if owns_dir:
                shutil.rmtree(path, ignore_errors=True)

    # The JVM runs in its own session, so it would outlive an interpreter that
    # exits without the fixture teardown running (e.g. KeyboardInterrupt in setup).
    atexit.register(close)
    return BrokerHandle(kafka.bootstrap, "local", kafka, close)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, cut at ``limit`` characters (Docker errors are long)."""
    text = " ".join(describe_error(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def acquire_broker(*, timeout: float = 120.0, data_dir: Path | None = None) -> BrokerHandle:
    """Return a ready broker following the module's order of preference.

    ``data_dir`` only applies to the local broker (default: a fresh temp dir that
    ``close()`` deletes). Raises :class:`KafkaStartError` if nothing can be started.
    """
    external = os.environ.get("FLYWHEEL_KAFKA_BOOTSTRAP", "").strip()
    if external:
        return BrokerHandle(external, "external")

    backend = os.environ.get("FLYWHEEL_KAFKA_BACKEND", "auto").strip().lower()
    if backend not in {"auto", "container", "local"}:
        raise KafkaStartError(f"FLYWHEEL_KAFKA_BACKEND={backend!r}: use auto, container or local")
    began = time.monotonic()
    handle: BrokerHandle | None = None
    if backend == "container" or (backend == "auto" and docker_available()):
        try:
            handle = _start_container(timeout)
        except Exception as exc:
            reason = _one_line(exc)
            if backend == "container":
                msg = f"the {KAFKA_IMAGE} container did not start: {reason}"
                raise KafkaStartError(msg) from exc
            print(
                f"flywheel: a Docker engine answers but the {KAFKA_IMAGE} container did not "
                f"start ({reason}); using the local broker instead",
                file=sys.stderr,
            )
    if handle is None:
        handle = _start_local(timeout, data_dir)
    print(
        f"flywheel: Kafka ({handle.kind}) ready at {handle.bootstrap} "
        f"in {time.monotonic() - began:.1f}s",
        file=sys.stderr,
    )
    return handle


def kafka_bootstrap_choice(
    **kwargs: Any,
) -> tuple[str, Callable[[], None] | None, LocalKafka | None]:
    """Tuple form of :func:`acquire_broker`: ``(bootstrap, close or None, local or None)``."""
    handle = acquire_broker(**kwargs)
    return handle.bootstrap, (handle.close if handle.kind != "external" else None), handle.local
