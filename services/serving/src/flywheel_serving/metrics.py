"""Serving's Prometheus metrics.

Under BentoML every worker process writes its metrics to ``PROMETHEUS_MULTIPROC_DIR`` and
BentoML's ``/metrics`` adds them up across workers; gauges therefore name how they combine.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

REQUESTS = Counter(
    "flywheel_serving_requests_total",
    "Answered prediction requests",
    ["model", "version", "route", "protocol"],
)
REQUEST_SECONDS = Histogram(
    "flywheel_serving_request_seconds",
    "Prediction latency (validation, queueing, model) of answered requests",
    ["model", "version", "route"],
    buckets=_LATENCY_BUCKETS,
)
RECORDS = Counter("flywheel_serving_records_total", "Records scored", ["model", "version", "route"])
ERRORS = Counter(
    "flywheel_serving_errors_total",
    "Requests answered with an error, by reason",
    ["model", "reason", "status"],
)
BATCH_SIZE = Histogram(
    "flywheel_serving_batch_size",
    "Records per model call (adaptive batching)",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
SHADOW_SKIPPED = Counter(
    "flywheel_serving_shadow_skipped_total",
    "Requests not mirrored to the shadow version because its queue was full",
    ["model"],
)
SHADOW_ERRORS = Counter(
    "flywheel_serving_shadow_errors_total", "Shadow model calls that failed", ["model"]
)
LOG_BUFFER = Gauge(
    "flywheel_serving_log_buffer_depth",
    "Predictions waiting to be sent to Kafka (summed over workers)",
    multiprocess_mode="livesum",
)
LOG_DROPPED = Counter(
    "flywheel_serving_log_dropped_total",
    "Predictions not logged because the buffer was full (Kafka slow or away)",
)
LOG_SENT = Counter("flywheel_serving_log_sent_total", "Predictions acknowledged by Kafka")
LOG_SEND_FAILURES = Counter(
    "flywheel_serving_log_send_failures_total",
    "Attempts to send a batch of predictions that failed or timed out (a timed-out send is "
    "waited for again, not repeated)",
)
MODEL_LOADS = Counter(
    "flywheel_serving_model_loads_total", "Model version loads", ["model", "result"]
)
LIVE_VERSION = Gauge(
    "flywheel_serving_live_version",
    "Version behind each alias, per worker (-1: none)",
    ["model", "alias"],
    multiprocess_mode="liveall",
)
ALIAS_EVENTS = Counter(
    "flywheel_serving_alias_events_total",
    "model.alias.changed events received (redeliveries included)",
    ["model"],
)
ALIAS_APPLIED = Counter(
    "flywheel_serving_alias_changes_applied_total",
    "Alias moves applied (the model re-read from the registry), once per event_id",
    ["model", "alias"],
)
ALIAS_DUPLICATES = Counter(
    "flywheel_serving_alias_duplicates_total",
    "model.alias.changed events skipped: redeliveries of an event_id already applied",
    ["model"],
)


def init_model_series(model: str) -> None:
    """Create a model's error series at 0 when it loads: ``rate()`` and alerts then see the
    first failure, and the series exist (also in multiprocess mode) before anything failed."""
    ERRORS.labels(model, "model_error", "500")
    SHADOW_SKIPPED.labels(model)
    SHADOW_ERRORS.labels(model)
