"""Monitor settings (environment prefix ``FLYWHEEL_MONITOR_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel_shared.settings import DEFAULT_REGISTRY_URL, ServiceSettings


class MonitorSettings(ServiceSettings):
    """Everything the monitor reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_MONITOR_", extra="ignore")

    port: int = Field(8400, description="HTTP port (/healthz, /readyz, /metrics, /v1/status)")
    registry_url: str = Field(DEFAULT_REGISTRY_URL, description="the model registry")
    registry_token: str | None = Field(None, description="bearer token for the registry")
    registry_refresh_s: float = Field(
        10.0, gt=0, description="re-read specs and aliases this often"
    )
    data_dir: Path = Field(
        Path(".flywheel/monitor"), description="RocksDB tables (one sub-directory per worker)"
    )
    worker_name: str = Field("monitor-1", description="this worker's name (its table directory)")
    app_id: str = Field(
        "monitor", description="faust application id: workers with the same id share the work"
    )
    partitions: int = Field(
        6, ge=1, description="partitions of the monitor's internal topics (= predictions topic)"
    )
    drift_backend: Literal["auto", "permissive", "alibi"] = Field(
        "auto", description="drift engine: auto = alibi-detect when installed, else permissive"
    )
    drift_seed: int = Field(
        0, description="seed of the drift calibration (reproducible thresholds)"
    )
    drift_n_bootstrap: int | None = Field(
        None, ge=100, description="bootstrap runs of the calibration (default: the backend's)"
    )
    calibration_workers: int = Field(1, ge=1, description="processes that calibrate detectors")
    standby_replicas: int = Field(
        1, ge=0, description="standby copies of each table on other workers (fast failover)"
    )
    commit_interval_s: float = Field(1.0, gt=0, description="how often offsets are committed")
    verdict_hold_interval_s: float = Field(
        60.0, ge=0, description="a repeated 'hold' verdict is emitted at most this often"
    )
    join_ttl_s: float = Field(
        7 * 86400,
        gt=0,
        description="event-time seconds a prediction waits for its label (and back)",
    )
    join_sweep_s: float = Field(60.0, gt=0, description="how often expired join entries go")
    max_attempts: int = Field(3, ge=1, description="tries of a failing event before dead-letter")
