"""Prometheus metrics of the registry (HTTP request metrics come from flywheel_shared.http)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

VERSIONS_REGISTERED = Counter(
    "flywheel_registry_versions_registered_total", "Model versions registered", ["status"]
)
ALIAS_MOVES = Counter(
    "flywheel_registry_alias_moves_total",
    "Alias changes (moves and removals)",
    ["alias", "cause"],
)
VERDICTS = Counter(
    "flywheel_registry_verdicts_total",
    "rollout.verdict events handled, by decision and outcome",
    ["decision", "outcome"],
)
FACTS = Counter(
    "flywheel_registry_facts_total",
    "drift.detected, rollout.verdict and retrain.requested events kept for model cards",
    ["kind", "outcome"],
)
OUTBOX_PENDING = Gauge(
    "flywheel_registry_outbox_pending", "Outbox events written but not yet published to Kafka"
)
RELAY_PUBLISHED = Counter(
    "flywheel_registry_relay_published_total", "Outbox events published to Kafka by the relay"
)
RELAY_FAILURES = Counter(
    "flywheel_registry_relay_failures_total", "Outbox publish rounds that failed (and are retried)"
)
ARTIFACTS_STORED = Counter(
    "flywheel_registry_artifacts_stored_total", "Artifact uploads", ["outcome"]
)
INTEGRITY_FAILURES = Counter(
    "flywheel_registry_artifact_integrity_failures_total",
    "Artifacts refused because the stored bytes no longer match their sha256",
)
