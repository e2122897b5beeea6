"""acquire_broker's order of preference, with the two starters replaced by fakes: an engine
that answers but cannot run the Kafka image must not end the session (or `make up`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel_devkit.kafka import KafkaStartError
from flywheel_devkit.testing import kafka as broker


class PullRefused(Exception):
    """Stands in for docker.errors.APIError (what a refused pull raises)."""


@pytest.fixture
def starters(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def container(timeout: float) -> broker.BrokerHandle:
        calls.append("container")
        raise PullRefused(
            "500 Server Error for http+docker://localhost/v1.47/images/create?tag=4.1.1"
            '&fromImage=apache%2Fkafka: Internal Server Error ("Get \\"https://registry-1.'
            'docker.io/v2/\\": dial tcp: lookup registry-1.docker.io: no such host")\n' + "x" * 500
        )

    def local(timeout: float, data_dir: Path | None) -> broker.BrokerHandle:
        calls.append("local")
        return broker.BrokerHandle("127.0.0.1:39092", "local")

    monkeypatch.delenv("FLYWHEEL_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setattr(broker, "docker_available", lambda timeout=2.0: True)
    monkeypatch.setattr(broker, "_start_container", container)
    monkeypatch.setattr(broker, "_start_local", local)
    return calls


def test_auto_falls_back_to_the_local_broker_with_one_line_saying_why(
    starters: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FLYWHEEL_KAFKA_BACKEND", raising=False)
    handle = broker.acquire_broker()
    assert (handle.kind, handle.bootstrap) == ("local", "127.0.0.1:39092")
    assert starters == ["container", "local"]
    err = capsys.readouterr().err.splitlines()
    why = [line for line in err if "did not start" in line]
    assert len(why) == 1
    assert "PullRefused: 500 Server Error" in why[0] and "using the local broker" in why[0]
    assert len(why[0]) < 400  # the engine's long message is cut, on one line


def test_an_explicit_container_backend_fails_instead_of_falling_back(
    starters: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA_BACKEND", "container")
    with pytest.raises(KafkaStartError, match="container did not start: PullRefused"):
        broker.acquire_broker()
    assert starters == ["container"]


def test_an_external_broker_wins_and_nothing_is_started(
    starters: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP", "kafka.example:9092")
    handle = broker.acquire_broker()
    assert (handle.kind, handle.bootstrap) == ("external", "kafka.example:9092")
    assert starters == []
