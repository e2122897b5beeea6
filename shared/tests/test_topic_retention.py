"""Per-topic retention from the settings, applied when the topics are created."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import ValidationError

from flywheel_shared.kafka.admin import ensure_topics, topic_configs
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.topics import TOPICS


def test_retention_overrides_replace_only_the_named_topics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert KafkaSettings().topic_retention_ms == {}
    assert topic_configs(KafkaSettings(), TOPICS["data.raw"]) == TOPICS["data.raw"].configs
    monkeypatch.setenv(
        "FLYWHEEL_KAFKA_TOPIC_RETENTION_MS", '{"data.raw": 3600000, "predictions": -1}'
    )
    settings = KafkaSettings()
    assert topic_configs(settings, TOPICS["data.raw"]) == {
        **TOPICS["data.raw"].configs,
        "retention.ms": "3600000",
    }
    assert topic_configs(settings, TOPICS["predictions"])["retention.ms"] == "-1"
    assert topic_configs(settings, TOPICS["deadletter"]) == TOPICS["deadletter"].configs
    for bad, says in (({"data.rawx": 1}, "no topic 'data.rawx'"), ({"data.raw": -2}, "-1")):
        with pytest.raises(ValidationError, match=says):
            KafkaSettings(topic_retention_ms=bad)


@pytest.mark.integration
async def test_ensure_topics_creates_topics_with_the_retention_asked_for(
    kafka_bootstrap: str,
) -> None:
    settings = KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}",
        topic_retention_ms={"data.raw": 3_600_000},
    )
    created = await ensure_topics(settings, ["data.raw", "data.rejected"])
    assert len(created) == 2
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        names = [TOPICS[t].full_name(settings.topic_prefix) for t in ("data.raw", "data.rejected")]
        [answer] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, {"retention.ms": None}) for n in names]
        )
    finally:
        await admin.close()
    got = {res[3]: {c[0]: c[1] for c in res[4]} for res in answer.resources}
    assert got[names[0]]["retention.ms"] == "3600000"
    assert got[names[1]]["retention.ms"] == TOPICS["data.rejected"].configs["retention.ms"]
