"""Prometheus metrics of the monitor (served on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "flywheel_monitor_predictions_total", "Predictions read", ["model", "version", "route"]
)
LABELS = Counter("flywheel_monitor_labels_total", "Labels read", ["dataset"])
DRIFT_STATISTIC = Gauge(
    "flywheel_monitor_drift_statistic",
    "Latest drift statistic per feature (normalised: alarm when above the threshold)",
    ["model", "version", "feature"],
)
DRIFT_THRESHOLD = Gauge(
    "flywheel_monitor_drift_threshold",
    "Calibrated threshold of the drift statistic per feature",
    ["model", "version", "feature"],
)
DRIFT_FLAG = Gauge(
    "flywheel_monitor_drift_flag",
    "1 while the latest test of a version flagged drift",
    ["model", "version"],
)
DRIFT_SAMPLING = Gauge(
    "flywheel_monitor_drift_sampling_rate",
    "Share of predictions fed to the drift detector (online detectors are sampled under load)",
    ["model", "version"],
)
DRIFT_EVENTS = Counter(
    "flywheel_monitor_drift_detected_total", "drift.detected events emitted", ["model"]
)
LIVE_METRIC = Gauge(
    "flywheel_monitor_metric",
    "Live metric over the sliding event-time window (kind: realised from labels, "
    "estimated from calibrated scores)",
    ["model", "version", "route", "metric", "kind"],
)
LIVE_COUNT = Gauge(
    "flywheel_monitor_window_count",
    "Predictions (estimated) or labelled predictions (realised) in the sliding window",
    ["model", "version", "route", "kind"],
)
JOIN = Counter(
    "flywheel_monitor_label_join_total",
    "Label join: predictions and labels received, pairs joined (hit rate = pairs / labels)",
    ["side", "result"],
)
JOIN_BACKLOG = Gauge(
    "flywheel_monitor_join_backlog",
    "Records waiting in the join for their label or prediction, per join partition",
    ["partition"],
)
JOIN_EXPIRED = Counter(
    "flywheel_monitor_join_expired_total", "Join entries dropped after their time-to-live", []
)
VERDICTS = Counter(
    "flywheel_monitor_verdicts_total", "rollout.verdict events emitted", ["model", "decision"]
)
RETRAINS = Counter(
    "flywheel_monitor_retrain_requests_total", "retrain.requested events emitted", ["model"]
)
ALIAS_APPLIED = Counter(
    "flywheel_monitor_alias_changes_applied_total",
    "Alias moves applied (the model's registry copy refreshed), once per event_id",
    ["model", "alias"],
)
DEADLETTERED = Counter(
    "flywheel_monitor_deadlettered_total", "Input records dead-lettered", ["topic"]
)
CALIBRATIONS = Counter(
    "flywheel_monitor_calibrations_total", "Calibrations loaded from the store or computed", ["how"]
)
CALIBRATION_SECONDS = Histogram(
    "flywheel_monitor_calibration_seconds",
    "Time to calibrate one version's detectors",
    ["backend"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
LAG = Gauge(
    "flywheel_monitor_consumer_lag", "High watermark minus committed offset", ["topic", "partition"]
)
EVENT_SECONDS = Histogram(
    "flywheel_monitor_event_seconds",
    "Time to process one input message",
    ["agent"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
