"""Flywheel pytest plugin (registered as the ``flywheel`` pytest11 entry point).

Add further shared fixtures in their own section below.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from flywheel_devkit.testing.kafka import BrokerHandle, acquire_broker, start_local_broker

if TYPE_CHECKING:
    from flywheel_devkit.kafka import LocalKafka
    from flywheel_devkit.testing.kube import KubeAPI

# --------------------------------------------------------------------------------------
# Kafka broker
#
# One broker per test session, chosen by flywheel_devkit.testing.kafka.acquire_broker:
# $FLYWHEEL_KAFKA_BOOTSTRAP, else an apache/kafka container if Docker answers, else a
# local JVM broker (flywheel_devkit.kafka.LocalKafka). Started lazily: sessions
# without Kafka tests never pay for it. Tests must use unique topic/group names.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[BrokerHandle]:
    """The session's Kafka broker; ``.local`` is the LocalKafka when one was started."""
    handle = acquire_broker()
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: BrokerHandle) -> str:
    """Bootstrap servers string of the session's Kafka broker."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="module")
def restartable_kafka(kafka_broker: BrokerHandle) -> Iterator[LocalKafka]:
    """A broker this module's tests may stop, start and restart, with every broker kind: the
    session's when it is a local one, else (a container, an external broker) a local broker of
    the module's own. Whoever stops it must start it again."""
    if kafka_broker.local is not None:
        yield kafka_broker.local
        return
    handle = start_local_broker()
    assert handle.local is not None
    try:
        yield handle.local
    finally:
        handle.close()


# --------------------------------------------------------------------------------------
# PostgreSQL
#
# One server per test session, chosen by flywheel_devkit.testing.postgres.postgres_server:
# $FLYWHEEL_TEST_POSTGRES_URL, else a throwaway cluster from Debian's server binaries,
# else None (tests then skip with flywheel_devkit.testing.postgres.UNAVAILABLE). Started
# lazily. Tests should create their own database (or tables) in it.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """SQLAlchemy URL (``postgresql+psycopg://...``) of the session's PostgreSQL, or None."""
    from flywheel_devkit.testing.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPI]:
    """A real kube-apiserver + etcd on loopback for this test session (``-m kube`` tests).

    Needs the binaries ``deploy/tools/install.sh`` builds; without them it fails, saying so.
    """
    from flywheel_devkit.testing.kube import start_kube

    api = start_kube(tmp_path_factory.mktemp("kube"))
    try:
        yield api
    finally:
        api.stop()
