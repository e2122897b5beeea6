"""Prometheus metrics shared by every service (the Kafka layer's counters live here)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

KAFKA_CONSUMED = Counter(
    "flywheel_kafka_consumed_total", "Kafka records consumed", ["group", "topic"]
)
KAFKA_PRODUCED = Counter("flywheel_kafka_produced_total", "Kafka records produced", ["topic"])
KAFKA_PRODUCE_ERRORS = Counter(
    "flywheel_kafka_produce_errors_total", "Kafka produce requests that failed", ["topic"]
)
KAFKA_HANDLER_FAILURES = Counter(
    "flywheel_kafka_handler_failures_total",
    "Handler attempts that raised (each retry counts)",
    ["group", "topic"],
)
KAFKA_DEADLETTERED = Counter(
    "flywheel_kafka_deadlettered_total", "Records sent to the dead-letter topic", ["group", "topic"]
)
KAFKA_DUPLICATES = Counter(
    "flywheel_kafka_duplicates_skipped_total",
    "Records skipped because their event_id was already processed",
    ["group", "topic"],
)
KAFKA_LAG = Gauge(
    "flywheel_kafka_consumer_lag", "High watermark minus position", ["group", "topic", "partition"]
)
KAFKA_HANDLER_SECONDS = Histogram(
    "flywheel_kafka_handler_seconds",
    "Time to handle one record",
    ["group", "topic"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

TASK_UP = Gauge(
    "flywheel_task_up", "1 while a supervised background task runs and is not failing", ["task"]
)
TASK_FAILURES = Counter(
    "flywheel_task_failures_total",
    "Runs of a supervised task's body that raised (or, long-running, ended)",
    ["task"],
)
TASK_ITERATIONS = Counter(
    "flywheel_task_iterations_total", "Runs of a supervised task's body", ["task"]
)
REGISTRY_CACHE_STALE = Gauge(
    "flywheel_registry_cache_stale",
    "1 while the registry is unreachable and the cache answers with its last good copies",
    ["cache"],
)
REGISTRY_CACHE_ERRORS = Counter(
    "flywheel_registry_cache_errors_total",
    "Registry fetches of the cache that failed because the registry was unreachable",
    ["cache"],
)
