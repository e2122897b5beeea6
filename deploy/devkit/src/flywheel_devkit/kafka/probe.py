"""Ports, readiness probes and process checks of the local broker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .maven import KafkaStartError


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
