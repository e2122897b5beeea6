"""Ingest settings (environment prefix ``FLYWHEEL_INGEST_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from flywheel_shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """Everything ingest reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_INGEST_", extra="ignore")

    registry_url: str | None = Field(
        None, description="read contracts from this registry (else from the spec files below)"
    )
    registry_token: str | None = Field(None, description="bearer token for the registry")
    token: SecretStr | None = Field(
        None, description="bearer token required on record and label writes (unset: open, dev)"
    )
    token_file: str | None = Field(None, description="file holding the token (wins over token)")
    tokens_file: str | None = Field(
        None,
        description="YAML/JSON file of named tokens with roles; writes need the 'service' role "
        "(the single token above is 'default' with every role)",
    )
    contracts_refresh_s: float = Field(30.0, gt=0, description="how often contracts are re-read")
    specs: str = Field(
        "examples/*/flywheel.yaml",
        description="glob(s) of model spec files holding the contracts (without a registry)",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest accepted request body"
    )
    chunk_records: int = Field(500, ge=1, description="records per data.validated message")
    segment_rows: int = Field(10_000, ge=1, description="seal a segment at this many rows")
    segment_seconds: float = Field(5.0, gt=0, description="... or when its oldest row is this old")
    publish_timeout_s: float = Field(
        10.0, gt=0, description="longest wait for Kafka's acknowledgement before a 503"
    )
    run_raw_consumer: bool = Field(True, description="validate records published to data.raw")
    run_writer: bool = Field(True, description="write data.validated into Parquet segments")
    keep_rejected_records: bool = Field(
        True, description="copy refused records into data.rejected (off: reasons only)"
    )
