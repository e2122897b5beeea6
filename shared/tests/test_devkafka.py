"""Integration tests for the local Kafka runner (real JVM broker, no Docker)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from flywheel_devkit.kafka import KafkaStartError, LocalKafka, pick_free_port

pytestmark = pytest.mark.integration

_CLI = [sys.executable, "-m", "flywheel_devkit.kafka"]


def _java_pids_for(data_dir: Path) -> list[int]:
    """Pids of live kafka.Kafka JVMs whose command line mentions ``data_dir``."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    pids = []
    for line in out.splitlines():
        pid, stat, args = [*line.strip().split(None, 2), "", ""][:3]
        if "kafka.Kafka" in args and str(data_dir) in args and not stat.startswith("Z"):
            pids.append(int(pid))
    return pids


def _devkafka(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path / "kafka", port=pick_free_port())
    try:
        yield kafka
    finally:
        kafka.stop()


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def _consume(
    bootstrap: str, topic: str, group: str, n: int, deadline_s: float
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + deadline_s
        while len(got) < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            got += [m.value for msgs in batches.values() for m in msgs if m.value is not None]
        await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def test_data_survives_restart_and_stop_leaves_no_jvm(broker: LocalKafka) -> None:
    began = time.monotonic()
    broker.start(timeout=120)
    print(f"cold start {time.monotonic() - began:.1f}s", file=sys.stderr)
    cluster_id = broker.cluster_id
    assert cluster_id

    topic = f"devkafka-{uuid.uuid4().hex[:8]}"
    await _create_topic(broker.bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before-restart")
    finally:
        await producer.stop()
    assert await _consume(broker.bootstrap, topic, "g1", 1, 30) == [b"before-restart"]

    began = time.monotonic()
    broker.restart(timeout=120)
    print(f"warm restart {time.monotonic() - began:.1f}s", file=sys.stderr)
    assert broker.cluster_id == cluster_id  # storage was not re-formatted
    assert topic in await _list_topics(broker.bootstrap)
    # A fresh group re-reads the log; the old group resumes after its committed offset.
    assert await _consume(broker.bootstrap, topic, "g2", 1, 30) == [b"before-restart"]
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="g1")
    await consumer.start()
    try:
        assert await consumer.committed(TopicPartition(topic, 0)) == 1
    finally:
        await consumer.stop()

    pid = broker.pid
    assert pid is not None
    assert broker.stop() is True
    assert not broker.is_running()
    assert not broker.pid_file.exists()
    assert _java_pids_for(broker.data_dir) == []
    assert broker.stop() is False  # idempotent


def test_cli_start_status_stop_from_other_processes(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    started = _devkafka("start", "--port", "0", "--data-dir", str(data))
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    assert bootstrap.startswith("127.0.0.1:")
    try:
        status = _devkafka("status", "--data-dir", str(data))
        assert status.returncode == 0, status.stdout + status.stderr
        assert bootstrap in status.stdout
        # A second start on the same data dir is a no-op that reports the same address.
        again = _devkafka("start", "--data-dir", str(data))
        assert again.returncode == 0 and again.stdout.strip() == bootstrap
        # In-process handles pick the running broker's port up from the data dir.
        assert LocalKafka(data).bootstrap == bootstrap
        assert LocalKafka(data, port=pick_free_port()).start(timeout=30).bootstrap == bootstrap
    finally:
        stopped = _devkafka("stop", "--data-dir", str(data))
    assert stopped.returncode == 0, stopped.stderr
    assert _java_pids_for(data) == []
    assert _devkafka("status", "--data-dir", str(data)).returncode == 3


def test_cli_foreground_stops_broker_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    proc = subprocess.Popen(
        [*_CLI, "start", "--foreground", "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the broker is ready
        assert line.startswith("127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        assert _java_pids_for(data)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert _java_pids_for(data) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            LocalKafka(data).stop()


def test_port_in_use_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        kafka = LocalKafka(tmp_path / "kafka", port=s.getsockname()[1])
        with pytest.raises(KafkaStartError, match="already in use"):
            kafka.start(timeout=5)
    assert not kafka.is_running()


async def test_session_fixture_broker_answers(kafka_bootstrap: str) -> None:
    topics = await asyncio.wait_for(_list_topics(kafka_bootstrap), 30)
    assert isinstance(topics, list)
    if os.environ.get("FLYWHEEL_KAFKA_BOOTSTRAP") is None:
        assert kafka_bootstrap.rsplit(":", 1)[1].isdigit()
